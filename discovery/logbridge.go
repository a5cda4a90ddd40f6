package discovery

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
)

// discardLogger is used when a config has no Logger.
var discardLogger = slog.New(slog.DiscardHandler)

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return discardLogger
	}
	return l
}

// stdLogger returns a *log.Logger for hashicorp/mdns whose lines are logged
// to l at debug level.
func stdLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

var _ io.Writer = slogWriter{}

func (w slogWriter) Write(p []byte) (int, error) {
	if w.l.Enabled(context.Background(), slog.LevelDebug) {
		for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
			w.l.Debug(string(line), "from", "hashicorp/mdns")
		}
	}
	return len(p), nil
}

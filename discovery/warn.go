package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// discardLogger is used when a config has no Logger.
var discardLogger = slog.New(slog.DiscardHandler)

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return discardLogger
	}
	return l
}

// warnOnce logs each problem at warn level once, and at debug level while
// it repeats; a problem that went away (ok) warns again if it comes back.
// Problems are keyed by what they concern (an interface and an operation),
// and a problem whose text changed counts as new.
type warnOnce struct {
	log *slog.Logger

	mu   sync.Mutex
	seen map[string]string // key -> the message last warned
}

func newWarnOnce(log *slog.Logger) *warnOnce {
	return &warnOnce{log: log, seen: make(map[string]string)}
}

func (w *warnOnce) warn(key, msg string, args ...any) {
	text := msg + fmt.Sprint(args...)
	w.mu.Lock()
	repeat := w.seen[key] == text
	w.seen[key] = text
	w.mu.Unlock()
	level := slog.LevelWarn
	if repeat {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg, args...)
}

// ok forgets key's problem and reports whether there was one.
func (w *warnOnce) ok(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, had := w.seen[key]
	delete(w.seen, key)
	return had
}

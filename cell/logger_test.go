package cell

import (
	"log/slog"
	"os"
	"sync"
	"testing"
)

// testLogger writes the node's warnings and errors to the test's log, so a
// failing test shows what raft said.
func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("CELL_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	w := &tWriter{t: t}
	t.Cleanup(w.end) // after the member's own cleanup, registered later
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
}

// tWriter writes to a test's log until the test ends (raft's goroutines
// may log a closed connection a moment after).
type tWriter struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(string(p))
	}
	return len(p), nil
}

func (w *tWriter) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

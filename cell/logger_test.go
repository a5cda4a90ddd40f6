package cell

import (
	"log/slog"
	"os"
	"testing"

	"github.com/huddle-chat/huddle/internal/testlog"
)

// testLogger writes the node's warnings and errors to the test's log, so a
// failing test shows what raft said. What raft's goroutines log once the
// test has ended (a closed connection, a moment after its Close) goes to
// stderr, named after the test (testlog.Output): it was dropped until
// session 22, and the line of a goroutine left running was lost with it.
func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("CELL_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	return slog.New(slog.NewTextHandler(testlog.Output(t), &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
}

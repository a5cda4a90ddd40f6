package testlog

import (
	"log/slog"
	"strings"
	"testing"
)

// TestOutputAfterTheTest: a log line written through Output once its test
// has ended (a goroutine the code under test left running, logging late)
// goes to the late writer, not to the finished test, on which testing
// panics and ends the test binary; lines written before are the test's.
func TestOutputAfterTheTest(t *testing.T) {
	var late Buffer
	var log *slog.Logger
	t.Run("daemon", func(t *testing.T) {
		log = slog.New(slog.NewTextHandler(OutputOr(t, &late), nil))
		log.Info("while the test runs")
	})
	log.Info("after the test ended") // a panic here, without Output
	got := late.String()
	if !strings.Contains(got, "after the test ended") || !strings.HasPrefix(got, t.Name()+"/daemon, after it ended: ") {
		t.Fatalf("late output %q, want the late line, named after its test", got)
	}
	if strings.Contains(got, "while the test runs") {
		t.Fatalf("late output %q holds a line written while the test ran", got)
	}
}

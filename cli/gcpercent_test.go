package cli

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/huddle-chat/huddle/daemon/server"
)

// TestLimitMemoryGCPercent: a daemon that keeps group logs collects at
// logGCPercent; one that keeps none (a registry) is left at Go's default;
// GOGC, when set, wins.
func TestLimitMemoryGCPercent(t *testing.T) {
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(prevGC)
		debug.SetMemoryLimit(prevLimit)
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		name     string
		gogc     string
		retained int64
		want     int
	}{
		{"group daemon", "", 256 << 20, logGCPercent},
		{"registry", "", 0, 100},
		{"group daemon, GOGC set", "100", 256 << 20, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOGC", tt.gogc)
			t.Setenv("GOMEMLIMIT", "")
			debug.SetGCPercent(100)
			limitMemory(log, server.Memory{Base: 64 << 20, Retained: tt.retained})
			if got := debug.SetGCPercent(100); got != tt.want {
				t.Errorf("GC percent %d, want %d", got, tt.want)
			}
		})
	}
}

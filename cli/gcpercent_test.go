package cli

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/huddle-chat/huddle/daemon/server"
)

// TestLimitMemory: a process that keeps group logs collects at
// logGCPercent, one that keeps none (a registry) is left at what it had,
// and GOGC, when set, wins; the soft memory limit is the daemons' total
// unless GOMEMLIMIT is set. Each case starts from values neither sets
// (untouchedGC, untouchedLimit), so that one left alone shows.
func TestLimitMemory(t *testing.T) {
	const untouchedGC, untouchedLimit = 77, int64(3 << 40)
	prevGC := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(prevGC)
		debug.SetMemoryLimit(prevLimit)
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	group := server.Memory{Base: 64 << 20, Retained: 256 << 20}
	registry := server.Memory{Base: 64 << 20}
	for _, tt := range []struct {
		name       string
		gogc       string
		gomemlimit string
		m          server.Memory
		wantGC     int
		wantLimit  int64
	}{
		{"group daemon", "", "", group, logGCPercent, group.Total()},
		{"registry", "", "", registry, untouchedGC, registry.Total()},
		{"group daemon, GOGC set", "100", "", group, untouchedGC, group.Total()},
		{"group daemon, GOGC off", "off", "", group, untouchedGC, group.Total()},
		{"group daemon, GOMEMLIMIT set", "", "1GiB", group, logGCPercent, untouchedLimit},
		{"group daemon, both set", "200", "1GiB", group, untouchedGC, untouchedLimit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOGC", tt.gogc)
			t.Setenv("GOMEMLIMIT", tt.gomemlimit)
			debug.SetGCPercent(untouchedGC)
			debug.SetMemoryLimit(untouchedLimit)
			limitMemory(log, tt.m)
			if got := debug.SetGCPercent(untouchedGC); got != tt.wantGC {
				t.Errorf("GC percent %d, want %d", got, tt.wantGC)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("memory limit %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

package loadgen_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/loadgen"
)

// recorder is a WindowObserver that notes its calls.
type recorder struct {
	mu    sync.Mutex
	calls []string
	d     time.Duration
}

func (r *recorder) WindowOpened(_ context.Context, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls, r.d = append(r.calls, "opened"), d
}

func (r *recorder) WindowClosed(context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "closed")
}

func TestWindowObserver(t *testing.T) {
	reg := startDaemons(t)
	for _, tc := range []loadgen.Config{
		{Scenario: loadgen.Send, Conns: 1, InFlight: 2},
		{Scenario: loadgen.Fetch, Messages: 1000},
		{Scenario: loadgen.Idle, Conns: 2}, // a window of its own
	} {
		t.Run(string(tc.Scenario), func(t *testing.T) {
			rec := &recorder{}
			tc.Registry, tc.Window = reg, rec
			tc.Duration, tc.Warmup = 300*time.Millisecond, 50*time.Millisecond
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if _, err := loadgen.Run(ctx, tc); err != nil {
				t.Fatal(err)
			}
			if want := []string{"opened", "closed"}; !slices.Equal(rec.calls, want) || rec.d != tc.Duration {
				t.Errorf("observer saw %v with a window of %v; want %v with %v", rec.calls, rec.d, want, tc.Duration)
			}
		})
	}
}

func TestProfilerLoadOnly(t *testing.T) {
	reg := startDaemons(t)
	dir := t.TempDir()
	prof := &loadgen.Profiler{Dir: dir} // no Daemon: the load only
	cfg := loadgen.Config{Scenario: loadgen.Send, Registry: reg, Conns: 1, InFlight: 2,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Window: prof}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := loadgen.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := prof.Err(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, loadgen.LoadCPUProfile)
	if got := prof.Written(); !slices.Equal(got, []string{path}) {
		t.Errorf("Written() = %v, want [%s]", got, path)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("%s: %d bytes, %v; want a gzipped profile", path, len(b), err)
	}
}

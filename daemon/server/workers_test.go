package server

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func (w *streamWorkers) running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live
}

func (w *streamWorkers) started() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts
}

// TestStreamWorkersRetireIdle checks that a connection's workers grow with
// the streams in flight, that the sweep retires the ones left idle (and
// starts again with the next worker), and that close ends the rest.
func TestStreamWorkersRetireIdle(t *testing.T) {
	var wg sync.WaitGroup
	var served atomic.Int32
	hold := make(chan struct{})
	w := &streamWorkers{
		work:  make(chan *quic.Stream),
		wg:    &wg,
		every: 20 * time.Millisecond,
		serve: func(*quic.Stream) { served.Add(1); <-hold },
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d workers, %d served)", what, w.running(), served.Load())
			}
		}
	}

	for range 8 {
		w.run(new(quic.Stream))
	}
	waitFor("8 streams in flight", func() bool { return served.Load() == 8 })
	if n := w.running(); n != 8 {
		t.Fatalf("%d workers for 8 streams in flight, want 8", n)
	}
	// Busy workers are not retired, however many sweeps pass.
	time.Sleep(5 * w.every)
	if n := w.running(); n != 8 {
		t.Fatalf("%d workers after five sweeps with 8 streams in flight, want 8", n)
	}

	close(hold)
	waitFor("the idle workers to retire", func() bool { return w.running() == 0 })

	w.run(new(quic.Stream))
	waitFor("a stream after the pool emptied", func() bool { return served.Load() == 9 })
	waitFor("the new worker to retire", func() bool { return w.running() == 0 })

	// A slower sweep, so that close finds idle workers to end.
	w.every = time.Hour
	for range 3 {
		w.run(new(quic.Stream))
	}
	waitFor("three more streams", func() bool { return served.Load() == 12 })
	w.close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("close left %d workers running", w.running())
	}
}

// TestStreamWorkersKeptThroughBursts checks that workers idle at the moment
// of a sweep, but all busy earlier in its period, are kept: a connection
// with bursts of streams keeps its workers instead of starting new ones
// for every burst.
func TestStreamWorkersKeptThroughBursts(t *testing.T) {
	var wg sync.WaitGroup
	var inFlight sync.WaitGroup
	w := &streamWorkers{
		work:  make(chan *quic.Stream),
		wg:    &wg,
		every: 20 * time.Millisecond,
		serve: func(*quic.Stream) { time.Sleep(time.Millisecond); inFlight.Done() },
	}
	defer wg.Wait()
	defer w.close()
	const burst = 4
	for end := time.Now().Add(15 * w.every); time.Now().Before(end); {
		inFlight.Add(burst)
		for range burst {
			w.run(new(quic.Stream))
		}
		inFlight.Wait()
		time.Sleep(5 * time.Millisecond)
	}
	if n := w.started(); n > 2*burst {
		t.Errorf("%d workers started for bursts of %d streams over 15 sweeps, want at most %d", n, burst, 2*burst)
	}
}

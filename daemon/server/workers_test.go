package server

import (
	"runtime"
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
	// Busy workers are not retired, however many sweeps pass (five made
	// here, beside the timer's: a bare 5-period sleep proved nothing on a
	// machine too loaded to run the timer's in that time).
	for range 5 {
		w.retire()
	}
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
// for every burst; and that a period with no burst retires them.
//
// The test sweeps (retire) itself, between its bursts, and hands each
// burst's streams to the waiting workers as run does when they wait. It
// used to run a 20 ms sweep timer beside bursts 5 ms apart, through run: on
// a loaded machine a 5 ms sleep can last more than a period, and a sweep
// that saw a period with no burst rightly retired the workers; and a burst
// run before the last one's workers were back waiting started new ones.
// Either failed the test.
func TestStreamWorkersKeptThroughBursts(t *testing.T) {
	var wg sync.WaitGroup
	var served atomic.Int32
	var hold chan struct{} // a burst's streams are served until it closes
	w := &streamWorkers{
		work:  make(chan *quic.Stream),
		wg:    &wg,
		every: time.Hour, // the test sweeps
		serve: func(*quic.Stream) { served.Add(1); <-hold },
	}
	defer wg.Wait()
	defer w.close()
	// waitFor polls a condition, with a deadline: a worker says nothing
	// when it is back waiting.
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d workers, %d idle, %d served)", what, w.running(), w.idle.Load(), served.Load())
			}
		}
	}
	const burst, sweeps = 4, 15
	// burst serves burst streams at once, then waits for the workers to
	// be idle again. The first starts the workers (run); the others hand
	// their streams to workers that wait, each busy until all are.
	burstOf := func(first bool) {
		t.Helper()
		hold = make(chan struct{})
		want := served.Load() + burst
		for range burst {
			if first {
				w.run(new(quic.Stream))
				continue
			}
			select {
			case w.work <- new(quic.Stream):
			case <-time.After(20 * time.Second):
				t.Fatalf("no worker waited for a burst's stream (%d workers)", w.running())
			}
		}
		waitFor("a burst's streams served at once", func() bool { return served.Load() == want })
		close(hold)
		waitFor("the workers idle again", func() bool { return int(w.idle.Load()) == w.running() })
	}
	burstOf(true)
	for sweep := range sweeps {
		if sweep > 0 {
			burstOf(false)
		}
		burstOf(false)
		w.retire()
		if n := w.running(); n != burst {
			t.Fatalf("sweep %d left %d workers, want the %d busy in its period", sweep, n, burst)
		}
	}
	if n := w.started(); n != burst {
		t.Errorf("%d workers started for bursts of %d streams over %d sweeps, want %d", n, burst, sweeps, burst)
	}
	// A period with no burst: every worker idle throughout is retired (a
	// worker that counted itself idle but did not wait yet, at the next).
	for deadline := time.Now().Add(20 * time.Second); w.running() != 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still run after sweeps that followed periods with no stream", w.running())
		}
		w.retire()
	}
}

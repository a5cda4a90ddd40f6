package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// workerIdle is how long a connection's surplus stream workers may stay
// idle: a worker that found no stream to serve for a whole workerIdle
// exits within the next.
const workerIdle = 2 * time.Second

// streamWorkers runs one connection's stream handlers on goroutines that
// are reused from one stream to the next.
//
// Handlers decode CBOR by reflection, which needs a deeper stack than a new
// goroutine starts with: with a fresh goroutine per stream the runtime grew
// (copied) a stack for nearly every operation (BENCHMARKS.md, "Measurements
// behind the code"). A worker keeps its grown stack for the next stream.
//
// An idle worker waits on the work channel alone. The pool shrinks by a
// sweep every workerIdle, which retires as many workers as stayed idle
// throughout the period before it (the fewest idle at any moment of it).
// A per-worker timer instead would cost a select on two channels and a
// timer reset per stream, which showed in profiles.
//
// Workers count in the server's connWG, which shutdown waits for; they exit
// when the sweep retires them, or, after the stream they are serving, once
// the connection's accept loop has ended (the connection closed, or
// shutdown began) and called close.
type streamWorkers struct {
	work  chan *quic.Stream // unbuffered: a send succeeds only if a worker waits; nil retires one; closed by close
	serve func(*quic.Stream)
	wg    *sync.WaitGroup
	every time.Duration // the sweep's period: workerIdle

	idle   atomic.Int32 // workers waiting on work
	fewest atomic.Int32 // fewest idle workers since the last sweep

	mu     sync.Mutex  // guards the fields below, and sends of nil against close
	live   int         // workers running; sweep is set while there are any
	starts int         // workers ever started
	sweep  *time.Timer // runs retire; made with the first worker
	closed bool
}

// newStreamWorkers returns workers that serve conn's streams with serve.
// The caller holds a count in s.connWG while it calls run, and calls close
// once it will call run no more.
func (s *Server) newStreamWorkers(serve func(*quic.Stream)) *streamWorkers {
	return &streamWorkers{work: make(chan *quic.Stream), serve: serve, wg: &s.connWG, every: workerIdle}
}

// run serves str on an idle worker, or on a new one if none is idle.
func (w *streamWorkers) run(str *quic.Stream) {
	select {
	case w.work <- str:
		return
	default:
	}
	w.mu.Lock()
	w.live++
	w.starts++
	if w.live == 1 {
		w.fewest.Store(w.idle.Load())
		if w.sweep == nil {
			w.sweep = time.AfterFunc(w.every, w.retire)
		} else {
			w.sweep.Reset(w.every)
		}
	}
	w.mu.Unlock()
	w.wg.Add(1)
	go w.loop(str)
}

// close makes the workers exit once they are idle.
func (w *streamWorkers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.sweep != nil {
		w.sweep.Stop()
	}
	close(w.work)
}

// retire is the sweep: it ends the workers that stayed idle since the
// last one.
func (w *streamWorkers) retire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
retiring:
	for n := w.fewest.Load(); n > 0; n-- {
		select {
		case w.work <- nil:
		default:
			break retiring // the idle ones took work meanwhile
		}
	}
	w.fewest.Store(w.idle.Load())
	if w.live > 0 {
		w.sweep.Reset(w.every)
	}
}

func (w *streamWorkers) loop(str *quic.Stream) {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		w.live--
		w.mu.Unlock()
	}()
	for str != nil {
		w.serve(str)
		w.idle.Add(1)
		str = <-w.work // nil once retired or closed
		w.takeWork()
	}
}

// takeWork counts a worker that stops waiting, in fewest too.
func (w *streamWorkers) takeWork() {
	n := w.idle.Add(-1)
	for {
		f := w.fewest.Load()
		if n >= f || w.fewest.CompareAndSwap(f, n) {
			return
		}
	}
}

package daemon

import (
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// workerIdle is how long a stream worker waits for another stream of its
// connection before it exits.
const workerIdle = 2 * time.Second

// streamWorkers runs one connection's stream handlers on goroutines that
// are reused from one stream to the next.
//
// Handlers decode CBOR by reflection, which needs a deeper stack than a new
// goroutine starts with. With a fresh goroutine per stream the runtime grew
// (copied) a stack for nearly every operation: runtime.newstack was 22% of
// the daemon's CPU under `huddle bench send` (16 connections x 16 in
// flight). A worker keeps its grown stack for the next stream.
//
// Workers count in the server's connWG, which shutdown waits for; they exit
// when idle for workerIdle, or, after the stream they are serving, once the
// connection's accept loop has ended (the connection closed, or shutdown
// began) and called close.
//
// An idle worker waits on its own timer and the work channel alone. It
// used to wait on the connection's and the server's ending too: a select
// of four channels, two of them shared by every idle worker, was ~5% of
// the daemon's CPU under send 16x16.
type streamWorkers struct {
	work  chan *quic.Stream // unbuffered: a send succeeds only if a worker waits; closed by close
	serve func(*quic.Stream)
	wg    *sync.WaitGroup
}

// newStreamWorkers returns workers that serve conn's streams with serve.
// The caller holds a count in s.connWG while it calls run, and calls close
// once it will call run no more.
func (s *server) newStreamWorkers(serve func(*quic.Stream)) *streamWorkers {
	return &streamWorkers{work: make(chan *quic.Stream), serve: serve, wg: &s.connWG}
}

// run serves str on an idle worker, or on a new one if none is idle.
func (w *streamWorkers) run(str *quic.Stream) {
	select {
	case w.work <- str:
		return
	default:
	}
	w.wg.Add(1)
	go w.loop(str)
}

// close makes the workers exit once they are idle.
func (w *streamWorkers) close() { close(w.work) }

func (w *streamWorkers) loop(str *quic.Stream) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for ok := true; ok; {
		w.serve(str)
		idle.Reset(workerIdle)
		select {
		case str, ok = <-w.work:
		case <-idle.C:
			return
		}
	}
}

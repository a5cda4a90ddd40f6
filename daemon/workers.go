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
// when idle for workerIdle, when the connection ends, or when shutdown
// begins, after the stream they are serving.
type streamWorkers struct {
	work     chan func() // unbuffered: a send succeeds only if a worker waits
	conn     <-chan struct{}
	stopping <-chan struct{}
	wg       *sync.WaitGroup
}

// newStreamWorkers returns the workers of conn. The caller holds a count
// in s.connWG while it calls run.
func (s *server) newStreamWorkers(conn *quic.Conn) *streamWorkers {
	return &streamWorkers{work: make(chan func()), conn: conn.Context().Done(), stopping: s.stopping, wg: &s.connWG}
}

// run runs fn on an idle worker, or on a new one if none is idle.
func (w *streamWorkers) run(fn func()) {
	select {
	case w.work <- fn:
		return
	default:
	}
	w.wg.Add(1)
	go w.loop(fn)
}

func (w *streamWorkers) loop(fn func()) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(workerIdle)
		select {
		case fn = <-w.work:
		case <-idle.C:
			return
		case <-w.conn:
			return
		case <-w.stopping:
			return
		}
	}
}

package client

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Small requests leave together.
//
// Each operation is a stream of its own (PROTOCOL.md §3), and quic-go
// sends a stream's data as soon as its connection's sender runs, which is
// as soon as the goroutine that wrote it blocks: Go's scheduler runs a
// goroutine woken by the running one (the sender, woken by the write)
// before any other that was ready. So when one packet of replies woke
// several callers, each wrote its next request and blocked on its reply,
// and each request left in a packet of its own: under unbatched send
// 16x16 to a cell, 0.99 requests per packet, each a sendmsg on the client
// and a packet to decrypt and acknowledge on the server.
//
// So a small request is queued on its peer's requestQueue, and the caller
// that finds no one flushing the queue flushes it, after yielding once to
// the goroutines ready before it (runtime.Gosched puts it behind them):
// the callers woken with it queue their requests meanwhile, and the
// flusher writes them all before the sender runs, in one packet where they
// fit. The others read their replies without waiting for it. A caller
// whose call is the peer's only one does not yield: no other request is
// coming, and a program's other goroutines would delay it for nothing.
//
// A request the flusher cannot write without blocking (the connection's
// flow-control credit is spent) is handed back to its caller, woken from
// its read by a deadline in the past, which then writes it itself as
// larger requests are written.

// maxCoalescedRequest is the largest request frame a requestQueue takes: a
// send of one message of about a kilobyte, and every other request but a
// batch. Larger ones are written by their callers (requestWriter).
const maxCoalescedRequest = 1200

// requestQueue holds the small requests of a peer's callers until one of
// them flushes it.
type requestQueue struct {
	calls atomic.Int32 // calls whose request was queued and which have not ended (done)

	mu       sync.Mutex
	queued   []*queuedRequest
	spare    []*queuedRequest // the slice the flusher took last time, emptied
	flushing bool
}

// queuedRequest is a request frame waiting in a requestQueue for its
// stream.
type queuedRequest struct {
	st    *quic.Stream
	frame *[]byte // from requestFrames; the flusher or the caller puts it back
	// handedBack is set when the flusher could not write the frame without
	// blocking: the caller writes it (writeHandedBack).
	handedBack atomic.Bool
}

// requestFrames holds the buffers requests are encoded into. A request is
// encoded once (encodeRequest): a small one is queued in its buffer, a
// larger one written from it by its caller. A batch's request used to be
// encoded twice, once to learn it was too large to queue, in a buffer that
// grew for nothing, and again to be written.
var requestFrames = sync.Pool{New: func() any { b := make([]byte, 0, maxCoalescedRequest); return &b }}

// encodeRequest returns op's request frame in a buffer of requestFrames,
// which the caller hands on to a requestQueue or puts back
// (putRequestFrame).
func encodeRequest(op wire.Op, args any) (*[]byte, error) {
	bp := requestFrames.Get().(*[]byte)
	frame, err := wire.AppendFrame((*bp)[:0], uint64(op), args)
	*bp = frame
	if err != nil {
		putRequestFrame(bp)
		return nil, err
	}
	return bp, nil
}

// putRequestFrame puts a request's buffer back, unless it grew past the
// largest request that is written in one copy (maxQueuedRequest).
func putRequestFrame(bp *[]byte) {
	if cap(*bp) <= maxQueuedRequest {
		*bp = (*bp)[:0]
		requestFrames.Put(bp)
	}
}

// queue queues frame (from encodeRequest, at most maxCoalescedRequest
// bytes) for st, flushing the queue if no other caller is, and returns the
// queued request. The caller calls done when its call ends.
func (q *requestQueue) queue(st *quic.Stream, frame *[]byte) *queuedRequest {
	r := &queuedRequest{st: st, frame: frame}
	others := q.calls.Add(1) > 1
	q.mu.Lock()
	q.queued = append(q.queued, r)
	flush := !q.flushing
	q.flushing = true
	q.mu.Unlock()
	if flush {
		if others {
			runtime.Gosched() // behind the callers ready now: their requests join this one
		}
		q.flush()
	}
	return r
}

// done ends a call whose request was queued.
func (q *requestQueue) done() { q.calls.Add(-1) }

// flush writes every queued request, and those queued meanwhile, and ends
// their streams' sending sides.
func (q *requestQueue) flush() {
	for {
		q.mu.Lock()
		rs := q.queued
		if len(rs) == 0 {
			q.flushing = false
			q.mu.Unlock()
			return
		}
		q.queued, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		for i, r := range rs {
			switch err := r.st.TryWriteAll(*r.frame); err {
			case nil:
				r.st.Close()
				putRequestFrame(r.frame)
			case quic.ErrWouldBlock:
				// Out of flow-control credit: the caller waits for it, not
				// the flusher (whose own caller may not wait that long).
				r.handedBack.Store(true)
				r.st.SetReadDeadline(time.Now())
			default:
				// The stream or the connection ended (the caller's context,
				// say): the caller's read says so.
				cancelStream(r.st)
				putRequestFrame(r.frame)
			}
			rs[i] = nil
		}
		q.mu.Lock()
		q.spare = rs[:0]
		q.mu.Unlock()
	}
}

// writeHandedBack writes the request if the flusher handed it back, and
// reports whether it did (err is then the write's). The caller's read
// ended with the deadline that woke it, which is cleared.
func (r *queuedRequest) writeHandedBack() (bool, error) {
	if r == nil || !r.handedBack.Swap(false) {
		return false, nil
	}
	r.st.SetReadDeadline(time.Time{})
	_, err := requestWriter{r.st}.Write(*r.frame)
	putRequestFrame(r.frame)
	if err == nil {
		r.st.Close()
	}
	return true, err
}

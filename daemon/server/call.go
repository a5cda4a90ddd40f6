package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// A call: one operation on one stream, pooled with its buffers, and how a
// handler decodes its request and writes its reply.

// Call is one operation on one stream, as its Handler sees it: who asks
// (Peer, Remote), what (Op, Decode), and how to answer (Send, Result,
// Need). A Call is the server's: a handler must not keep it, nor anything
// DecodeInPlace gave it, after it returns.
//
// Calls, and the buffers of small requests, are pooled: a call with its
// request and reply buffers was a good part of what the daemon allocated
// per operation (BENCHMARKS.md).
type Call struct {
	op      wire.Op
	args    wire.Frame
	peer    wire.Fingerprint // from the connection's certificate, never from the peer's fields
	conn    *quic.Conn
	remote  net.Addr
	str     *quic.Stream
	srv     *Server
	credits *streamCredits
	start   time.Time // when its handler was called, for its metrics
	buf     []byte    // reply frames, reused across frames (and calls, when small)
	item    *[]byte   // the request frame, if larger than head: from requestBufs if small
	// head is the first read of the request: the whole frame, if it fits.
	head [requestHeadBytes]byte
	// end is where the end of the stream after the request is read (a
	// local array would escape to the heap: an allocation per request).
	end [1]byte
	// shares is the connection's: requestHeld and replyHeld are what the
	// call holds of them (request bytes until its args are decoded, reply
	// bytes until the call ends).
	shares                 *connShare
	requestHeld, replyHeld int
	// What the shares count for the call, and its place in its address's
	// list of calls (guarded by the shares' mutex); and whether it reads
	// its request or writes a large reply, in which it may stall, and
	// whether it was cut off for a newcomer (shares.go).
	shareHeld             amounts
	prev, next            *Call
	reading, writing, cut atomic.Bool
	// decoded says a handler decoded the args (whether or not they were
	// valid); inPlace, that the decoded values may alias the request, which
	// is then held until the call ends; answered, that TryResult answered
	// the call and ended its stream.
	decoded, inPlace, answered bool
}

// Pool bounds: larger buffers are left to the garbage collector.
const (
	// pooledRequestBytes is the size of a pooled request buffer: a send of
	// a few dozen chat-sized messages, and every other request.
	pooledRequestBytes = 8 << 10
	// requestHeadBytes is the size of a call's first read, and of the
	// largest request frame kept in the call itself: a send of a message of
	// up to ~950 bytes, and every request but a batch.
	requestHeadBytes = 1 << 10
	// maxPooledReplyBytes bounds the reply buffer a pooled call keeps.
	maxPooledReplyBytes = 64 << 10
)

var (
	calls       = sync.Pool{New: func() any { return new(Call) }}
	requestBufs = sync.Pool{New: func() any { b := make([]byte, pooledRequestBytes); return &b }}
)

func newCall(s *Server, conn *quic.Conn, peer wire.Fingerprint, str *quic.Stream) *Call {
	c := calls.Get().(*Call)
	c.srv, c.peer, c.conn, c.remote, c.str = s, peer, conn, conn.RemoteAddr(), str
	return c
}

// Op is the operation the peer asked for.
func (c *Call) Op() wire.Op { return c.op }

// Peer is the fingerprint of the key on the peer's certificate: the only
// identity a handler may take from a peer.
func (c *Call) Peer() wire.Fingerprint { return c.peer }

// Remote is the peer's address.
func (c *Call) Remote() net.Addr { return c.remote }

// Conn is the connection the call came on.
func (c *Call) Conn() *quic.Conn { return c.conn }

// itemBuf returns a buffer of n bytes for the request frame.
func (c *Call) itemBuf(n int) []byte {
	if n <= pooledRequestBytes {
		c.item = requestBufs.Get().(*[]byte)
		return (*c.item)[:n]
	}
	b := make([]byte, n)
	c.item = &b
	return b
}

// release gives back the request's memory; its args are decoded (or never
// will be) by now, and, unless they were decoded in place, nothing refers
// to it.
func (c *Call) release() {
	c.args = wire.Frame{}
	if c.requestHeld > 0 {
		c.shares.give(c, resRequest, c.requestHeld)
		c.requestHeld = 0
	}
	if c.item != nil && len(*c.item) == pooledRequestBytes {
		requestBufs.Put(c.item)
	}
	c.item = nil
}

// free ends the call: it releases the request, and puts the call back in the
// pool.
func (c *Call) free() {
	c.release()
	buf := c.buf[:0]
	if cap(buf) > maxPooledReplyBytes {
		buf = nil
	}
	*c = Call{buf: buf}
	calls.Put(c)
}

// stalled reports whether the call is in a state in which a peer can
// stall it while it holds r: reading its request (operations, request
// bytes) or writing a large reply (reply bytes).
func (c *Call) stalled(r resource) bool {
	if r == resReply {
		return c.writing.Load()
	}
	return c.reading.Load()
}

// streamError is a failure of the stream itself (write deadline, the peer
// cancelled, the connection ended), as opposed to an error to tell the peer.
type streamError struct{ err error }

func (e *streamError) Error() string { return "stream: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// Send writes one response frame, bounded by the write timeout. Its
// errors are failures of the stream (which the server answers no more),
// except an encoding failure, which is internal.
func (c *Call) Send(kind wire.Kind, body any) error {
	buf, err := wire.AppendFrame(c.buf[:0], uint64(kind), body)
	if err != nil {
		return fmt.Errorf("encode %v reply: %w", c.op, err)
	}
	c.buf = buf
	err = c.Write(buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil // do not keep an unusually large buffer alive
	}
	return err
}

// Write writes an encoded frame (one Frame returned, maybe on another
// call), bounded by the write timeout. quic-go does not keep frame past
// the call. Its errors are failures of the stream.
func (c *Call) Write(frame []byte) error {
	c.credits.release()
	c.str.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	if c.replyHeld > 0 {
		// A large reply: while its write waits for the peer, the call is
		// a candidate to be cut off for a newcomer (shares.go).
		c.writing.Store(true)
		defer c.writing.Store(false)
	}
	if _, err := c.str.Write(frame); err != nil {
		return &streamError{err}
	}
	return nil
}

// smallReply is the most reply memory a call holds without counting it in
// its shares: the operation's own share covers it.
const smallReply = 16 << 10

// replyRetryAfter is the retry_after_ms of an operation that found no
// reply memory: the replies its peer has not read hold it.
const replyRetryAfter = time.Second

// Need sets the reply memory the call holds to n bytes (its working set:
// the reply it builds, the frame it writes, and the buffers it keeps
// between frames), taking more from the connection's shares or giving some
// back. Taking waits within the write timeout, as a blocked write would:
// while the peer's earlier replies, unread, hold the connection's or the
// address's share, the call waits for them, and then gives up with
// unavailable (and a time to wait). A call under smallReply holds nothing.
// Its errors are one to tell the peer, or a failure of the stream.
func (c *Call) Need(n int) error {
	if n <= smallReply {
		n = 0
	}
	switch d := n - c.replyHeld; {
	case d > 0:
		err := c.shares.take(c, resReply, d, time.Now().Add(c.srv.cfg.WriteTimeout), c.srv.stopping, c.Gone())
		switch {
		case errors.Is(err, errCancelled):
			return &streamError{err}
		case errors.Is(err, errOverShare):
			return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(replyRetryAfter.Milliseconds()),
				Message: fmt.Sprintf("%v: the replies your connection, address or key has not read hold the reply memory this server allows them: read them first", c.op)}
		case err != nil:
			return fmt.Errorf("%v: %w: the server is shutting down", c.op, wire.ErrUnavailable)
		}
	case d < 0:
		c.shares.give(c, resReply, -d)
	}
	c.replyHeld = n
	return nil
}

// Result writes the one Result frame of a single-reply operation.
func (c *Call) Result(body any) error { return c.Send(wire.KindResult, body) }

// TryResult answers a single-reply operation with the Result frame of body
// and ends the stream, if the frame can be queued at once (the peer's flow
// control allows it), and reports whether it did. Once it has, the
// handler writes nothing more and returns nil; if it has not, the handler
// answers as usual (Result), and meets whatever failed here.
//
// It is for replies that are ready on another goroutine while the handler
// waits: a cell's sends, answered as their raft entry is applied
// (cell.Node.SendAnswered). That goroutine writes the replies of every
// send the entry carried one after another, without waiting between them,
// so a connection's replies leave together, in one packet, rather than
// each in its own: the connection's sender runs once they are all queued,
// not after each. The handler must not touch the call until TryResult has
// returned.
func (c *Call) TryResult(body any) bool {
	buf, err := wire.AppendFrame(c.buf[:0], uint64(wire.KindResult), body)
	if err != nil {
		return false // Result says what failed
	}
	c.buf = buf
	c.credits.release()
	if c.str.TryWriteAll(buf) != nil {
		return false
	}
	c.str.Close()
	c.answered = true
	return true
}

// Answered reports whether TryResult answered the call.
func (c *Call) Answered() bool { return c.answered }

// Decode decodes the request's args into v, then releases the request's
// memory: v must be a type whose decoded values do not alias the frame,
// which is every frame type but wire.Send (see DecodeInPlace).
func (c *Call) Decode(v any) error {
	c.decoded = true
	err := c.args.Decode(v)
	c.release()
	if err != nil {
		return fmt.Errorf("%v: %w", c.op, err)
	}
	return nil
}

// DecodeInPlace decodes the request's args into v, whose byte strings may
// alias the request (see wire.Frame.Decode): the request and its memory
// are held until the call ends, so v must not be used after the handler
// returns.
func (c *Call) DecodeInPlace(v any) error {
	c.decoded, c.inPlace = true, true
	if err := c.args.Decode(v); err != nil {
		return fmt.Errorf("%v: %w", c.op, err)
	}
	return nil
}

// Gone is closed when the stream can no longer be written: the peer
// cancelled it or the connection ended.
func (c *Call) Gone() <-chan struct{} { return c.str.Context().Done() }

// Context is the stream's: it ends when Gone is closed.
func (c *Call) Context() context.Context { return c.str.Context() }

// Lost is what a handler returns when it finds Gone closed: a failure of
// the stream, on which the server writes nothing more.
func (c *Call) Lost() error { return &streamError{context.Cause(c.str.Context())} }

// Stopping is closed when the server begins to shut down.
func (c *Call) Stopping() <-chan struct{} { return c.srv.stopping }

// Frame is the last frame Send encoded, valid until the next Send: a
// handler may copy it for other calls to Write.
func (c *Call) Frame() []byte { return c.buf }

// Buffered is the capacity of the reply buffer the call keeps between
// frames, which Need must count.
func (c *Call) Buffered() int { return cap(c.buf) }

// DropBuffer lets the reply buffer go (the next Send allocates one): a
// call that waits long keeps none.
func (c *Call) DropBuffer() { c.buf = nil }

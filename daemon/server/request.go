package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Requests: each stream's request frame read within its deadline and the
// peer's shares, refused when the server cannot take it, and the stream
// finished with the handler's error.

// serveStream runs one operation. It owns the stream: whatever happens, both
// directions end (closed or cancelled), and its credit goes to credits,
// which gives it back to the peer: here, or, for a call its handler left to
// another goroutine (ErrLater), in Call.End.
func (s *Server) serveStream(conn *quic.Conn, peer wire.Fingerprint, str *quic.Stream, cs *connShare, credits *streamCredits) {
	s.active.Add(1)
	c := newCall(s, conn, peer, str)
	c.credits, c.shares = credits, cs
	if !cs.admit(c) {
		// Over its operations' share: refused at once, its request not
		// read.
		s.refuseStream(str, s.busy)
		s.endStream(c, false)
		return
	}
	if !s.readRequest(c) {
		s.endStream(c, true)
		return
	}
	err := s.serveCall(c)
	if err == ErrLater {
		return // c is another goroutine's: it calls End
	}
	s.finish(c, err)
	s.endStream(c, true)
}

// serveCall runs the handler, and tells the peer of a panic as an internal
// error. A fault reading memory is such a panic, not a crash of the
// daemon: the bodies of a group's history read back at start are its
// files, mapped (store/mapped.go), and a page the disk can no longer
// read (EIO), touched as a fetch or watch encodes it, was SIGBUS, which
// the runtime makes fatal to the whole process.
func (s *Server) serveCall(c *Call) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				s.setup.Logger.Error("handler faulted reading memory (a mapped log file the disk could not read?)", "op", c.op, "peer", c.peer.Short(),
					"addr", fmt.Sprintf("%#x", f.Addr()), "panic", r, "stack", string(debug.Stack()))
			} else {
				s.setup.Logger.Error("handler panicked", "op", c.op, "peer", c.peer.Short(), "panic", r, "stack", string(debug.Stack()))
			}
			err = wire.ErrInternal
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err = s.handle(s.ctx, c)
	if err != ErrLater && !c.decoded {
		// An op the handler does not serve: a malformed request is
		// still answered as one, not as an unknown op.
		if cerr := c.args.Check(); cerr != nil {
			err = cerr
		}
	}
	return err
}

// End ends a call its handler left to be answered later (it returned
// ErrLater): it writes err as the stream's last frame (an Error frame),
// unless the call was answered (TryResult) or err is nil, closes the
// stream and gives back what the call held. Writing an Error frame may
// wait for the peer's flow control, within the write timeout: a goroutine
// that answers many calls ends there only those TryResult answered. End is
// called once, and the call is not touched after it.
func (c *Call) End(err error) {
	s := c.srv
	s.observe(c, err)
	s.finish(c, err)
	s.endStream(c, true)
}

// endStream gives back what the stream's call held (its shares, if
// admitted; its memory; the stream's credit), once both directions of the
// stream have ended.
func (s *Server) endStream(c *Call, admitted bool) {
	str, credits := c.str, c.credits
	if admitted {
		c.shares.end(c)
	}
	c.free()
	credits.hold(str)
	s.active.Add(-1)
	s.streamWG.Done()
}

// readRequest reads the request frame and the end of stream after it,
// within the request deadline, into c (op, args, and the request's memory,
// given back by Call.release). On failure it answers or cancels the stream
// and returns false.
func (s *Server) readRequest(c *Call) bool {
	str := c.str
	// One absolute deadline for the whole request: a peer that trickles
	// bytes does not extend it. The read side ends with the request (or is
	// cancelled), so the deadline is never cleared.
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	str.SetReadDeadline(deadline)
	select {
	case <-s.stopping:
		s.refuseStream(str, *s.shuttingDown.Load())
		return false
	default:
		// A shutdown that begins from here on finds the call reading
		// (shares.readingStreams) and moves the deadline to now: it is
		// set after the one above.
	}
	err := s.readFrame(c, deadline)
	c.reading.Store(false)
	if err == nil {
		return true
	}
	c.release()

	if err == errNoRequest {
		// Nothing to answer: end our side at once, so the stream (and its
		// credit) is done as soon as the peer has our FIN.
		str.Close()
		return false
	}
	if ferr := frameError(err); ferr != nil {
		// The peer sent bytes we can answer: say what was wrong. Stop
		// reading whatever else it sends.
		s.setup.Logger.Debug("bad request", "peer", c.peer.Short(), "err", err)
		str.CancelRead(wire.StreamProtocolViolation)
		str.SetWriteDeadline(time.Now().Add(s.cfg.RequestTimeout))
		if werr := wire.WriteError(str, ferr); werr != nil {
			str.CancelWrite(wire.StreamProtocolViolation)
			return false
		}
		str.Close()
		return false
	}
	var code quic.StreamErrorCode = wire.StreamProtocolViolation
	var ne net.Error
	if c.cut.Load() {
		code = wire.StreamTimeout // cut off for a newcomer (shares.go)
	} else if errors.As(err, &ne) && ne.Timeout() {
		code = wire.StreamTimeout
		select {
		case <-s.stopping:
			// Cut off by shutdown, not by the peer's slowness: say so.
			s.refuseStream(str, *s.shuttingDown.Load())
			return false
		default:
		}
	}
	s.setup.Logger.Debug("request not read", "peer", c.peer.Short(), "err", err)
	str.CancelRead(code)
	str.CancelWrite(code)
	return false
}

// readFrame reads one request frame and the end of the stream after it
// into c, as wire.ReadRequest would, but takes a frame's declared length
// from the connection's request shares before allocating it, waiting until
// deadline if they are spent. A peer that declares large frames and sends
// nothing, on thousands of streams, so costs the server at most its shares,
// not the sum of its declarations. A frame that fits in the call's first
// read (requestHeadBytes) takes nothing: the call holds that buffer anyway,
// and the operation's share counts it.
//
// A small request has usually arrived whole, with its FIN, by the time its
// stream is accepted. The first read takes up to len(c.head) bytes, so such
// a request costs one quic-go Read instead of three (header, body, end).
func (s *Server) readFrame(c *Call, deadline time.Time) error {
	got, eof, err := readAtLeast(c.str, c.head[:], 4)
	if err != nil {
		return err
	}
	if got == 0 {
		return errNoRequest
	}
	if got < 4 {
		return fmt.Errorf("%w: truncated frame header: %w", wire.ErrMalformed, io.ErrUnexpectedEOF)
	}
	n := int64(binary.BigEndian.Uint32(c.head[:4]))
	switch {
	case n == 0:
		return wire.ErrEmptyFrame
	case n > int64(s.cfg.MaxRequestBytes):
		return fmt.Errorf("frame declares %d bytes, limit %d: %w", n, s.cfg.MaxRequestBytes, wire.ErrFrameTooLarge)
	case int64(got) > 4+n:
		return errTrailingBytes
	}
	var item []byte
	if 4+n <= int64(len(c.head)) {
		item = c.head[4 : 4+n]
	} else {
		if err := c.shares.take(c, resRequest, int(n), deadline, s.stopping, c.Gone()); err != nil {
			return err
		}
		c.requestHeld = int(n)
		item = c.itemBuf(int(n))
		copy(item, c.head[4:got])
	}
	if rest := item[got-4:]; len(rest) > 0 {
		err := io.ErrUnexpectedEOF // the stream ended with the first read
		if !eof {
			_, err = io.ReadFull(c.str, rest)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: truncated frame: %w", wire.ErrMalformed, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	if !eof {
		switch n, err := io.ReadFull(c.str, c.end[:]); {
		case n > 0:
			return errTrailingBytes
		case err != io.EOF:
			return err
		}
	}
	// The args are checked and decoded in one pass by Call.Decode (or
	// checked by serveStream, for an op no handler decodes).
	op, args, err := wire.SplitRequest(item)
	if err != nil {
		return err
	}
	c.op, c.args = op, args
	return nil
}

// shutdownRetryAfter is the retry_after_ms of the refusals of a server
// shutting down: it may be back soon (a restart), and a wait that says when
// to retry tells the refusal from a standing one (a registry that is full).
const shutdownRetryAfter = time.Second

// busyRetryAfter is the retry_after_ms of an operation refused for its
// shares: operations finish in milliseconds, unless the peer's own unread
// replies hold them.
const busyRetryAfter = 250 * time.Millisecond

// refuseStream answers a stream the server will not serve (it is shutting
// down, or the operation is over its shares) with frame, an encoded Error,
// without reading the request (STOP_SENDING 0x2). The frame is queued
// without blocking; if it cannot be (the peer gave no flow-control
// credit), the stream is reset with 0x2. The caller holds or releases the
// stream's credit.
func (s *Server) refuseStream(str *quic.Stream, frame []byte) {
	str.CancelRead(wire.StreamTimeout)
	if err := str.TryWriteAll(frame); err != nil {
		str.CancelWrite(wire.StreamTimeout)
		return
	}
	str.Close()
}

// errNoRequest is a stream that ended before any byte: it carries no
// request, so it gets no answer (PROTOCOL.md §3).
var errNoRequest = errors.New("stream ended before any byte of a request")

// errCancelled is a stream the peer cancelled while its request waited.
var errCancelled = errors.New("the peer cancelled the stream")

// errTrailingBytes is a request frame followed by more bytes.
var errTrailingBytes = fmt.Errorf("%w: bytes after the request frame", wire.ErrBadRequest)

// readAtLeast reads into buf until it holds least bytes, the stream ends,
// or a read fails, and says whether it saw the end (io.EOF is not an error
// here, as it is not from io.ReadAtLeast, which also drops it once least
// bytes are read).
func readAtLeast(r io.Reader, buf []byte, least int) (n int, eof bool, err error) {
	for n < least {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// frameError returns what to tell the peer if err says the request's bytes
// were wrong (an error wire.ToError maps to bad_request or too_large), or nil
// if the stream itself failed (deadline, reset, connection lost).
func frameError(err error) error {
	switch {
	case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrEmptyFrame),
		errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrBadRequest):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The peer ended its side before a whole request frame.
		return fmt.Errorf("%w: stream ended before a whole request frame", wire.ErrBadRequest)
	}
	return nil
}

// finish ends a call: it writes err as an Error frame if there is one, and
// closes the stream.
func (s *Server) finish(c *Call, err error) {
	if c.answered {
		// TryResult answered, and ended the stream.
		if err != nil {
			s.setup.Logger.Error("operation failed after it was answered", "op", c.op, "peer", c.peer.Short(), "err", err)
		}
		return
	}
	if err == nil {
		c.str.Close()
		return
	}
	var gone *streamError
	if errors.As(err, &gone) {
		// The peer stopped reading, the write deadline passed, or the
		// connection ended: nothing more can be said on this stream.
		s.setup.Logger.Debug("stream failed", "op", c.op, "peer", c.peer.Short(), "err", gone.err)
		c.str.CancelWrite(wire.StreamTimeout)
		return
	}
	we := wire.ToError(err)
	if we.Code == wire.CodeInternal {
		s.setup.Logger.Error("operation failed", "op", c.op, "peer", c.peer.Short(), "err", err)
	}
	if werr := c.Send(wire.KindError, we); werr != nil {
		c.str.CancelWrite(wire.StreamTimeout)
		return
	}
	c.str.Close()
}

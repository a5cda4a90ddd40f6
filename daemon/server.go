package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults shared by both servers.
const (
	DefaultMaxIncomingStreams = 1000
	DefaultRequestTimeout     = 10 * time.Second
	DefaultWriteTimeout       = 30 * time.Second
	DefaultShutdownTimeout    = 5 * time.Second

	handshakeIdleTimeout = 5 * time.Second
	maxIdleTimeout       = 30 * time.Second

	// closeLinger is how long Close gives connections to send what the last
	// handlers wrote before it closes them: quic-go drops stream data not
	// yet packed into a packet when a connection closes.
	closeLinger = 50 * time.Millisecond
)

// Flow-control windows. Zero keeps quic-go's defaults (stream 512 KiB
// growing to 6 MiB, connection 512 KiB growing to 15 MiB); they are here,
// in one place, to be tuned once load tests say how.
const (
	initialStreamReceiveWindow     = 0
	maxStreamReceiveWindow         = 0
	initialConnectionReceiveWindow = 0
	maxConnectionReceiveWindow     = 0
)

// quicConfig is the QUIC configuration of both servers.
func quicConfig(maxStreams int64) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           handshakeIdleTimeout,
		MaxIdleTimeout:                 maxIdleTimeout,
		MaxIncomingStreams:             maxStreams,
		MaxIncomingUniStreams:          -1, // the protocol uses bidirectional streams only
		InitialStreamReceiveWindow:     initialStreamReceiveWindow,
		MaxStreamReceiveWindow:         maxStreamReceiveWindow,
		InitialConnectionReceiveWindow: initialConnectionReceiveWindow,
		MaxConnectionReceiveWindow:     maxConnectionReceiveWindow,
	}
}

// serverConfig is what both servers pass to the shared machinery, defaults
// applied.
type serverConfig struct {
	listen          string
	maxStreams      int64
	requestTimeout  time.Duration
	writeTimeout    time.Duration
	shutdownTimeout time.Duration
	log             *slog.Logger
}

// handlerFunc serves one operation. It writes its reply frames with
// c.send; if it returns an error, the server writes it as the stream's last
// frame (an Error frame) unless the stream itself failed. The server closes
// the stream either way. ctx ends when shutdown's grace period is over.
type handlerFunc func(ctx context.Context, c *call) error

// server is the QUIC machinery both daemons share: listening, accepting
// connections and streams, reading requests, writing errors, and shutdown.
// Each daemon supplies a handlerFunc.
type server struct {
	cfg    serverConfig
	handle handlerFunc

	ready    chan struct{} // closed once listening
	stopping chan struct{} // closed when shutdown begins
	done     chan struct{} // closed when shutdown has finished

	// ctx is every handler's context; cancel ends it when shutdown's grace
	// period is over. acceptCtx ends when shutdown begins.
	ctx          context.Context
	cancel       context.CancelFunc
	acceptCtx    context.Context
	acceptCancel context.CancelFunc

	mu        sync.Mutex
	udp       *net.UDPConn
	tr        *quic.Transport
	ln        *quic.Listener
	started   bool
	closed    bool
	conns     map[*quic.Conn]struct{}
	reading   map[*quic.Stream]struct{} // streams whose request is being read
	closeOnce sync.Once

	connWG   sync.WaitGroup // the accept loop and one goroutine per connection
	streamWG sync.WaitGroup // one goroutine per stream
	active   atomic.Int64   // stream goroutines running, for tests and metrics
}

func newServer(cfg serverConfig, handle handlerFunc) *server {
	s := &server{
		cfg:      cfg,
		handle:   handle,
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		conns:    make(map[*quic.Conn]struct{}),
		reading:  make(map[*quic.Stream]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.acceptCtx, s.acceptCancel = context.WithCancel(context.Background())
	return s
}

// listen binds the UDP socket and starts QUIC on it. It is a no-op if the
// server already listens.
func (s *server) listen(id *identity.Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	ua, err := net.ResolveUDPAddr("udp", s.cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.cfg.listen, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.cfg.listen, err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(id.ServerTLS(), quicConfig(s.cfg.maxStreams))
	if err != nil {
		tr.Close()
		udp.Close()
		return fmt.Errorf("listen on %q: %w", s.cfg.listen, err)
	}
	s.udp, s.tr, s.ln = udp, tr, ln
	close(s.ready)
	return nil
}

// addr returns the bound address, or nil before listen.
func (s *server) addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// start starts accepting connections. listen must have succeeded.
func (s *server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrServing
	case s.ln == nil:
		return errors.New("daemon: serve before listen")
	}
	s.started = true
	s.connWG.Add(1)
	go s.acceptLoop()
	return nil
}

func (s *server) acceptLoop() {
	defer s.connWG.Done()
	for {
		conn, err := s.ln.Accept(s.acceptCtx)
		if err != nil {
			return // closed or shutting down
		}
		peer, err := identity.PeerFingerprint(conn.ConnectionState().TLS)
		if err != nil { // ServerTLS requires a certificate; this is defence in depth
			conn.CloseWithError(connProtocol, "client certificate required")
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.CloseWithError(connShutdown, "server shutting down")
			return
		}
		s.conns[conn] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn, peer)
	}
}

// serveConn accepts the streams of one connection until it ends or
// shutdown begins. On shutdown it leaves the connection for close to close.
func (s *server) serveConn(conn *quic.Conn, peer wire.Fingerprint) {
	defer s.connWG.Done()
	workers := s.newStreamWorkers(conn)
	for {
		str, err := conn.AcceptStream(s.acceptCtx)
		if err != nil {
			break
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			str.CancelRead(streamTimeout)
			str.CancelWrite(streamTimeout)
			break
		}
		s.streamWG.Add(1)
		s.mu.Unlock()
		workers.run(func() { s.serveStream(conn, peer, str) })
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		delete(s.conns, conn)
	}
	s.mu.Unlock()
	if !closed {
		conn.CloseWithError(connNoError, "")
	}
}

// serveStream runs one operation. It owns the stream: whatever happens, both
// directions end here (closed or cancelled), so the peer's stream credit is
// returned.
func (s *server) serveStream(conn *quic.Conn, peer wire.Fingerprint, str *quic.Stream) {
	defer s.streamWG.Done()
	s.active.Add(1)
	defer s.active.Add(-1)
	op, args, ok := s.readRequest(peer, str)
	if !ok {
		return
	}
	c := &call{op: op, args: args, peer: peer, remote: conn.RemoteAddr(), str: str, srv: s}
	defer func() {
		if r := recover(); r != nil {
			s.cfg.log.Error("handler panicked", "op", op, "peer", peer.Short(), "panic", r, "stack", string(debug.Stack()))
			s.finish(c, wire.ErrInternal)
		}
	}()
	s.finish(c, s.handle(s.ctx, c))
}

// readRequest reads the request frame and the end of stream after it. On
// failure it answers or cancels the stream and returns false.
func (s *server) readRequest(peer wire.Fingerprint, str *quic.Stream) (wire.Op, wire.Raw, bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		str.CancelRead(streamTimeout)
		str.CancelWrite(streamTimeout)
		return 0, nil, false
	}
	s.reading[str] = struct{}{}
	s.mu.Unlock()

	str.SetReadDeadline(time.Now().Add(s.cfg.requestTimeout))
	op, args, err := wire.ReadRequest(str, wire.MaxFrameSize)
	if err == nil {
		var b [1]byte
		switch n, rerr := io.ReadFull(str, b[:]); {
		case n > 0:
			err = fmt.Errorf("%w: bytes after the request frame", wire.ErrBadRequest)
		case rerr != io.EOF:
			err = rerr
		}
	}
	s.mu.Lock()
	delete(s.reading, str)
	s.mu.Unlock()
	str.SetReadDeadline(time.Time{})
	if err == nil {
		return op, args, true
	}

	if ferr := frameError(err); ferr != nil {
		// The peer sent bytes we can answer: say what was wrong. Stop
		// reading whatever else it sends.
		s.cfg.log.Debug("bad request", "peer", peer.Short(), "err", err)
		str.CancelRead(streamProtocol)
		str.SetWriteDeadline(time.Now().Add(s.cfg.requestTimeout))
		if werr := wire.WriteError(str, ferr); werr != nil {
			str.CancelWrite(streamProtocol)
			return 0, nil, false
		}
		str.Close()
		return 0, nil, false
	}
	code := streamProtocol
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = streamTimeout
	}
	s.cfg.log.Debug("request not read", "peer", peer.Short(), "err", err)
	str.CancelRead(code)
	str.CancelWrite(code)
	return 0, nil, false
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
func (s *server) finish(c *call, err error) {
	if err == nil {
		c.str.Close()
		return
	}
	var gone *streamError
	if errors.As(err, &gone) {
		// The peer stopped reading, the write deadline passed, or the
		// connection ended: nothing more can be said on this stream.
		s.cfg.log.Debug("stream failed", "op", c.op, "peer", c.peer.Short(), "err", gone.err)
		c.str.CancelWrite(streamTimeout)
		return
	}
	we := wire.ToError(err)
	if we.Code == wire.CodeInternal {
		s.cfg.log.Error("operation failed", "op", c.op, "peer", c.peer.Short(), "err", err)
	}
	if werr := c.send(wire.KindError, we); werr != nil {
		c.str.CancelWrite(streamTimeout)
		return
	}
	c.str.Close()
}

// close shuts the server down (see the package comment) and waits for
// every goroutine. It is safe to call more than once and concurrently; every
// call returns once shutdown has finished.
func (s *server) close() {
	s.closeOnce.Do(s.shutdown)
	<-s.done
}

func (s *server) shutdown() {
	defer close(s.done)
	s.mu.Lock()
	s.closed = true
	close(s.stopping)
	ln := s.ln
	for str := range s.reading {
		// Not an operation in flight yet: stop waiting for its request.
		str.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()

	s.acceptCancel()
	if ln == nil {
		s.cancel()
		return
	}
	ln.Close()

	drained := make(chan struct{})
	go func() { s.streamWG.Wait(); close(drained) }()
	grace := time.NewTimer(s.cfg.shutdownTimeout)
	select {
	case <-drained:
	case <-grace.C:
		s.cfg.log.Warn("shutdown timeout: aborting operations in flight", "timeout", s.cfg.shutdownTimeout)
	}
	grace.Stop()
	s.cancel()

	s.mu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if len(conns) > 0 {
		linger := time.NewTimer(closeLinger)
		<-linger.C
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.CloseWithError(connShutdown, "server shutting down") })
	}
	wg.Wait()
	<-drained
	s.connWG.Wait()
	s.tr.Close()
	s.udp.Close()
}

// call is one operation on one stream.
type call struct {
	op     wire.Op
	args   wire.Raw
	peer   wire.Fingerprint // from the connection's certificate, never from the peer's fields
	remote net.Addr
	str    *quic.Stream
	srv    *server
	buf    []byte // reused across frames
}

// streamError is a failure of the stream itself (write deadline, the peer
// cancelled, the connection ended), as opposed to an error to tell the peer.
type streamError struct{ err error }

func (e *streamError) Error() string { return "stream: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// send writes one response frame, bounded by the write timeout. Errors are
// *streamError, except an encoding failure, which is internal.
func (c *call) send(kind wire.Kind, body any) error {
	buf, err := wire.AppendFrame(c.buf[:0], uint64(kind), body)
	if err != nil {
		return fmt.Errorf("encode %v reply: %w", c.op, err)
	}
	c.buf = buf
	c.str.SetWriteDeadline(time.Now().Add(c.srv.cfg.writeTimeout))
	if _, err := c.str.Write(buf); err != nil {
		return &streamError{err}
	}
	if cap(c.buf) > 1<<20 {
		c.buf = nil // do not keep an unusually large buffer alive
	}
	return nil
}

// result writes the one Result frame of a single-reply operation.
func (c *call) result(body any) error { return c.send(wire.KindResult, body) }

// decode decodes the request's args into v.
func (c *call) decode(v any) error {
	if err := c.args.Decode(v); err != nil {
		return fmt.Errorf("%v: %w", c.op, err)
	}
	return nil
}

// gone is closed when the stream can no longer be written: the peer
// cancelled it or the connection ended.
func (c *call) gone() <-chan struct{} { return c.str.Context().Done() }

// stopping is closed when the server begins to shut down.
func (c *call) stopping() <-chan struct{} { return c.srv.stopping }

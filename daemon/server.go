package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults shared by both servers.
const (
	DefaultMaxIncomingStreams = 1000
	DefaultRequestTimeout     = 10 * time.Second
	DefaultWriteTimeout       = 30 * time.Second
	DefaultShutdownTimeout    = 5 * time.Second
	// DefaultHandshakeTimeout bounds a TLS handshake; a peer silent for
	// half of it during the handshake is dropped sooner.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a connection may be silent. Clients
	// keep a watching connection alive with QUIC PINGs more often.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxRequestBytes is the largest request frame read: the
	// protocol's maximum.
	DefaultMaxRequestBytes = wire.MaxFrameSize
	// MinMaxRequestBytes is the smallest MaxRequestBytes accepted: room
	// for any registry request and a small send.
	MinMaxRequestBytes = 4096
	// DefaultMaxConnsPerAddr is how many connections one source address
	// (an IPv4 address, or an IPv6 /64) may have at once.
	DefaultMaxConnsPerAddr = 256
	// DefaultMaxConns is how many connections a server holds at once.
	DefaultMaxConns = 4096

	// closeLinger is how long Close gives connections to send what the last
	// handlers wrote before it closes them: quic-go drops stream data not
	// yet packed into a packet when a connection closes, and says nothing
	// when it has packed it. A server with no connections left does not
	// linger.
	closeLinger = 50 * time.Millisecond
)

// Flow control, sized for chat rather than bulk transfer. A stream carries
// one request frame, so its window need never exceed one frame; a small
// initial window keeps an idle connection cheap, and quic-go grows a
// window that is used fast, up to its maximum. The connection window bounds
// what all of a connection's streams together can make the server buffer
// before its handlers read it.
const (
	initialStreamReceiveWindow     = 64 << 10
	initialConnectionReceiveWindow = 512 << 10
	maxConnectionReceiveWindow     = 4 << 20
	// What peers may make a server hold in requests, replies and
	// operations is bounded by shares (shares.go).
)

// quicConfig is the QUIC configuration of both servers.
func quicConfig(cfg serverConfig) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           cfg.HandshakeTimeout / 2, // quic-go aborts a handshake after twice this
		MaxIdleTimeout:                 cfg.IdleTimeout,
		MaxIncomingStreams:             cfg.MaxIncomingStreams,
		MaxIncomingUniStreams:          -1, // the protocol uses bidirectional streams only
		InitialStreamReceiveWindow:     min(initialStreamReceiveWindow, uint64(cfg.MaxRequestBytes)+4),
		MaxStreamReceiveWindow:         uint64(cfg.MaxRequestBytes) + 4, // one frame and its header
		InitialConnectionReceiveWindow: initialConnectionReceiveWindow,
		MaxConnectionReceiveWindow:     maxConnectionReceiveWindow,
		RequireStreamCreditRelease:     true, // see credit.go
		// QLOGDIR=dir writes a qlog of each connection into dir (README,
		// "Environment"); unset, this tracer is nil and costs nothing.
		Tracer: qlog.DefaultConnectionTracer,
	}
}

// ServerConfig is the part of a daemon's configuration that its QUIC server
// takes: stream, request and connection limits, and the deadline of each
// stage. RegistryConfig and GroupConfig embed it. The zero value of each
// field means its default.
type ServerConfig struct {
	// MaxIncomingStreams is how many streams (operations) one connection may
	// have open at once. Default 1000.
	MaxIncomingStreams int64
	// MaxRequestBytes is the largest request frame read. Default and most
	// wire.MaxFrameSize (1 MiB); at least MinMaxRequestBytes.
	MaxRequestBytes int
	// MaxConnsPerAddr is how many connections one source address (an IPv4
	// address, or an IPv6 /64) may have open at once; more are closed with
	// wire.ConnRefused. Default 256.
	MaxConnsPerAddr int
	// MaxConns is how many connections the server holds at once. Default
	// 4096.
	MaxConns int
	// HandshakeTimeout bounds a connection's TLS handshake. Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout is how long a connection may be silent before it is
	// dropped. Default 30 s.
	IdleTimeout time.Duration
	// RequestTimeout bounds the wait for a whole request frame. Default 10 s.
	RequestTimeout time.Duration
	// WriteTimeout bounds each reply frame's write: a watcher that stops
	// reading loses its watch after it. Default 30 s.
	WriteTimeout time.Duration
	// ShutdownTimeout bounds how long Close lets operations in flight
	// finish. Default 5 s.
	ShutdownTimeout time.Duration
}

// validate checks the fields; its errors wrap ErrInvalidConfig.
func (c ServerConfig) validate() error {
	switch {
	case c.MaxIncomingStreams < 0:
		return invalid("MaxIncomingStreams %d is negative", c.MaxIncomingStreams)
	case c.MaxRequestBytes != 0 && (c.MaxRequestBytes < MinMaxRequestBytes || c.MaxRequestBytes > wire.MaxFrameSize):
		return invalid("MaxRequestBytes %d: want %d..%d", c.MaxRequestBytes, MinMaxRequestBytes, wire.MaxFrameSize)
	case c.MaxConnsPerAddr < 0:
		return invalid("MaxConnsPerAddr %d is negative", c.MaxConnsPerAddr)
	case c.MaxConns < 0:
		return invalid("MaxConns %d is negative", c.MaxConns)
	case c.HandshakeTimeout < 0, c.IdleTimeout < 0, c.RequestTimeout < 0, c.WriteTimeout < 0, c.ShutdownTimeout < 0:
		return invalid("negative interval or timeout")
	}
	return nil
}

// withDefaults fills the zero fields.
func (c ServerConfig) withDefaults() ServerConfig {
	c.MaxIncomingStreams = orDefault(c.MaxIncomingStreams, DefaultMaxIncomingStreams)
	c.MaxRequestBytes = orDefault(c.MaxRequestBytes, DefaultMaxRequestBytes)
	c.MaxConnsPerAddr = orDefault(c.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	c.MaxConns = orDefault(c.MaxConns, DefaultMaxConns)
	c.HandshakeTimeout = orDefault(c.HandshakeTimeout, DefaultHandshakeTimeout)
	c.IdleTimeout = orDefault(c.IdleTimeout, DefaultIdleTimeout)
	c.RequestTimeout = orDefault(c.RequestTimeout, DefaultRequestTimeout)
	c.WriteTimeout = orDefault(c.WriteTimeout, DefaultWriteTimeout)
	c.ShutdownTimeout = orDefault(c.ShutdownTimeout, DefaultShutdownTimeout)
	return c
}

// serverConfig is what both daemons pass to the shared machinery.
type serverConfig struct {
	ServerConfig
	listen string
	// retryAbove is how many handshakes may be in progress before new
	// ones must prove their source address first (QUIC Retry).
	retryAbove int64
	log        *slog.Logger
	now        func() time.Time // the daemon's clock, which paces the refusals' log
}

// withDefaults fills the zero fields.
func (c serverConfig) withDefaults() serverConfig {
	c.ServerConfig = c.ServerConfig.withDefaults()
	c.retryAbove = orDefault(c.retryAbove, retryAboveHandshakes)
	c.log = logger(c.log)
	c.now = clock(c.now)
	return c
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
	// period is over. acceptCtx ends once the connections are closed: until
	// then, new connections and streams are told the server is shutting
	// down (see refuseStream).
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
	perAddr   map[netip.Prefix]int      // connections open per source (see addrKey)
	reading   map[*quic.Stream]struct{} // streams whose request is being read
	closeOnce sync.Once

	shares *shares // what each peer holds: operations, request and reply bytes
	// shuttingDown is the Error frame that refuses a stream once shutdown
	// has begun, and busy the one that refuses an operation over its
	// shares (see refuseStream); each encoded once.
	shuttingDown, busy []byte
	// handshakes counts handshakes in progress; retries counts the
	// connection attempts sent a Retry because of it.
	handshakes, retries atomic.Int64
	refusals            refusalLog // connections refused over a limit, logged sparingly

	connWG   sync.WaitGroup // the accept loop and one goroutine per connection
	streamWG sync.WaitGroup // one goroutine per stream
	active   atomic.Int64   // stream goroutines running, for tests and metrics
}

func newServer(cfg serverConfig, handle handlerFunc) *server {
	cfg = cfg.withDefaults()
	s := &server{
		cfg:      cfg,
		handle:   handle,
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		conns:    make(map[*quic.Conn]struct{}),
		perAddr:  make(map[netip.Prefix]int),
		reading:  make(map[*quic.Stream]struct{}),
		shares:   newShares(sharesFor(cfg.ServerConfig)),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.acceptCtx, s.acceptCancel = context.WithCancel(context.Background())
	s.shuttingDown, _ = wire.AppendFrame(nil, uint64(wire.KindError), &wire.Error{Code: wire.CodeUnavailable,
		RetryAfterMS: uint64(shutdownRetryAfter.Milliseconds()), Message: "the server is shutting down"})
	s.busy, _ = wire.AppendFrame(nil, uint64(wire.KindError), &wire.Error{Code: wire.CodeUnavailable,
		RetryAfterMS: uint64(busyRetryAfter.Milliseconds()),
		Message:      "the server runs as many operations for your address, your key or in all as it allows: wait for some to finish"})
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
	key, err := statelessResetKey(id)
	if err != nil {
		udp.Close()
		return fmt.Errorf("listen on %q: %w", s.cfg.listen, err)
	}
	tr := &quic.Transport{
		Conn:                udp,
		StatelessResetKey:   key,
		ConnContext:         s.connContext,
		VerifySourceAddress: s.verifySourceAddress,
	}
	ln, err := tr.Listen(id.ServerTLS(), quicConfig(s.cfg))
	if err != nil {
		tr.Close()
		udp.Close()
		return fmt.Errorf("listen on %q: %w", s.cfg.listen, err)
	}
	s.udp, s.tr, s.ln = udp, tr, ln
	close(s.ready)
	return nil
}

// statelessResetKey derives the key of the QUIC stateless resets the
// server sends for connections it no longer knows, from the server's own
// private key: a server restarted with its state directory sends resets
// its clients' old connections recognise, so they redial at once instead
// of waiting out their idle timeout. The derivation is one-way; the key
// reveals nothing of the private key.
func statelessResetKey(id *identity.Identity) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(id.Certificate().PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("huddle/1 QUIC stateless reset key\x00"))
	h.Write(der)
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key, nil
}

// retryAboveHandshakes is how many handshakes may be in progress at once
// before the server asks new connection attempts to prove their source
// address with a QUIC Retry. A flood of Initial packets from spoofed
// addresses then costs the server one stateless Retry packet each, not a
// connection's state and a TLS handshake; an honest client pays one round
// trip more, and only while the server is under such a load.
const retryAboveHandshakes = 128

// handshake is a connection attempt counted in server.handshakes until its
// handshake ends, one way or the other.
type handshake struct {
	s    *server
	once sync.Once
}

func (h *handshake) done() { h.once.Do(func() { h.s.handshakes.Add(-1) }) }

type handshakeKey struct{}

// connContext counts a new connection attempt as a handshake in progress;
// acceptLoop ends the count when the handshake completes, and the
// connection's context ending (a failed handshake) ends it otherwise.
func (s *server) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	h := &handshake{s: s}
	s.handshakes.Add(1)
	context.AfterFunc(ctx, h.done)
	return context.WithValue(ctx, handshakeKey{}, h), nil
}

// verifySourceAddress asks for a Retry when too many handshakes are in
// progress (quic-go calls it only for attempts whose address is not yet
// validated).
func (s *server) verifySourceAddress(net.Addr) bool {
	if s.handshakes.Load() < s.cfg.retryAbove {
		return false
	}
	s.retries.Add(1)
	return true
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
		if h, ok := conn.Context().Value(handshakeKey{}).(*handshake); ok {
			h.done()
		}
		peer, err := identity.PeerFingerprint(conn.ConnectionState().TLS)
		if err != nil { // ServerTLS requires a certificate; this is defence in depth
			conn.CloseWithError(wire.ConnProtocolViolation, "client certificate required")
			continue
		}
		key := addrKey(conn.RemoteAddr())
		s.mu.Lock()
		if s.closed {
			// Shutting down: say so at once, rather than leave the client
			// to time out on a server that will not serve it.
			s.mu.Unlock()
			conn.CloseWithError(wire.ConnShutdown, "server shutting down")
			continue
		}
		var refused string
		switch {
		case s.perAddr[key] >= s.cfg.MaxConnsPerAddr:
			refused = fmt.Sprintf("too many connections from your address (limit %d)", s.cfg.MaxConnsPerAddr)
		case len(s.conns) >= s.cfg.MaxConns:
			refused = fmt.Sprintf("the server holds its limit of %d connections", s.cfg.MaxConns)
		}
		if refused != "" {
			s.mu.Unlock()
			s.refusals.note(s.cfg.log, s.cfg.now(), key, peer, refused)
			conn.CloseWithError(wire.ConnRefused, refused)
			continue
		}
		s.conns[conn] = struct{}{}
		s.perAddr[key]++
		s.connWG.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn, peer, key)
	}
}

// addrKey is the unit the per-address connection limit counts: an IPv4
// address, or the /64 prefix of an IPv6 address, since one host is given a
// whole /64 and can pick any address in it.
func addrKey(a net.Addr) netip.Prefix {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ua.AddrPort().Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// refusalLog logs refused connections at most once a second, with a count
// of those not logged, so a flood of refusals does not flood the log.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusalLog) note(log *slog.Logger, now time.Time, from netip.Prefix, peer wire.Fingerprint, why string) {
	r.mu.Lock()
	if d := now.Sub(r.last); d >= 0 && d < time.Second { // a clock that stepped back logs
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	log.Warn("connection refused", "from", from, "peer", peer.Short(), "reason", why, "refused_since_last_logged", n)
}

// serveConn accepts the streams of one connection until it ends or
// shutdown begins. On shutdown it leaves the connection for close to close.
func (s *server) serveConn(conn *quic.Conn, peer wire.Fingerprint, key netip.Prefix) {
	defer s.connWG.Done()
	cs := s.shares.attach(key, peer)
	defer cs.detach()
	credits := newStreamCredits(s.cfg.MaxIncomingStreams)
	defer credits.close()
	workers := s.newStreamWorkers(func(str *quic.Stream) { s.serveStream(conn, peer, str, cs, credits) })
	defer workers.close()
	for {
		str, err := conn.AcceptStream(s.acceptCtx)
		if err != nil {
			break
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.refuseStream(str, s.shuttingDown)
			credits.hold(str) // given back by credits.close, below
			continue
		}
		s.streamWG.Add(1)
		s.mu.Unlock()
		workers.run(str)
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		delete(s.conns, conn)
	}
	if s.perAddr[key]--; s.perAddr[key] <= 0 {
		delete(s.perAddr, key)
	}
	s.mu.Unlock()
	if !closed {
		conn.CloseWithError(wire.ConnNoError, "")
	}
}

// serveStream runs one operation. It owns the stream: whatever happens, both
// directions end here (closed or cancelled), and its credit goes to credits,
// which gives it back to the peer.
func (s *server) serveStream(conn *quic.Conn, peer wire.Fingerprint, str *quic.Stream, cs *connShare, credits *streamCredits) {
	defer s.streamWG.Done()
	defer credits.hold(str)
	s.active.Add(1)
	defer s.active.Add(-1)
	c := newCall(s, conn, peer, str)
	c.credits, c.shares = credits, cs
	defer c.free()
	if !cs.admit(c) {
		// Over its operations' share: refused at once, its request not
		// read.
		s.refuseStream(str, s.busy)
		return
	}
	defer cs.end(c) // before c.free
	if !s.readRequest(c) {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.cfg.log.Error("handler panicked", "op", c.op, "peer", peer.Short(), "panic", r, "stack", string(debug.Stack()))
			s.finish(c, wire.ErrInternal)
		}
	}()
	err := s.handle(s.ctx, c)
	if !c.decoded {
		// An op the handler does not serve: a malformed request is
		// still answered as one, not as an unknown op.
		if cerr := c.args.Check(); cerr != nil {
			err = cerr
		}
	}
	s.finish(c, err)
}

// readRequest reads the request frame and the end of stream after it,
// within the request deadline, into c (op, args, and the request's memory,
// given back by call.release). On failure it answers or cancels the stream
// and returns false.
func (s *server) readRequest(c *call) bool {
	str := c.str
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.refuseStream(str, s.shuttingDown)
		return false
	}
	s.reading[str] = struct{}{}
	s.mu.Unlock()

	// One absolute deadline for the whole request: a peer that trickles
	// bytes does not extend it. The read side ends with the request (or is
	// cancelled), so the deadline is never cleared.
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	str.SetReadDeadline(deadline)
	err := s.readFrame(c, deadline)
	c.reading.Store(false)
	s.mu.Lock()
	delete(s.reading, str)
	s.mu.Unlock()
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
		s.cfg.log.Debug("bad request", "peer", c.peer.Short(), "err", err)
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
			s.refuseStream(str, s.shuttingDown)
			return false
		default:
		}
	}
	s.cfg.log.Debug("request not read", "peer", c.peer.Short(), "err", err)
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
func (s *server) readFrame(c *call, deadline time.Time) error {
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
		if err := c.shares.take(c, resRequest, int(n), deadline, s.stopping, c.gone()); err != nil {
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
		var b [1]byte
		switch n, err := io.ReadFull(c.str, b[:]); {
		case n > 0:
			return errTrailingBytes
		case err != io.EOF:
			return err
		}
	}
	// The args are checked and decoded in one pass by call.decode (or
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
func (s *server) refuseStream(str *quic.Stream, frame []byte) {
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
		c.str.CancelWrite(wire.StreamTimeout)
		return
	}
	we := wire.ToError(err)
	if we.Code == wire.CodeInternal {
		s.cfg.log.Error("operation failed", "op", c.op, "peer", c.peer.Short(), "err", err)
	}
	if werr := c.send(wire.KindError, we); werr != nil {
		c.str.CancelWrite(wire.StreamTimeout)
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
		// Not an operation in flight yet: stop waiting for its request,
		// and tell its client the server is shutting down.
		str.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()

	if ln == nil {
		s.acceptCancel()
		s.cancel()
		return
	}
	// Operations in flight finish, within the grace period. Meanwhile
	// connections and streams are still accepted, each told at once that
	// the server is shutting down (acceptLoop, serveConn): a client learns
	// it from an unavailable error or close code 0x2, instead of waiting
	// for a server that no longer serves it.
	drained := make(chan struct{})
	go func() { s.streamWG.Wait(); close(drained) }()
	grace := time.NewTimer(s.cfg.ShutdownTimeout)
	select {
	case <-drained:
	case <-grace.C:
		s.cfg.log.Warn("shutdown timeout: aborting operations in flight", "timeout", s.cfg.ShutdownTimeout)
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
		<-time.After(closeLinger)
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.CloseWithError(wire.ConnShutdown, "server shutting down") })
		}
		wg.Wait()
		// A client whose connection was just closed may be dialling again:
		// the accept loop tells it too, for a moment more, rather than leave
		// its handshake unanswered.
		<-time.After(closeLinger)
	}
	s.acceptCancel()
	ln.Close()
	<-drained
	s.connWG.Wait()
	s.tr.Close()
	s.udp.Close()
}

// call is one operation on one stream. Calls, and the buffers of small
// requests, are pooled: a call with its request and reply buffers was a
// good part of what the daemon allocated per operation (BENCHMARKS.md).
type call struct {
	op      wire.Op
	args    wire.Frame
	peer    wire.Fingerprint // from the connection's certificate, never from the peer's fields
	remote  net.Addr
	str     *quic.Stream
	srv     *server
	credits *streamCredits
	buf     []byte  // reply frames, reused across frames (and calls, when small)
	item    *[]byte // the request frame, if larger than head: from requestBufs if small
	// head is the first read of the request: the whole frame, if it fits.
	head [requestHeadBytes]byte
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
	prev, next            *call
	reading, writing, cut atomic.Bool
	// decoded says a handler decoded the args (whether or not they were
	// valid); inPlace, that the decoded values may alias the request, which
	// is then held until the call ends.
	decoded, inPlace bool
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
	calls       = sync.Pool{New: func() any { return new(call) }}
	requestBufs = sync.Pool{New: func() any { b := make([]byte, pooledRequestBytes); return &b }}
)

func newCall(s *server, conn *quic.Conn, peer wire.Fingerprint, str *quic.Stream) *call {
	c := calls.Get().(*call)
	c.srv, c.peer, c.remote, c.str = s, peer, conn.RemoteAddr(), str
	return c
}

// itemBuf returns a buffer of n bytes for the request frame.
func (c *call) itemBuf(n int) []byte {
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
func (c *call) release() {
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
func (c *call) free() {
	c.release()
	buf := c.buf[:0]
	if cap(buf) > maxPooledReplyBytes {
		buf = nil
	}
	*c = call{buf: buf}
	calls.Put(c)
}

// stalled reports whether the call is in a state in which a peer can
// stall it while it holds r: reading its request (operations, request
// bytes) or writing a large reply (reply bytes).
func (c *call) stalled(r resource) bool {
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

// send writes one response frame, bounded by the write timeout. Errors are
// *streamError, except an encoding failure, which is internal.
func (c *call) send(kind wire.Kind, body any) error {
	buf, err := wire.AppendFrame(c.buf[:0], uint64(kind), body)
	if err != nil {
		return fmt.Errorf("encode %v reply: %w", c.op, err)
	}
	c.buf = buf
	err = c.write(buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil // do not keep an unusually large buffer alive
	}
	return err
}

// write writes an encoded frame, bounded by the write timeout. quic-go does
// not keep frame past the call. Errors are *streamError.
func (c *call) write(frame []byte) error {
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

// need sets the reply memory the call holds to n bytes (its working set:
// the reply it builds, the frame it writes, and the buffers it keeps
// between frames), taking more from the connection's shares or giving some
// back. Taking waits within the write timeout, as a blocked write would:
// while the peer's earlier replies, unread, hold the connection's or the
// address's share, the call waits for them, and then gives up with
// unavailable (and a time to wait). A call under smallReply holds nothing.
// Its errors are one to tell the peer, or a *streamError.
func (c *call) need(n int) error {
	if n <= smallReply {
		n = 0
	}
	switch d := n - c.replyHeld; {
	case d > 0:
		err := c.shares.take(c, resReply, d, time.Now().Add(c.srv.cfg.WriteTimeout), c.srv.stopping, c.gone())
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

// result writes the one Result frame of a single-reply operation.
func (c *call) result(body any) error { return c.send(wire.KindResult, body) }

// decode decodes the request's args into v, then releases the request's
// memory: v must be a type whose decoded values do not alias the frame,
// which is every frame type but wire.Send (see decodeInPlace).
func (c *call) decode(v any) error {
	c.decoded = true
	err := c.args.Decode(v)
	c.release()
	if err != nil {
		return fmt.Errorf("%v: %w", c.op, err)
	}
	return nil
}

// decodeInPlace decodes the request's args into v, whose byte strings may
// alias the request (see wire.Frame.Decode): the request and its memory
// are held until the call ends, so v must not be used after the handler
// returns.
func (c *call) decodeInPlace(v any) error {
	c.decoded, c.inPlace = true, true
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

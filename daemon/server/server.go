package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults of Config.
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
	// stuckWait is how long Close waits, once the grace period has passed
	// and the connections are closed, for handlers that still have not
	// returned, before it returns without them (Stuck): a handler stuck in
	// a disk that never answers would hold it for ever. Close's bound is
	// ShutdownTimeout + stuckWait + twice closeLinger.
	stuckWait = 3 * time.Second
)

// Flow control, sized for chat rather than bulk transfer. A stream carries
// one request frame, so its window need never exceed one frame; a small
// initial window keeps an idle connection cheap, and quic-go grows a
// window that is used fast, up to its maximum. The connection window bounds
// what all of a connection's streams together can make the server buffer
// before its handlers read it. A stream's initial window is also what a
// stalled stream (a request that never completes) makes quic-go buffer for
// it: 16 KiB holds every request but a large batch, which gets more as it
// is read, and keeps a stalled operation's cost near 40 KiB (memory.go).
const (
	initialStreamReceiveWindow     = 16 << 10
	initialConnectionReceiveWindow = 512 << 10
	maxConnectionReceiveWindow     = 4 << 20
	// What peers may make a server hold in requests, replies and
	// operations is bounded by shares (shares.go).
)

// quicConfig is the QUIC configuration of the daemons' servers.
func quicConfig(cfg Config) *quic.Config {
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

// Config is the part of a daemon's configuration that its QUIC server
// takes: stream, request and connection limits, and the deadline of each
// stage. The daemons' configurations embed it. The zero value of each
// field means its default.
type Config struct {
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
	// Shares bounds what peers may make the server hold (shares.go): each
	// nonzero amount replaces its default (SECURITY.md, "Limits"), which
	// scales with MaxConnsPerAddr above its default. See Config.Bounds.
	Shares Shares
}

// Validate checks the fields; its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
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
	case !c.Shares.valid():
		return invalid("negative share in %+v", c.Shares)
	}
	return nil
}

// WithDefaults returns c with its zero fields filled.
func (c Config) WithDefaults() Config {
	c.MaxIncomingStreams = cmp.Or(c.MaxIncomingStreams, DefaultMaxIncomingStreams)
	c.MaxRequestBytes = cmp.Or(c.MaxRequestBytes, DefaultMaxRequestBytes)
	c.MaxConnsPerAddr = cmp.Or(c.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	c.MaxConns = cmp.Or(c.MaxConns, DefaultMaxConns)
	c.HandshakeTimeout = cmp.Or(c.HandshakeTimeout, DefaultHandshakeTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, DefaultRequestTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	return c
}

// Setup is how a daemon runs its server, beside the limits of Config:
// where it listens, what it logs and measures, and on which clock.
type Setup struct {
	// Listen is the UDP address to bind, host:port.
	Listen string
	// Role names the server in its metrics ("registry" or "groups").
	Role string
	// Metrics, if set, times every operation and reads the server's
	// Stats at each scrape (telemetry.go).
	Metrics *metrics.Metrics
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Now is the daemon's clock, which paces the logs of refusals; nil
	// means time.Now.
	Now func() time.Time
	// Cell, if set, takes the connections of a cell's members (ALPN
	// cell.ALPN) off the listener.
	Cell Cell

	// retryAbove is how many handshakes may be in progress before new
	// ones must prove their source address first (QUIC Retry); tests set
	// it.
	retryAbove int64
}

// Cell takes the connections of a cell's members off a server's listener:
// a member's handshake is checked by Verify, and its connection given to
// Handle, which owns it from then on.
type Cell interface {
	Verify(tls.ConnectionState) error
	Handle(*quic.Conn)
}

// withDefaults fills the zero fields.
func (s Setup) withDefaults() Setup {
	s.retryAbove = cmp.Or(s.retryAbove, retryAboveHandshakes)
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s
}

// Handler serves one operation. It writes its reply frames with c.Send
// (or c.Result); if it returns an error, the server writes it as the
// stream's last frame (an Error frame) unless the stream itself failed.
// The server closes the stream either way. ctx ends when shutdown's grace
// period is over.
//
// A handler that gave the call to another goroutine to answer returns
// ErrLater: that goroutine then ends the call with Call.End.
type Handler func(ctx context.Context, c *Call) error

// Server is the QUIC machinery the daemons share: listening, accepting
// connections and streams, reading requests, writing errors, and shutdown.
// Each daemon supplies a Handler.
type Server struct {
	cfg    Config
	setup  Setup
	handle Handler
	// observe times and counts an operation once it ends (instrument).
	observe func(*Call, error)

	ready    chan struct{} // closed once listening
	stopping chan struct{} // closed when shutdown begins
	done     chan struct{} // closed when shutdown has finished
	stopped  chan struct{} // closed when every goroutine has returned (Stopped)

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
	peakConns int                  // most connections since the memory reclaimer last looked
	perAddr   map[netip.Prefix]int // connections open per source (see Source)
	closeOnce sync.Once

	shares *shares // what each peer holds: operations, request and reply bytes
	// shuttingDown is the Error frame that refuses a stream once shutdown
	// has begun (NameLeader may replace it before), and busy the one that
	// refuses an operation over its shares (see refuseStream); each
	// encoded once.
	shuttingDown atomic.Pointer[[]byte]
	busy         []byte
	// handshakes counts handshakes in progress; retries counts the
	// connection attempts sent a Retry because of it.
	handshakes, retries atomic.Int64
	refusals            refusalLog // connections refused over a limit, logged sparingly

	connWG   sync.WaitGroup // the accept loop and one goroutine per connection
	streamWG sync.WaitGroup // one per stream, until its call ends
	active   atomic.Int64   // streams being served, for tests and metrics
	stuck    atomic.Bool    // Close left handlers running (Stuck)
}

// NameLeader makes the refusals the server gives while it shuts down
// (`unavailable`, the server is shutting down) name leader, if not nil, as
// the member to send operations to (the Error's key 5): a member of a
// cell that handed the leadership over as it stops calls it before Close,
// so that its clients go to the new leader at once rather than wait the
// refusal's retry_after_ms (PROTOCOL.md §3, "Shutting down").
func (s *Server) NameLeader(leader *wire.Replica) {
	f, _ := wire.AppendFrame(nil, uint64(wire.KindError), &wire.Error{Code: wire.CodeUnavailable,
		RetryAfterMS: uint64(shutdownRetryAfter.Milliseconds()), Message: "the server is shutting down", Leader: leader,
		Unchanged: true}) // its request was not read
	s.shuttingDown.Store(&f)
}

// New returns a server of cfg (which Validate must have accepted) with
// handler h, instrumented by setup.Metrics. It does no I/O: Listen binds
// its socket, Start serves, Close shuts it down.
func New(cfg Config, setup Setup, h Handler) *Server {
	cfg = cfg.WithDefaults()
	setup = setup.withDefaults()
	s := &Server{
		cfg:      cfg,
		setup:    setup,
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
		conns:    make(map[*quic.Conn]struct{}),
		perAddr:  make(map[netip.Prefix]int),
		shares:   newShares(cfg.Bounds().limits()),
	}
	s.handle, s.observe = instrument(setup.Metrics, setup.Logger, setup.Now, s.stopping, h)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.acceptCtx, s.acceptCancel = context.WithCancel(context.Background())
	s.NameLeader(nil)
	s.busy, _ = wire.AppendFrame(nil, uint64(wire.KindError), &wire.Error{Code: wire.CodeUnavailable,
		RetryAfterMS: uint64(busyRetryAfter.Milliseconds()),
		Message:      "the server runs as many operations for your address, your key or in all as it allows: wait for some to finish",
		Unchanged:    true}) // its request was not read
	setup.Metrics.Server(setup.Role, s.metricsStats)
	return s
}

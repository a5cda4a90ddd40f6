package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the HTTP server (besides Config.MaxConns).
const (
	readHeaderTimeout  = 10 * time.Second
	defaultReadTimeout = 30 * time.Second // a request of maxBody takes milliseconds on loopback
	idleTimeout        = 2 * time.Minute
	maxHeaderBytes     = 64 << 10
)

// Server is huddle's local web server. New does no I/O; Listen binds; Serve
// runs until its context ends or Close is called; Close is safe twice and
// waits for every goroutine the Server started.
type Server struct {
	cfg    Config
	dir    *directory
	guard  guard
	mux    *http.ServeMux
	stream chan struct{} // a token per event stream open
	// readTimeout bounds reading a request, header and body
	// (defaultReadTimeout; tests shorten it).
	readTimeout time.Duration
	// queueBytes bounds each event stream's messages waiting for the
	// browser (streamQueueBytes); queued counts them over every stream;
	// queueWait, a test hook, is called when a message waits for room.
	queueBytes int
	queued     atomic.Int64
	queueWait  func()

	// ctx ends when Close begins: it is every request's base context, so
	// event streams end with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	ln     net.Listener
	srv    *http.Server
	closed bool
	ready  chan struct{} // closed once Listen has bound
}

// New returns a Server for cfg, or an error wrapping ErrInvalidConfig.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Secret == "" {
		var b [32]byte
		rand.Read(b[:])
		cfg.Secret = base64.RawURLEncoding.EncodeToString(b[:])
	}
	s := &Server{cfg: cfg, stream: make(chan struct{}, cfg.MaxStreams), readTimeout: defaultReadTimeout, queueBytes: streamQueueBytes,
		ready: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.dir = newDirectory(cfg)
	s.guard = guard{secret: cfg.Secret, hosts: cfg.Hosts, log: cfg.Logger}
	s.mux = s.routes()
	return s, nil
}

// Listen binds the listening socket, so that Addr and URL are known before
// Serve. Errors: the socket's, or ErrClosed.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("web: listen: %w", err)
	}
	s.ln = newConnLimit(ln, s.cfg.MaxConns)
	s.guard.port = fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	close(s.ready)
	return nil
}

// Ready is closed once the Server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address the Server listens on (nil before Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL returns the address to open in a browser: the listening address
// with the secret, which the first load trades for a cookie. An
// unspecified listening address (0.0.0.0, ::) is shown as 127.0.0.1.
func (s *Server) URL() string {
	a, _ := s.Addr().(*net.TCPAddr)
	if a == nil {
		return ""
	}
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(a.Port)), Path: "/", RawQuery: "k=" + s.cfg.Secret}
	return u.String()
}

// Secret returns the per-launch secret (for "Authorization: Bearer").
func (s *Server) Secret() string { return s.cfg.Secret }

// Serve serves until ctx ends or Close is called, then shuts down (event
// streams end, requests in flight get a few seconds) and returns nil. It
// calls Listen if Listen was not called.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed || s.srv != nil {
		s.mu.Unlock()
		return ErrClosed
	}
	s.srv = &http.Server{
		Handler: s.guard.wrap(s.mux),
		// A request's header must come within readHeaderTimeout, and the
		// whole request within readTimeout, so that a slow sender cannot
		// hold a connection and a handler (an event stream, whose request
		// is read, outlives it: net/http lifts the deadline once a
		// request's body is read); an idle one goes after idleTimeout;
		// connLimit bounds how many are held at once.
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ConnContext:       withConn,
		ErrorLog:          nil,
	}
	srv, ln := s.srv, s.ln
	s.wg.Go(func() { s.dir.run(s.ctx) })
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.Close()
	return err
}

// Close stops the Server: event streams and the registry poller end, then
// the HTTP server shuts down, giving requests in flight up to 5 s. It waits
// for every goroutine the Server started and is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	s.cancel()
	var err error
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err = srv.Shutdown(ctx); err != nil {
			err = srv.Close()
		}
		cancel()
	} else if ln != nil {
		err = ln.Close()
	}
	s.wg.Wait()
	return err
}

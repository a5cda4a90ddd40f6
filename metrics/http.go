package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPConfig configures the HTTP listener of a daemon's telemetry.
type HTTPConfig struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:9373".
	// Required.
	Addr string
	// Metrics are served at /metrics. Required.
	Metrics *Metrics
	// Ready says whether the daemon is ready (nil) or why not; /readyz
	// answers 200 or 503 with the reason. Nil means always ready.
	Ready func() error
	// Logger receives the listener's errors. Default: discard.
	Logger *slog.Logger
}

// Server serves /metrics, /healthz (the process is alive) and /readyz (the
// daemon can do its job) over HTTP.
type Server struct {
	cfg HTTPConfig
	ln  net.Listener
	srv *http.Server
}

// Listen binds cfg.Addr; the server answers once Serve runs.
func Listen(cfg HTTPConfig) (*Server, error) {
	if cfg.Addr == "" || cfg.Metrics == nil {
		return nil, errors.New("metrics: Addr and Metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.Prometheus(), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return &Server{cfg: cfg, ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}}, nil
}

// Addr returns the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends, then shuts down (waiting up to 2 s
// for requests in flight) and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// ErrNotReady is what Readiness returns, wrapped with the reason, while a
// daemon cannot do its job yet.
var ErrNotReady = errors.New("not ready")

// instrument wraps a daemon's handler so every operation is timed by
// operation and result (ok, or the error code it answers with), open
// watches are counted, and refusals for a limit are logged, sparingly: an
// abusive peer must not be able to flood the log.
func instrument(m *metrics.Metrics, log *slog.Logger, next handlerFunc) handlerFunc {
	limits := &limitLog{log: log, last: make(map[wire.Code]time.Time), since: make(map[wire.Code]int)}
	return func(ctx context.Context, c *call) error {
		if c.op == wire.OpWatch {
			m.WatchStarted()
			defer m.WatchDone()
		}
		start := time.Now()
		err := next(ctx, c)
		result := "ok"
		if err != nil {
			code := wire.ToError(err).Code
			result = code.String()
			switch code {
			case wire.CodeTooLarge, wire.CodeRateLimited, wire.CodeUnavailable:
				limits.note(code, c.op, c.peer)
			}
		}
		m.Operation(c.op.String(), result, time.Since(start))
		return err
	}
}

// limitLog logs requests refused for a limit at most once every
// limitLogEvery per error code, with how many were refused since.
type limitLog struct {
	log   *slog.Logger
	mu    sync.Mutex
	last  map[wire.Code]time.Time
	since map[wire.Code]int
}

const limitLogEvery = 10 * time.Second

func (l *limitLog) note(code wire.Code, op wire.Op, peer wire.Fingerprint) {
	l.mu.Lock()
	l.since[code]++
	now := time.Now()
	if now.Sub(l.last[code]) < limitLogEvery {
		l.mu.Unlock()
		return
	}
	n := l.since[code]
	l.last[code], l.since[code] = now, 0
	l.mu.Unlock()
	l.log.Info("limit hit", "result", code.String(), "op", op.String(), "peer", peer.Short(), "refused_since_last_logged", n)
}

// stats is the server's state for metrics, read at scrape time.
func (s *server) stats() metrics.ServerStats {
	s.mu.Lock()
	conns := len(s.conns)
	s.mu.Unlock()
	return metrics.ServerStats{
		Connections: conns,
		Streams:     int(s.active.Load()),
		Handshakes:  int(s.handshakes.Load()),
		Retries:     int(s.retries.Load()),
	}
}

// listening reports whether the server has bound its socket and is not
// shutting down.
func (s *server) listening() error {
	select {
	case <-s.stopping:
		return errors.New("shutting down")
	default:
	}
	select {
	case <-s.ready:
		return nil
	default:
		return errors.New("not listening yet")
	}
}

// groupStats reports every hosted group for metrics, read at scrape time.
func (d *GroupDaemon) groupStats() map[string]metrics.GroupStats {
	d.mu.Lock()
	order := d.order
	d.mu.Unlock()
	out := make(map[string]metrics.GroupStats, len(order))
	for _, g := range order {
		st := g.log.Stats()
		out[g.name] = metrics.GroupStats{
			Members: g.memberCount(), Messages: st.Messages, Bytes: st.Bytes, LastSeq: st.Last,
			AppendedBytes: st.AppendedBytes, Duplicates: st.Duplicates, Evicted: st.Evicted,
		}
	}
	return out
}

// Readiness reports whether the daemon can do its job: it listens, is not
// shutting down, and, when it registers its groups, the registry has them
// now. The error wraps ErrNotReady and says why.
func (d *GroupDaemon) Readiness() error {
	if err := d.srv.listening(); err != nil {
		return errors.Join(ErrNotReady, err)
	}
	if (d.cfg.Registry != "" || d.cfg.Discover) && !d.registered.Load() {
		return errors.Join(ErrNotReady, errors.New("groups not registered with a registry"))
	}
	return nil
}

// Readiness reports whether the registry serves: it listens and is not
// shutting down. The error wraps ErrNotReady and says why.
func (r *Registry) Readiness() error {
	if err := r.srv.listening(); err != nil {
		return errors.Join(ErrNotReady, err)
	}
	return nil
}

// leaseCount is the number of groups listed, for metrics.
func (r *Registry) leaseCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.leases)
}

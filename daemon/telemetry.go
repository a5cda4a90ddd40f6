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
// abusive peer must not be able to flood the log. now is the daemon's
// clock, which paces the refusals' log.
func instrument(m *metrics.Metrics, log *slog.Logger, now func() time.Time, next handlerFunc) handlerFunc {
	limits := newLimitLog(log, now)
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
			case wire.CodeTooLarge, wire.CodeRateLimited, wire.CodeUnavailable, wire.CodeUnauthorized:
				limits.note(c.op, code, c.peer, err)
			}
		}
		m.Operation(c.op.String(), result, time.Since(start))
		return err
	}
}

// limitLog logs requests refused for a limit (or for a wrong secret or
// another key's lease) at most once every limitLogEvery per operation and
// error code, with how many were refused since: a peer that is refused a
// thousand times a second costs the log one line every ten seconds for
// each kind of refusal, however many keys and addresses it uses.
type limitLog struct {
	log   *slog.Logger
	kinds sparse[limitKind]
}

// limitKind is what limitLog counts refusals by: the operation and the code.
type limitKind struct {
	op   wire.Op
	code wire.Code
}

const limitLogEvery = 10 * time.Second

func newLimitLog(log *slog.Logger, now func() time.Time) *limitLog {
	return &limitLog{log: log, kinds: sparse[limitKind]{every: limitLogEvery, now: now}}
}

// note counts a refusal, and logs it if its kind was not logged within
// limitLogEvery. err is the error the peer is told: it says which limit,
// and never holds a secret or a message body.
func (l *limitLog) note(op wire.Op, code wire.Code, peer wire.Fingerprint, err error) {
	ok, suppressed := l.kinds.allow(limitKind{op, code})
	if !ok {
		return
	}
	level := slog.LevelInfo
	if code == wire.CodeUnavailable {
		level = slog.LevelWarn // a capacity limit: the operator may want to raise it
	}
	l.log.Log(context.Background(), level, "limit hit", "op", op.String(), "result", code.String(), "peer", peer.Short(),
		"reason", wire.ToError(err).Message, "refused_since_last_logged", suppressed)
}

// sparse picks which of a flood of like events to log: at most one per
// every for each key, on the clock now. Its zero value (with every and now
// set) is ready; it holds one entry per key, so its keys must be few.
type sparse[K comparable] struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[K]*sparseCount
}

type sparseCount struct {
	last  time.Time // when the key was last allowed
	since int       // events since then
}

// allow counts an event of key k, and says whether to log it and how many
// of k's events were not logged since the last one that was. A clock that
// stepped back allows the event.
func (s *sparse[K]) allow(k K) (ok bool, suppressed int) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[K]*sparseCount)
	}
	n := s.keys[k]
	if n == nil {
		n = &sparseCount{}
		s.keys[k] = n
	}
	n.since++
	if d := now.Sub(n.last); !n.last.IsZero() && d >= 0 && d < s.every {
		return false, 0
	}
	suppressed = n.since - 1
	n.last, n.since = now, 0
	return true, suppressed
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
			AppendedBytes: st.AppendedBytes, Duplicates: g.duplicates.Load(), Evicted: st.Evicted,
		}
	}
	return out
}

// Readiness reports whether the daemon can do its job: it listens, is not
// shutting down, and, when it registers its groups, some registry lists
// every group now. The error wraps ErrNotReady and says why.
func (d *GroupDaemon) Readiness() error {
	if err := d.srv.listening(); err != nil {
		return errors.Join(ErrNotReady, err)
	}
	if (len(d.cfg.Registries) > 0 || d.cfg.Discover) && !d.registered.Load() {
		return errors.Join(ErrNotReady, errors.New("no registry lists every group"))
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
	return r.leases.len()
}

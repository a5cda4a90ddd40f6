package server

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/huddle-chat/huddle/daemon/internal/sparse"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// Telemetry: every operation timed and counted, refusals for a limit
// logged sparingly, and the server's state for metrics and tests.

// instrument wraps a daemon's handler so every operation is timed by
// operation and result (ok, or the error code it answers with), open
// watches are counted, and refusals for a limit are logged, sparingly: an
// abusive peer must not be able to flood the log. now is the daemon's
// clock, which paces the refusals' log. An operation its handler left to
// be answered later (ErrLater) is timed when Call.End ends it, by the
// returned observe. Once stopping is closed, an operation refused as
// unavailable was refused because the server is shutting down: no limit,
// and not logged as one (each watch ended so was a warning, on every
// restart of a daemon that clients watch).
func instrument(m *metrics.Metrics, log *slog.Logger, now func() time.Time, stopping <-chan struct{}, next Handler) (h Handler, observe func(*Call, error)) {
	limits := newLimitLog(log, now)
	observe = func(c *Call, err error) {
		result := "ok"
		if err != nil {
			code := wire.ToError(err).Code
			result = code.String()
			switch code {
			case wire.CodeTooLarge, wire.CodeRateLimited, wire.CodeUnavailable, wire.CodeUnauthorized:
				if code != wire.CodeUnavailable || !closed(stopping) {
					limits.note(c.op, code, c.peer, err)
				}
			}
		}
		m.Operation(c.op.String(), result, time.Since(c.start))
	}
	h = func(ctx context.Context, c *Call) error {
		if c.op == wire.OpWatch {
			m.WatchStarted()
			defer m.WatchDone()
		}
		c.start = time.Now()
		err := next(ctx, c)
		if err == ErrLater {
			return err // c is another goroutine's now: End observes it
		}
		observe(c, err)
		return err
	}
	return h, observe
}

// limitLog logs requests refused for a limit (or for a wrong secret or
// another key's lease) at most once every LimitLogEvery per operation and
// error code, with how many were refused since: a peer that is refused a
// thousand times a second costs the log one line every ten seconds for
// each kind of refusal, however many keys and addresses it uses.
type limitLog struct {
	log   *slog.Logger
	kinds sparse.Sampler[limitKind]
}

// limitKind is what limitLog counts refusals by: the operation and the code.
type limitKind struct {
	op   wire.Op
	code wire.Code
}

// LimitLogEvery is how often at most the server logs each kind of refusal
// for a limit (an operation and its error code).
const LimitLogEvery = 10 * time.Second

func newLimitLog(log *slog.Logger, now func() time.Time) *limitLog {
	return &limitLog{log: log, kinds: sparse.Sampler[limitKind]{Every: LimitLogEvery, Now: now}}
}

// note counts a refusal, and logs it if its kind was not logged within
// LimitLogEvery. err is the error the peer is told: it says which limit,
// and never holds a secret or a message body.
func (l *limitLog) note(op wire.Op, code wire.Code, peer wire.Fingerprint, err error) {
	ok, suppressed := l.kinds.Allow(limitKind{op, code})
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

// Stats is a server's state at one moment.
type Stats struct {
	Connections int // open now
	Streams     int // operations being served now, watches included
	Handshakes  int // handshakes in progress
	Retries     int // connection attempts sent a QUIC Retry, ever
	// Held is what the peers hold of the server's shares now; Cuts
	// counts the stalled streams cut off for a newcomer, ever, by the
	// resource the newcomer needed (shares.go).
	Held, Cuts Amounts
}

// Stats returns the server's state now.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	conns := len(s.conns)
	s.mu.Unlock()
	s.shares.mu.Lock()
	held, cuts := s.shares.held, s.shares.cuts
	s.shares.mu.Unlock()
	return Stats{
		Connections: conns,
		Streams:     int(s.active.Load()),
		Handshakes:  int(s.handshakes.Load()),
		Retries:     int(s.retries.Load()),
		Held:        held.exported(),
		Cuts:        cuts.exported(),
	}
}

// metricsStats is the server's state for metrics, read at scrape time.
func (s *Server) metricsStats() metrics.ServerStats {
	st := s.Stats()
	return metrics.ServerStats{Connections: st.Connections, Streams: st.Streams, Handshakes: st.Handshakes, Retries: st.Retries}
}

// SourceStats is what one source (an IPv4 address, or an IPv6 /64: see
// Source) has of a server at one moment.
type SourceStats struct {
	Conns int     // connections open
	Held  Amounts // what its operations hold of the shares
}

// Sources returns what each source with a connection open, or an
// operation still running, has of the server now: the units its
// per-address limits count.
func (s *Server) Sources() map[netip.Prefix]SourceStats {
	out := make(map[netip.Prefix]SourceStats)
	s.mu.Lock()
	for p, n := range s.perAddr {
		out[p] = SourceStats{Conns: n}
	}
	s.mu.Unlock()
	s.shares.mu.Lock()
	for p, a := range s.shares.addrs {
		st := out[p]
		st.Held = a.held.exported()
		out[p] = st
	}
	s.shares.mu.Unlock()
	return out
}

// Listening reports whether the server has bound its socket and is not
// shutting down; its error says which it is not.
func (s *Server) Listening() error {
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

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

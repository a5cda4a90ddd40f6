package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// A connection's liveness while calls wait on it.
//
// A daemon killed and started again on the same address (its key, its
// state) ignores the old connection's packets, and tells the client so
// with a QUIC stateless reset (its reset key is derived from its own key:
// daemon/server) only in answer to a packet of more than 42 bytes: quic-go
// answers nothing shorter, so that a reset never answers a reset. A
// request is longer, so a call made after the restart fails at once and
// is retried on a new connection. But a call already waiting for its reply
// when the daemon died sends nothing more than acknowledgements, flow
// control updates and, after 10 s, keep-alive PINGs, all shorter: it
// waited for its deadline, or for the 30 s idle timeout (a fetch whose
// reply was half read waited 30 s; e2e TestRestartInPlace).
//
// So while calls wait on a connection, a liveness watch looks at what
// arrives on it. When nothing at all has come for probeAt (about a second)
// and the server is a group daemon, it asks the daemon for a group's info
// on the same connection: a live daemon acknowledges the request within
// its 25 ms acknowledgement delay (and answers it); a restarted one
// answers it with a stateless reset, which ends the connection at once,
// and the waiting calls are retried on a new one (with the same message
// IDs: a send stored before the kill is acknowledged as a duplicate,
// never stored twice). When nothing has come for silenceFor since the
// first calls' requests or since the probe was sent, the server is taken
// for gone and the connection closed: the calls fail as a lost
// connection, which call retries on a new one. A probe has that long to
// draw its acknowledgement, as a request has: the round trip may have
// grown past what the smoothed round trip says (a congested or roaming
// link), and a probe given only the rest of the silence bound (half a
// second) closed such a live connection. A registry, which has no
// operation cheap enough to probe it with, is so taken for gone only if
// nothing at all came since its calls began to wait (a live one
// acknowledges their requests at once).
//
// A connection with no call waiting is not watched and costs nothing: the
// request of its next call draws the reset. A Watch counts as waiting until
// its daemon accepts it; after that its heartbeats tell (latePing). The
// cost: one info operation per probeAt of silence, and only while a call
// waits on a silent connection (a send to a daemon whose disk is slow, a
// Fetch whose yield holds the daemon back by flow control); none on an idle
// connection, and one timer per connection rather than per call. A cell's
// attempts are not counted: they watch their connection themselves, sooner
// (cellSilentFor), and another member answers.
//
// A lone watcher so notices a restart in place within its heartbeat and a
// quarter (~6 s). Nothing at the QUIC level tells it sooner for less than
// a packet a second (quic-go v0.65, read for session 15): a keep-alive PING
// is at most 41 bytes whatever the connection ID (1 + 20 + 4 for the
// packet number and the header protection's sample + 16), so it never
// draws a reset (quic-go answers only packets over 42 bytes:
// MinStatelessResetSize), and quic-go pads nothing it sends after the
// handshake but path MTU probes (until their search ends, soon after the
// handshake) and PATH_CHALLENGEs, which it sends only to validate a new
// path (Conn.AddPath: a socket of its own). A shorter idle timeout needs
// keep-alives as often on every connection, idle ones too; a QUIC datagram
// probe (RFC 9221) is a transport parameter both sides would have to
// offer, and still a packet a second on every idle watch, where the
// heartbeat costs one each 5 s.
type liveness struct {
	conn *quic.Conn
	p    *peer

	mu      sync.Mutex
	waiting int // calls waiting on conn
	timer   *time.Timer
	heard   uint64    // conn's PacketsReceived when last looked at
	quiet   time.Time // since when nothing has arrived while calls waited
	// asked is when what the server must answer was sent with nothing
	// come since: the first waiting call's request, or the first probe
	// of this silence. Zero once something came (a registry, never
	// probed, then waits for its answers as long as they take).
	asked   time.Time
	probing bool // a probe is in flight
	// starved: the probe in flight waits for stream credit (every stream
	// the server allows is open), so nothing has been asked of the server
	// that it has not acknowledged: its silence is not held against it.
	starved bool
	closed  bool // conn was closed for its silence
	// path is the path, from a socket of its own, the starved probe checks
	// (probePath); nil until first needed. Its transport is closed with
	// conn: quic-go registers conn with it for good, and closing it closes
	// conn. The one path is probed again each time: each new one would
	// take one of the connection IDs the server issued.
	path *quic.Path
	// pathSent counts the datagrams the path's socket sent: a probe that
	// sent none was never made (the server gave no connection ID to spare),
	// and its silence tells nothing (probePath).
	pathSent *countedConn
	// noPath is why the path cannot be probed, once known: it is not
	// tried again on this connection.
	noPath error
}

// newLiveness returns conn's liveness watch; p.mu is held.
func newLiveness(p *peer, conn *quic.Conn) *liveness {
	return &liveness{conn: conn, p: p}
}

// probeAt and silenceFor are how long a connection on which calls wait may
// be silent before it is probed, and before it is taken for dead:
// silentAfter and two thirds of it, or on a slow path (four smoothed round
// trips over silentAfter) the same shares of four round trips, so that the
// probe's acknowledgement has a round trip and more to come back.
func silenceBounds(stats quic.ConnectionStats) (probeAt, silenceFor time.Duration) {
	silenceFor = max(silentAfter, 4*stats.SmoothedRTT)
	return silenceFor * 2 / 3, silenceFor
}

// begin counts a call as waiting on the connection; end it with end.
func (l *liveness) begin() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting++; l.waiting > 1 {
		return
	}
	stats := l.conn.ConnectionStats()
	now := time.Now()
	l.heard, l.quiet, l.asked = stats.PacketsReceived, now, now
	probeAt, _ := silenceBounds(stats)
	if l.timer == nil {
		l.timer = time.AfterFunc(probeAt/4, l.look)
	} else {
		l.timer.Reset(probeAt / 4)
	}
}

// end ends a call begin counted.
func (l *liveness) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting--; l.waiting == 0 {
		l.timer.Stop()
	}
}

// look is the timer's: it notes whether anything arrived, probes a
// connection silent for probeAt, closes one that drew nothing for
// silenceFor from what it was asked, and looks again when the next of
// those is due.
func (l *liveness) look() {
	l.mu.Lock()
	if l.waiting == 0 || l.closed {
		l.mu.Unlock()
		return
	}
	now, stats := time.Now(), l.conn.ConnectionStats()
	if stats.PacketsReceived != l.heard {
		l.heard, l.quiet, l.asked = stats.PacketsReceived, now, time.Time{}
	}
	probeAt, silenceFor := silenceBounds(stats)
	quiet := now.Sub(l.quiet)
	if !l.asked.IsZero() && !l.starved && now.Sub(l.asked) >= silenceFor {
		l.closed = true
		l.mu.Unlock()
		l.p.c.cfg.Logger.Debug("server silent; dropping the connection", "remote", l.conn.RemoteAddr(), "after", quiet)
		l.conn.CloseWithError(0, "server silent")
		return
	}
	// The group a probe names is the peer's when the probe is due, not
	// when the connection was made: a connection dialled by a call naming
	// no group (CellStatus) and shared since by a Group handle was never
	// probed, and its daemon's restart in place noticed only by the 10 s
	// keep-alive. (p.mu is taken under l.mu, never the other way.)
	//
	// A group daemon asked only its cell's questions (huddle cell add,
	// remove and status: no group named) is probed with the info of no
	// group, which a live daemon refuses at once (not found): it waited
	// for the 30 s idle timeout, a change asked of a leader killed after
	// it acknowledged the request (internal/jepsen's
	// membership-kill-leader).
	if quiet >= probeAt && !l.probing {
		l.p.mu.Lock()
		group, daemon := l.p.probe, l.p.daemon
		l.p.mu.Unlock()
		if (group != (wire.UUID{}) || daemon) && l.p.c.start(func(ctx context.Context) { l.send(ctx, group) }) == nil {
			l.probing = true
			if l.asked.IsZero() {
				l.asked = now
			}
		}
	}
	// Looking a quarter of probeAt apart, what arrived is dated that
	// closely: a connection is probed at most probeAt and a quarter after
	// its last packet.
	next := probeAt / 4
	if quiet < probeAt {
		next = min(next, probeAt-quiet)
	}
	if !l.asked.IsZero() && !l.starved {
		next = min(next, silenceFor-now.Sub(l.asked))
	}
	l.timer.Reset(next)
	l.mu.Unlock()
}

// send probes the connection: an info request for group on a stream of
// its own, whose outcome does not matter, only what arrives because of
// it (look reads that) or the reset it draws.
//
// When every stream the server allows is open (a thousand calls waiting
// on a slow daemon, its max_streams), the probe waits for stream credit,
// starved, for as long as calls wait: until then it has asked nothing,
// and the server, which acknowledged every request it was sent, owes the
// client nothing, so the connection is not closed for its silence (look).
// A live server gives credit back as it answers; the probe then goes out
// and has silenceFor from then to draw its acknowledgement. While it waits,
// nothing at all coming for silenceFor has it probe the path instead
// (probePath), which needs no stream.
func (l *liveness) send(ctx context.Context, group wire.UUID) {
	defer func() {
		l.mu.Lock()
		l.probing, l.starved = false, false
		l.mu.Unlock()
	}()
	st, err := l.conn.OpenStream()
	if errors.As(err, new(*quic.StreamLimitReachedError)) {
		st, err = l.waitCredit(ctx)
	}
	if err != nil {
		l.p.c.cfg.Logger.Debug("connection silent while calls waited; could not probe the server", "remote", l.conn.RemoteAddr(), "err", err)
		return
	}
	_, silenceFor := silenceBounds(l.conn.ConnectionStats())
	ctx, cancel := context.WithTimeout(ctx, silenceFor)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { cancelStream(st) })
	defer stop()
	err = l.ask(st, group)
	l.p.c.cfg.Logger.Debug("connection silent while calls waited; probed the server", "remote", l.conn.RemoteAddr(), "err", err)
}

// waitCredit opens the probe's stream once the server gives stream credit
// back, while calls wait on the connection; it returns nil and an error
// when none wait any more. The probe counts as starved meanwhile.
func (l *liveness) waitCredit(ctx context.Context) (*quic.Stream, error) {
	l.mu.Lock()
	l.starved = true
	l.mu.Unlock()
	l.p.c.cfg.Logger.Debug("connection silent while calls waited; every stream in use, the probe waits for credit", "remote", l.conn.RemoteAddr())
	heard, quiet := l.conn.ConnectionStats().PacketsReceived, time.Now()
	for {
		// Looking every probeAt/4 whether calls still wait: one that ends
		// gives a credit back, so this wait outlives the calls only when
		// the server is gone, and then only until the connection's end.
		probeAt, _ := silenceBounds(l.conn.ConnectionStats())
		wait, cancel := context.WithTimeout(ctx, probeAt/4)
		st, err := l.conn.OpenStreamSync(wait)
		cancel()
		if err == nil {
			l.mu.Lock()
			// The probe's request goes out now: the server has silenceFor
			// from now to acknowledge it.
			l.starved, l.asked = false, time.Now()
			l.mu.Unlock()
			return st, nil
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		l.mu.Lock()
		over := l.waiting == 0 || l.closed
		l.mu.Unlock()
		if over {
			return nil, errNoneWaiting
		}
		stats := l.conn.ConnectionStats()
		if stats.PacketsReceived != heard {
			heard, quiet = stats.PacketsReceived, time.Now()
			continue
		}
		_, silenceFor := silenceBounds(stats)
		if time.Since(quiet) < silenceFor {
			continue
		}
		// Nothing at all came for silenceFor, and no request can go out
		// to draw an answer: the path is probed.
		err = l.probePath(ctx, silenceFor)
		switch {
		case err == nil:
			// The server answered: alive, and slow to answer the calls.
			heard, quiet = l.conn.ConnectionStats().PacketsReceived, time.Now()
			l.p.c.cfg.Logger.Debug("every stream in use and the connection silent: the server answered a probe of the path", "remote", l.conn.RemoteAddr())
		case l.conn.Context().Err() != nil || ctx.Err() != nil:
			return nil, err // the connection ended meanwhile, or the client closes
		case errors.Is(err, errNoPathProbe):
			// Nothing to tell by: calls are left to their deadlines, and
			// to QUIC's idle timeout, as before.
			heard, quiet = l.conn.ConnectionStats().PacketsReceived, time.Now()
			l.p.c.cfg.Logger.Debug("every stream in use and the connection silent; the path cannot be probed", "remote", l.conn.RemoteAddr(), "err", err)
		default:
			l.mu.Lock()
			l.closed = true
			l.mu.Unlock()
			l.p.c.cfg.Logger.Debug("server silent, every stream in use, and no answer to a probe of the path; dropping the connection", "remote", l.conn.RemoteAddr(), "err", err)
			l.conn.CloseWithError(0, "server silent")
			return nil, err
		}
	}
}

// probePath probes the connection's path: from a socket of its own, a
// PATH_CHALLENGE padded to a full datagram, as QUIC validates a path
// before it migrates there (RFC 9000 §8.2; the server does not migrate:
// the probe carries nothing else). A live server answers it (PATH_RESPONSE:
// nil). A dead one answers nothing within d (an error), nor does one
// restarted in place so far as this connection can tell (its stateless
// reset goes to the probe's socket, where quic-go v0.65 does not match it
// to the connection): either way the connection is gone. The probe needs
// no stream, and so reaches a server whose every stream is a waiting
// call's, where an info request cannot go out, and the calls'
// acknowledgements and keep-alives, 42 bytes or less, draw no reset:
// before session 16 such calls waited for their deadlines, or QUIC's idle
// timeout (30 s). errNoPathProbe: the path could not be probed (the
// server disabled migration, or no socket), which tells nothing.
//
// Nor does a probe that never went out: a path's PATH_CHALLENGE goes out
// under a connection ID the server issued for it (NEW_CONNECTION_ID), and
// quic-go holds a probe back until it has one to spare. quic-go's servers
// issue three; RFC 9000 asks none of a server, and another QUIC stack may
// issue none, or they may all be taken. Such a probe ended at d
// unanswered, as a dead server's does, and the connection of a live
// server, slow with every stream in use, was closed (until session 17):
// now a probe whose socket sent nothing is errNoPathProbe, and the path is
// not tried again on this connection (its calls are left to their
// deadlines and QUIC's idle timeout, as before session 16).
func (l *liveness) probePath(ctx context.Context, d time.Duration) error {
	path, sent, err := l.probedPath()
	if err != nil {
		return err
	}
	before := sent.writes.Load()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err = path.Probe(ctx)
	if err != nil && sent.writes.Load() == before && l.conn.Context().Err() == nil {
		err = fmt.Errorf("%w: no probe went out in %v (no connection ID to spare from the server): %w", errNoPathProbe, d, err)
		l.mu.Lock()
		l.noPath = err
		l.mu.Unlock()
	}
	return err
}

// errNoPathProbe: probePath could not probe the path.
var errNoPathProbe = errors.New("cannot probe the path")

// probedPath returns the path probePath probes and its socket's count of
// datagrams sent, adding the path (and opening its socket) the first
// time; or errNoPathProbe.
func (l *liveness) probedPath() (*quic.Path, *countedConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.noPath != nil {
		return nil, nil, l.noPath
	}
	if l.path != nil {
		return l.path, l.pathSent, nil
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errNoPathProbe, err)
	}
	// quic-go takes the socket as a plain net.PacketConn (no batched or
	// ancillary-data I/O: a probe is a datagram now and then), sizing its
	// buffers as on any other socket.
	sent := &countedConn{udp: udp}
	tr := &quic.Transport{Conn: sent}
	path, err := l.conn.AddPath(tr)
	if err != nil {
		tr.Close()
		udp.Close()
		l.noPath = fmt.Errorf("%w: %w", errNoPathProbe, err)
		return nil, nil, l.noPath
	}
	l.path, l.pathSent = path, sent
	context.AfterFunc(l.conn.Context(), func() {
		tr.Close()
		udp.Close()
	})
	return path, sent, nil
}

// countedConn is a UDP socket that counts the datagrams written to it.
type countedConn struct {
	udp    *net.UDPConn
	writes atomic.Uint64
}

func (c *countedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.writes.Add(1)
	return c.udp.WriteTo(b, addr)
}

func (c *countedConn) ReadFrom(b []byte) (int, net.Addr, error) { return c.udp.ReadFrom(b) }
func (c *countedConn) Close() error                             { return c.udp.Close() }
func (c *countedConn) LocalAddr() net.Addr                      { return c.udp.LocalAddr() }
func (c *countedConn) SetDeadline(t time.Time) error            { return c.udp.SetDeadline(t) }
func (c *countedConn) SetReadDeadline(t time.Time) error        { return c.udp.SetReadDeadline(t) }
func (c *countedConn) SetWriteDeadline(t time.Time) error       { return c.udp.SetWriteDeadline(t) }
func (c *countedConn) SetReadBuffer(n int) error                { return c.udp.SetReadBuffer(n) }
func (c *countedConn) SetWriteBuffer(n int) error               { return c.udp.SetWriteBuffer(n) }
func (c *countedConn) SyscallConn() (syscall.RawConn, error)    { return c.udp.SyscallConn() }

// errNoneWaiting: the probe waited for stream credit until no call waited.
var errNoneWaiting = errors.New("no call waits any more")

// ask writes the probe's request on st and reads its answer's first
// frame (an info answer has one).
func (l *liveness) ask(st *quic.Stream, group wire.UUID) error {
	frame, err := encodeRequest(wire.OpInfo, wire.GroupRef{Group: group})
	if err != nil {
		cancelStream(st)
		return err
	}
	_, err = requestWriter{st}.Write(*frame)
	putRequestFrame(frame)
	if err != nil {
		cancelStream(st)
		return err
	}
	st.Close()
	buf := responseBufs.Get().(*[]byte)
	defer putResponseBuf(buf)
	if _, _, err = readResponse(st, buf); err == nil && finished(st) {
		return nil
	}
	st.CancelRead(codeCancelled)
	return err
}

package cell

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// A member that stops, restarts or cannot be reached is normal operation
// for a cell, not an error: raft retries it on its own, and fails one RPC
// after another meanwhile (every heartbeat, with backoff). The transport
// reports each change of a member's reachability once, at warn (lost) and
// info (reached again) level, as raft's TCP connections see it (tcp.go: a
// dial that fails, an RPC that times out, a refusal of this daemon's key,
// a read that succeeds on a connection dialed since the link was lost, a
// dial that reaches it: checkLink), and raft's own lines about those
// failed RPCs go to debug level (hclog.go): their error is a *linkError.
// The QUIC connections' ends are logged at debug level.

// linkError is a failure of the link to a member: a raft connection's I/O
// or a dial. Its message is the cause's.
type linkError struct{ err error }

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// asLinkError returns err as a *linkError; io.EOF (a connection the peer
// ended on purpose, which raft tells apart by identity) and nil are kept.
func asLinkError(err error) error {
	var le *linkError
	if err == nil || err == io.EOF || errors.As(err, &le) {
		return err
	}
	return &linkError{err}
}

// isLinkError reports whether err, or an error it wraps (errors.Unwrap, or
// Cause as msgpack's errors have it), is a *linkError.
func isLinkError(err error) bool {
	for depth := 0; err != nil && depth < 16; depth++ {
		if _, ok := err.(*linkError); ok {
			return true
		}
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Cause() error }:
			err = e.Cause()
		default:
			return false
		}
	}
	return false
}

// link is what the transport knows of its connection to one member.
type link struct {
	down atomic.Bool // read without mu on every raft read (tcp.go); set under it
	// losses counts the times the link was lost: a connection dialed
	// before the last loss vouches for nothing by a read (tcp.go).
	losses   atomic.Uint64
	checking atomic.Bool // checkLink's dial is under way
	mu       sync.Mutex
	seen     bool          // reached at least once
	changed  chan struct{} // closed, and replaced, when down changes
}

// link returns addr's link.
func (t *Transport) link(addr string) *link {
	t.linksMu.Lock()
	defer t.linksMu.Unlock()
	l := t.links[addr]
	if l == nil {
		l = &link{changed: make(chan struct{})}
		t.links[addr] = l
	}
	return l
}

// setDown records whether the link is down, and reports whether that
// changed it; a change wakes whoever waits on changed.
func (l *link) setDown(down bool) bool {
	if l.down.Load() == down {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down.Load() == down {
		return false
	}
	if down {
		l.losses.Add(1) // before down is seen: a read then finds its connection older
	}
	l.down.Store(down)
	close(l.changed)
	l.changed = make(chan struct{})
	return true
}

// state reports whether the link is down, and returns a channel closed at
// its next change (the tests wait on it).
func (l *link) state() (down bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down.Load(), l.changed
}

// knownDown reports whether the link to addr is known to be down: it was
// reached, or tried, and is not now.
func (t *Transport) knownDown(addr string) bool {
	t.linksMu.Lock()
	l := t.links[addr]
	t.linksMu.Unlock()
	return l != nil && l.down.Load()
}

// linkUp records that addr answered: logged if it was lost.
func (t *Transport) linkUp(addr string) {
	l := t.link(addr)
	l.mu.Lock()
	first := !l.seen
	l.seen = true
	l.mu.Unlock()
	switch {
	case l.setDown(false):
		t.log.Info("cell: member reached again", t.peerAttrs(addr)...)
	case first:
		t.log.Debug("cell: member reached", t.peerAttrs(addr)...)
	}
}

// checkLink dials addr, once at a time, to learn whether a link known down
// is back, and records it reached if the dial's TLS handshake is done (the
// member presented its key now). A read on a connection dialed before the
// link was lost calls it: the bytes may be an answer the member sent
// before it stopped (it answered, closed its listener, then its
// connections), read after a dial of this daemon's was refused: taken as
// the member reached again, it logged the member lost, reached, lost and
// reached across one restart (TestPeerRestartQuiet at load ~30). A member
// that answers on an old connection while still alive (the link lost by
// one RPC's timeout) is found by the dial.
func (t *Transport) checkLink(addr string) {
	l := t.link(addr)
	if !l.checking.CompareAndSwap(false, true) {
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.checking.Store(false)
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		defer l.checking.Store(false)
		ctx, cancel := context.WithTimeout(t.ctx, warmTimeout)
		defer cancel()
		c, err := t.dialTCP(ctx, addr, true) // a failure is the link's: still down
		if err != nil {
			return
		}
		c.Close()
		t.linkUp(addr)
	}()
}

// linkDown records that addr cannot be reached, for why: logged if it
// could be before (or was never tried).
func (t *Transport) linkDown(addr string, why error) {
	if t.ctx.Err() != nil {
		return // the transport is closing: its own doing
	}
	// A member at a multicast or broadcast address is down for good, and
	// said so once already (refuseGroup).
	if t.link(addr).setDown(true) && !errors.Is(why, ErrGroupAddr) {
		t.log.Warn("cell: member unreachable; raft keeps retrying it", append(t.peerAttrs(addr), "reason", why)...)
	}
}

func (t *Transport) peerAttrs(addr string) []any {
	t.mu.Lock()
	fp := t.peers[addr]
	t.mu.Unlock()
	return []any{"peer", fp.Short(), "addr", addr}
}

// refusedKey reports whether err, of a QUIC connection to a member or a
// stream on it, says the member refused this daemon's key: its TLS check
// failed the handshake (VerifyPeer: a remote crypto error), or it closed
// the connection as not a member's (connRefused), as SetPeers does when
// the key leaves the cell. A daemon that speaks no cell protocol (a group
// daemon without --cell-peer at a member's address) fails the handshake
// too, with no_application_protocol, before any key is checked: that is
// no refusal of this daemon's key (TestPlainDaemonAtMemberAddressNotARefusal).
func refusedKey(err error) bool {
	var tr *quic.TransportError
	var app *quic.ApplicationError
	return errors.As(err, &tr) && tr.Remote && tr.ErrorCode.IsCryptoError() && tr.ErrorCode != noCellProtocol ||
		errors.As(err, &app) && app.Remote && app.ErrorCode == connRefused
}

// noCellProtocol is QUIC's crypto error for TLS's no_application_protocol
// alert (120, RFC 7301 §3.2; RFC 9001 §4.8: 0x100 plus the alert): the
// peer offers none of the ALPNs asked for.
const noCellProtocol = quic.TransportErrorCode(0x100 + 120)

// watch waits for d's QUIC connection to addr to end. If it ended by the
// peer's doing (it stopped, restarted and answered with a stateless reset,
// or went silent past the idle timeout) rather than this daemon's, d is
// forgotten so that the next stream is opened on a new connection. The
// member's link is raft's to report (its TCP connections, tcp.go): the
// QUIC connection's end is logged at debug level only.
func (t *Transport) watch(addr string, d *dialed) {
	defer t.wg.Done()
	ctx := d.conn.Context()
	select {
	case <-ctx.Done():
	case <-t.done:
		return
	}
	cause := context.Cause(ctx)
	var app *quic.ApplicationError
	if errors.As(cause, &app) && !app.Remote {
		return // closed here: replaced, or the peer left the cell
	}
	t.forget(addr, d)
	if refusedKey(cause) {
		// Refused: not a member of the peer's cell (yet, or any more).
		// Dialing again now would be refused again.
		t.log.Debug("cell: member refuses this daemon's key on QUIC", append(t.peerAttrs(addr), "reason", cause)...)
		return
	}
	t.log.Debug("cell: QUIC connection to member ended", append(t.peerAttrs(addr), "reason", cause)...)
	// Dial again at once, quietly: a member that restarted is reached
	// again before the next question to it (progress, members, a
	// catch-up) has to dial; one that is down fails this dial. (Raft's
	// RPCs ride TCP since session 6, tcp.go: this dial neither waits for
	// them nor reports the link, which raft's connections do.)
	dctx, cancel := context.WithTimeout(t.ctx, warmTimeout)
	defer cancel()
	t.conn(dctx, addr)
}

// probeTimeout bounds a probe of a connection.
const probeTimeout = 2 * time.Second

// askProbe reports whether a probe of the connection to fp is to start, as
// a connection fp dialed is accepted (t.mu held). One probe per key is in
// flight at most: each accepted connection asked for one, so a member's key
// dialing without end, its own listener granting no streams, had a
// goroutine wait out probeTimeout for each handshake (hostile round,
// session 17). Asked while one is in flight, it is noted, and the
// goroutine probing (probes) probes once more after: a member that
// restarts while the probe of its old connection is under way still has
// its new connection checked.
func (t *Transport) askProbe(fp wire.Fingerprint) bool {
	if _, inFlight := t.probing[fp]; inFlight {
		t.probing[fp] = true
		return false
	}
	t.probing[fp] = false
	return true
}

// probes probes the connection to fp (askProbe), again while it was asked
// again meanwhile. The transport owns it (t.wg).
func (t *Transport) probes(fp wire.Fingerprint) {
	defer t.wg.Done()
	for {
		t.probe(fp)
		t.mu.Lock()
		probed := t.probed
		t.mu.Unlock()
		if probed != nil {
			probed()
		}
		t.mu.Lock()
		again := t.probing[fp] && t.ctx.Err() == nil
		if !again {
			delete(t.probing, fp)
		} else {
			t.probing[fp] = false
		}
		t.mu.Unlock()
		if !again {
			return
		}
	}
}

// probe checks the connection this daemon dialed to the member whose key
// is fp, which has just dialed this daemon: it may have restarted, and then
// the connection to it is dead without this end knowing yet (its packets
// go unanswered until a retransmission draws a stateless reset, seconds
// later, while the questions asked on it wait out their deadlines). A
// stream opened on it sends a packet at once, padded past the 42 bytes a
// stateless reset needs (question): the restarted daemon answers it with
// a stateless reset, the connection ends (watch), and the next question
// dials a new one. (Raft's own connections are TCP, tcp.go: a restarted
// peer resets them at raft's next write.)
// (Before session 15 the probe was its kind alone, too short to draw
// one: the connection lived on until its idle timeout.)
func (t *Transport) probe(fp wire.Fingerprint) {
	t.mu.Lock()
	var d *dialed
	for addr, key := range t.peers {
		if key == fp {
			d = t.out[addr]
		}
	}
	timeout := cmp.Or(t.probeTimeout, probeTimeout)
	t.mu.Unlock()
	if d == nil {
		return
	}
	select {
	case <-d.ready:
	default:
		return // being dialed: it is new
	}
	if d.conn == nil || d.conn.Context().Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	str, err := d.conn.OpenStreamSync(ctx)
	if err != nil {
		return
	}
	str.Write(question(kindProbe))
	str.Close()
	str.CancelRead(streamClosed)
}

// warm dials every other member of the cell over QUIC, so that a daemon
// that restarted makes itself known at once: each member it dials probes
// its own QUIC connection back (probe), finds it dead and dials again, so
// that its questions to the restarted member (progress, members, a
// catch-up) do not wait out the dead connection's deadlines. Raft's
// heartbeats do not ride these connections (raft is on TCP since
// session 6, tcp.go; its connections warm themselves: raftnet.go).
func (t *Transport) warm() {
	self := t.cfg.Identity.Fingerprint()
	for _, p := range t.peerList() {
		if p.Fingerprint == self {
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			ctx, cancel := context.WithTimeout(t.ctx, warmTimeout)
			defer cancel()
			t.conn(ctx, p.Addr)
		}()
	}
}

// warmTimeout bounds warm's dials.
const warmTimeout = 5 * time.Second

// noteIO records what a failed I/O of a raft connection to addr says of
// the link: a timeout, that the member does not answer; a TLS alert, that
// it refused this daemon's key (with TLS 1.3 a dial succeeds before the
// peer checked it, and the refusal comes with the first read).
func (t *Transport) noteIO(addr string, err error) {
	var op *net.OpError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.linkDown(addr, errors.New("no answer within raft's RPC timeout"))
	case errors.As(err, &op) && op.Op == "remote error":
		t.linkDown(addr, fmt.Errorf("it refuses this daemon's key (not a member of its cell, yet or any more): %w", err))
	}
}

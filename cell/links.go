package cell

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// info (reached again) level, and raft's own lines about those failed RPCs
// go to debug level (hclog.go): their error is a *linkError.

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
	down atomic.Bool
	mu   sync.Mutex
	seen bool // reached at least once
}

// link returns addr's link.
func (t *Transport) link(addr string) *link {
	t.linksMu.Lock()
	defer t.linksMu.Unlock()
	l := t.links[addr]
	if l == nil {
		l = new(link)
		t.links[addr] = l
	}
	return l
}

// linkUp records that addr answered: logged if it was lost.
func (t *Transport) linkUp(addr string) {
	l := t.link(addr)
	l.mu.Lock()
	first := !l.seen
	l.seen = true
	l.mu.Unlock()
	switch {
	case l.down.CompareAndSwap(true, false):
		t.log.Info("cell: member reached again", t.peerAttrs(addr)...)
	case first:
		t.log.Debug("cell: member reached", t.peerAttrs(addr)...)
	}
}

// linkDown records that addr cannot be reached, for why: logged if it
// could be before (or was never tried).
func (t *Transport) linkDown(addr string, why error) {
	if t.ctx.Err() != nil {
		return // the transport is closing: its own doing
	}
	if t.link(addr).down.CompareAndSwap(false, true) {
		t.log.Warn("cell: member unreachable; raft keeps retrying it", append(t.peerAttrs(addr), "reason", why)...)
	}
}

func (t *Transport) peerAttrs(addr string) []any {
	t.mu.Lock()
	fp := t.peers[addr]
	t.mu.Unlock()
	return []any{"peer", fp.Short(), "addr", addr}
}

// watch waits for d's connection to addr to end. If it ended by the
// peer's doing (it stopped, restarted and answered with a stateless reset,
// or went silent past the idle timeout) rather than this daemon's, the
// link is down, and d is forgotten so that the next stream is opened on a
// new connection.
//
// The link is up once the peer answered on the connection: a probe's end
// (with TLS 1.3 a dial succeeds before the peer checked this daemon's key,
// and a peer that refuses it closes the connection just after).
func (t *Transport) watch(addr string, d *dialed) {
	defer t.wg.Done()
	ctx := d.conn.Context()
	if t.answers(d.conn) {
		t.linkUp(addr)
	}
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
	var tr *quic.TransportError
	if errors.As(cause, &tr) && tr.Remote && tr.ErrorCode.IsCryptoError() || errors.As(cause, &app) && app.ErrorCode == connRefused {
		// Refused: not a member of the peer's cell (yet, or any more).
		// Dialing again now would be refused again.
		t.linkDown(addr, fmt.Errorf("it refuses this daemon's key (not a member of its cell, yet or any more): %w", cause))
		return
	}
	t.linkDown(addr, cause)
	// Dial again at once, quietly: a member that restarted is reached
	// again (and said so) without waiting for raft's next RPC to it; one
	// that is down fails this dial, and the link stays down.
	dctx, cancel := context.WithTimeout(t.ctx, warmTimeout)
	defer cancel()
	t.conn(dctx, addr)
}

// answers reports whether the peer answers on conn: it ends a probe
// stream (kindProbe) this daemon opens.
func (t *Transport) answers(conn *quic.Conn) bool {
	ctx, cancel := context.WithTimeout(t.ctx, probeTimeout)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return false
	}
	defer str.CancelRead(streamClosed)
	str.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := str.Write([]byte{kindProbe}); err != nil {
		return false
	}
	str.Close()
	_, err = io.Copy(io.Discard, str)
	return err == nil
}

// probeTimeout bounds a probe of a connection.
const probeTimeout = 2 * time.Second

// probe checks the connection this daemon dialed to the member whose key
// is fp, which has just dialed this daemon: it may have restarted, and then
// the connection to it is dead without this end knowing yet (its packets
// go unanswered until a retransmission draws a stateless reset, seconds
// later, while raft waits on its RPCs). A stream opened on it sends a
// packet at once: the restarted daemon answers it with a stateless reset,
// the connection ends (watch), and raft's next RPC dials a new one.
func (t *Transport) probe(fp wire.Fingerprint) {
	t.mu.Lock()
	var d *dialed
	for addr, key := range t.peers {
		if key == fp {
			d = t.out[addr]
		}
	}
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
	ctx, cancel := context.WithTimeout(t.ctx, probeTimeout)
	defer cancel()
	str, err := d.conn.OpenStreamSync(ctx)
	if err != nil {
		return
	}
	str.Write([]byte{kindProbe})
	str.Close()
	str.CancelRead(streamClosed)
}

// warm dials every other member of the cell, so that a daemon that
// restarted makes itself known at once: each member it dials probes its
// own connection back (probe), finds it dead and dials again, and the
// leader's heartbeats reach the restarted member before its election
// timeout makes it stand for election.
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
// the link: a timeout, that the member does not answer.
func (t *Transport) noteIO(addr string, err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.linkDown(addr, errors.New("no answer within raft's RPC timeout"))
	}
}

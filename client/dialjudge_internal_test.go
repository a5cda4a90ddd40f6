package client

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// silentMember returns the address of a UDP socket on loopback that reads
// every packet and drops it (a member that never answers a handshake: a
// leader killed, its address still named) and a key the handle pins
// there. The test's cleanup closes the socket and waits for its reader.
func silentMember(t *testing.T) (string, Fingerprint) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var reader sync.WaitGroup
	t.Cleanup(func() {
		udp.Close()
		reader.Wait()
	})
	reader.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := udp.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return udp.LocalAddr().String(), id.Fingerprint()
}

// connectMember makes the handle's connection to the member at addr
// (fp), as a read or a watch of the handle would, before the test's
// scenario: each try is bounded by the client's DialTimeout, and one may
// fail on a loaded machine, so it tries again until ctx ends.
func connectMember(ctx context.Context, t *testing.T, g *Group, addr string, fp Fingerprint) {
	t.Helper()
	p, err := g.peerAt([]string{addr}, fp)
	if err != nil {
		t.Fatal(err)
	}
	defer g.done(p)
	for {
		_, err := p.get(ctx)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("handshake with the member at %s: %v", addr, err)
		}
	}
}

// TestCellHandshakeIdleTimeoutPassedOver: a dial that quic-go's own
// handshake idle timeout (the client's DialTimeout) ends before the
// attempt's dial bound, widened past it by failed handshakes, is judged
// as a dial that bound ended: the member is passed over (suspected, as
// one whose handshake failed), and the failure counted, doubling the
// member's bound. Until session 23 its error was quic-go's (an
// IdleTimeoutError, or a HandshakeTimeoutError), which the call took for
// a refusal: no suspicion, no count, a pause before the next member. (Which
// ends the dial, quic-go's idle timeout or peer.dial's context, is a race
// of two timers a moment apart: TestHandshakeTimedOut takes each shape.)
func TestCellHandshakeIdleTimeoutPassedOver(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait()
	goneAddr, goneFP := silentMember(t)
	srvB, trB, lnB := rawServer(t, &quic.Config{})
	defer trB.Close()
	serveMember(&wg, lnB, func(st *quic.Stream, seq uint64) {
		wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: seq, Time: 1}}})
	})

	const dialTimeout = time.Second
	cl := newTestClient(t, Config{NoBatching: true, DialTimeout: dialTimeout})
	defer cl.Close()
	gone := wire.Replica{Addr: goneAddr, Fingerprint: goneFP, Leader: true}
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{gone.Addr}, Fingerprint: gone.Fingerprint,
		Replicas: []wire.Replica{gone, {Addr: lnB.Addr().String(), Fingerprint: srvB.Fingerprint()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connectMember(ctx, t, g, lnB.Addr().String(), srvB.Fingerprint())
	// As the handle's earlier dial to the gone member did: its bound
	// doubled, past the client's DialTimeout, which then ends the dial
	// first.
	g.dialed(gone.Fingerprint, false, 0, dialTimeout)
	if b := g.dialBound(gone.Fingerprint); b <= dialTimeout {
		t.Fatalf("the gone member's dial bound %v, want it past DialTimeout %v: the test's premise fails", b, dialTimeout)
	}

	// The send asks the gone member first (the handle is on it), whose
	// dial quic-go ends after DialTimeout; B acknowledges it.
	if _, err := g.Send(ctx, []byte("hi")); err != nil {
		t.Fatalf("send to a cell whose leader is gone and a live member: %v", err)
	}
	g.mu.Lock()
	suspectFP, suspectBound := g.suspectFP, g.suspectBound
	g.mu.Unlock()
	if suspectFP != gone.Fingerprint || suspectBound != dialTimeout {
		t.Errorf("after a dial quic-go ended: member passed over %s under bound %v, want the gone member %s under DialTimeout %v",
			suspectFP.Short(), suspectBound, gone.Fingerprint.Short(), dialTimeout)
	}
	if got, want := g.dialBound(gone.Fingerprint), min(4*dialTimeout, cellAttemptMax); got != want {
		t.Errorf("the gone member's dial bound after a dial quic-go ended: %v, want %v (the failure counted, doubling it)", got, want)
	}
}

// TestHandshakeTimedOut: the errors handshakeTimedOut takes for a dial
// its DialTimeout ended, as peer.dialAny returns them, and one it does not.
func TestHandshakeTimedOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"quic's handshake idle timeout", fmtUnreachable(&quic.IdleTimeoutError{}), true},
		{"quic's handshake timeout", fmtUnreachable(&quic.HandshakeTimeoutError{}), true},
		{"the dial's own context", fmtUnreachable(context.DeadlineExceeded), true},
		{"one address of two", fmtUnreachable(allOf{errors.New("a: refused"), &quic.HandshakeTimeoutError{}}), true},
		{"a refusal", fmtUnreachable(&quic.TransportError{ErrorCode: quic.ConnectionRefused, Remote: true}), false},
	} {
		if got := handshakeTimedOut(tc.err); got != tc.want {
			t.Errorf("%s: handshakeTimedOut(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func fmtUnreachable(err error) error { return errors.Join(ErrUnreachable, err) }

// TestCellDialBoundPerMember: the handshakes a member failed widen that
// member's dial bound, not the others': a member gone (C), its dial failed,
// leaves the next member dialled (D, gone too, a leader killed a moment
// ago) the path's own bound, and a handshake completed with another member
// (A) leaves C's bound widened. Until session 23 the bound was the
// handle's: D's dial got twice C's bound (the test reads D's bound from
// the client's events), and A's handshake set C's back to cellDialFor.
func TestCellDialBoundPerMember(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait()
	srvA, trA, lnA := rawServer(t, &quic.Config{})
	defer trA.Close()
	serveMember(&wg, lnA, func(st *quic.Stream, seq uint64) {
		wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: seq, Time: 1}}})
	})
	cAddr, cFP := silentMember(t)
	dAddr, dFP := silentMember(t)

	var events testlog.Buffer
	cl := newTestClient(t, Config{NoBatching: true,
		Logger: slog.New(slog.NewTextHandler(&events, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	defer cl.Close()
	a := wire.Replica{Addr: lnA.Addr().String(), Fingerprint: srvA.Fingerprint()}
	c := wire.Replica{Addr: cAddr, Fingerprint: cFP, Leader: true}
	d := wire.Replica{Addr: dAddr, Fingerprint: dFP}
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{c.Addr}, Fingerprint: c.Fingerprint,
		Replicas: []wire.Replica{a, c, d}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connectMember(ctx, t, g, a.Addr, a.Fingerprint)
	// As a handshake with A did: the path is measured, and near.
	g.dialed(a.Fingerprint, true, time.Millisecond, 0)

	// The send asks C (the handle is on it), whose dial fails under
	// cellDialFor, then D, whose fails too, then A, which acknowledges.
	if _, err := g.Send(ctx, []byte("hi")); err != nil {
		t.Fatalf("send to a cell of two members gone and a live one: %v", err)
	}
	bounds := map[string][]string{} // each member's failed dials' bounds, from the client's events
	for line := range strings.Lines(events.String()) {
		if !strings.Contains(line, "no handshake with the member within its dial bound") {
			continue
		}
		for _, m := range []wire.Replica{c, d} {
			if strings.Contains(line, m.Addr) {
				_, bound, _ := strings.Cut(line, "bound=")
				bounds[m.Addr] = append(bounds[m.Addr], strings.TrimSpace(bound))
			}
		}
	}
	if len(bounds[c.Addr]) == 0 || len(bounds[d.Addr]) == 0 {
		t.Fatalf("failed dials' bounds: C %v, D %v; want each dialled and failed once at least: the test's premise fails; the client's events:\n%s",
			bounds[c.Addr], bounds[d.Addr], events.String())
	}
	if got, want := bounds[d.Addr][0], cellDialFor.String(); got != want {
		t.Errorf("D's first dial, after C's failed, was bounded by %s, want %s (C's failure is C's alone); the client's events:\n%s", got, want, events.String())
	}
	widened := g.dialBound(c.Fingerprint)
	if widened < 2*cellDialFor {
		t.Fatalf("C's dial bound after its failed dial: %v, want at least %v", widened, 2*cellDialFor)
	}
	// As another handshake with A did.
	g.dialed(a.Fingerprint, true, time.Millisecond, 0)
	if got := g.dialBound(c.Fingerprint); got != widened {
		t.Errorf("C's dial bound after a handshake with A completed: %v, want %v (C's failures stand until C answers)", got, widened)
	}
	if got := g.dialBound(a.Fingerprint); got != cellDialFor {
		t.Errorf("A's dial bound: %v, want %v", got, cellDialFor)
	}
}

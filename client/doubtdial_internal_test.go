package client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/udpproxy"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellDoubtSettledByMemberBack: a cell of three, one member (C) gone
// for long, so the handle's dial bound has doubled to cellAttemptMax; the
// leader (A) takes a send and goes silent (killed: the send is in doubt),
// and the member left (B) has no leader to name. A comes back once B has
// refused the retries twice, and the send is settled by A, within the
// send's doubt (cellDoubtFor): acknowledged as the duplicate of the first
// try. Until session 22 the doubled bound gave C's dial 8 s of the 10 s
// and A's the rest, A was dialled once, while gone, and the send ended in
// doubt although A was back within a second or two (the test then fails:
// B is never asked twice, A never comes back).
func TestCellDoubtSettledByMemberBack(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait()
	srvA, trA, lnA := rawServer(t, &quic.Config{})
	defer trA.Close()
	srvB, trB, lnB := rawServer(t, &quic.Config{})
	defer trB.Close()
	toA, err := udpproxy.New(lnA.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer toA.Close()
	// C: an address that takes packets and answers none.
	gone, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	srvC, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}

	// A acknowledges the first send, takes the second and goes silent
	// (its relay cut: packets dropped both ways), and acknowledges every
	// later one as the second's duplicate.
	var sendsA atomic.Int64
	serveMember(&wg, lnA, func(st *quic.Stream, _ uint64) {
		switch sendsA.Add(1) {
		case 1:
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: 1}}})
		case 2:
			toA.Cut()
			<-st.Context().Done()
		default:
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 2, Time: 2, Duplicate: true}}})
		}
	})
	// B has no leader to name; at its second refusal after A went
	// silent, A is back.
	var refusedB atomic.Int64
	serveMember(&wg, lnB, func(st *quic.Stream, _ uint64) {
		wire.WriteError(st, &wire.Error{Code: wire.CodeUnavailable, Message: "no leader", Unchanged: true})
		if refusedB.Add(1) == 2 {
			toA.Restore()
		}
	})

	cl := newTestClient(t, Config{NoBatching: true})
	defer cl.Close()
	a := wire.Replica{Addr: toA.Addr(), Fingerprint: srvA.Fingerprint(), Leader: true}
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{a.Addr}, Fingerprint: a.Fingerprint,
		Replicas: []wire.Replica{a, {Addr: lnB.Addr().String(), Fingerprint: srvB.Fingerprint()}, {Addr: gone.LocalAddr().String(), Fingerprint: srvC.Fingerprint()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The first send dials A (its handshake measures the path).
	if _, err := g.Send(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	// The handle holds a connection to B (a read's, a watch's).
	pB, err := g.peerAt([]string{lnB.Addr().String()}, srvB.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	_, err = pB.get(ctx)
	g.done(pB)
	if err != nil {
		t.Fatalf("handshake with B: %v", err)
	}
	// As the handle's dials to C, gone for long, did: none completed, and
	// C's bound doubled to its most.
	g.dialed(srvC.Fingerprint(), false, 0, cellAttemptMax)
	ack, err := g.Send(ctx, []byte("in doubt"))
	if err != nil {
		t.Fatalf("a send in doubt (A, the leader, silent after taking it; back at B's second refusal): %v, want it settled by A within %v", err, cl.cellDoubtFor)
	}
	if !ack.Duplicate || ack.Seq != 2 {
		t.Fatalf("the send settled: %+v, want A's ack of its first try (2, a duplicate)", ack)
	}
	// The doubt over, C's failed handshakes widen its bound as before: a
	// member still gone is not dialled every second.
	g.dialed(srvC.Fingerprint(), false, 0, cellAttemptMax)
	if got := g.dialBound(srvC.Fingerprint()); got != cellAttemptMax {
		t.Errorf("the dial bound after the doubt, a handshake failed: %v, want %v", got, cellAttemptMax)
	}
}

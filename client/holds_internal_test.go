package client

import (
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// heldPeers returns how many peers g holds, and how many the client keeps.
func heldPeers(g *Group) (held, kept int) {
	g.mu.Lock()
	held = len(g.held)
	g.mu.Unlock()
	g.cl.mu.Lock()
	kept = len(g.cl.peers)
	g.cl.mu.Unlock()
	return held, kept
}

// TestHandleHoldsBounded: a handle held every daemon it was pointed at
// until Close, one more per leader a member named, per replica moved to,
// per address its daemon moved to: a rogue member naming a new leader key
// at each refusal (or a cell whose members come and go, watched for days)
// grew it, and the client's connections with it, by one each time. The
// handle now holds its own daemon and the cell's members it knows; the
// others are given back, and their connections closed, once unused.
func TestHandleHoldsBounded(t *testing.T) {
	cl := newTestClient(t, Config{})
	defer cl.Close()
	known := []wire.Replica{{Addr: "127.0.0.1:2", Fingerprint: wire.Fingerprint{2}, Leader: true}, {Addr: "127.0.0.1:3", Fingerprint: wire.Fingerprint{3}}}
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{known[0].Addr}, Fingerprint: known[0].Fingerprint, Replicas: known})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	const moves = 100
	for i := range moves {
		// A leader named at each refusal, a new key at a new address.
		if err := g.follow(wire.Replica{Addr: fmt.Sprintf("127.0.0.1:%d", 1000+i), Fingerprint: wire.Fingerprint{1, byte(i)}, Leader: true}); err != nil {
			t.Fatal(err)
		}
		g.nextReplica()
	}
	bound := wire.MaxReplicas + 1 // the members known, and the one the handle is on
	if held, kept := heldPeers(g); held > bound || kept > bound {
		t.Errorf("after %d leaders named: the handle holds %d peers, the client keeps %d; want at most %d", moves, held, kept, bound)
	}

	// The cell's members replaced (a member's refusal naming them): the
	// members it no longer has are given back with the next use's end.
	now := []wire.Replica{{Addr: "127.0.0.1:4", Fingerprint: wire.Fingerprint{4}, Leader: true}, {Addr: "127.0.0.1:2", Fingerprint: wire.Fingerprint{2}}}
	g.learnReplicas(now, wire.Fingerprint{})
	g.nextReplica()
	g.done(g.use())
	if held, kept := heldPeers(g); held > len(now)+1 || kept > len(now)+1 {
		t.Errorf("a cell of %d members: the handle holds %d peers, the client keeps %d", len(now), held, kept)
	}
}

// TestHandleHoldInUseKept: a peer a call uses is not given back under it
// when the handle moves on (its connection would close under the call);
// it is once the call ends.
func TestHandleHoldInUseKept(t *testing.T) {
	cl := newTestClient(t, Config{})
	defer cl.Close()
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{"127.0.0.1:2"}, Fingerprint: wire.Fingerprint{2}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	old := g.use()
	for i := range 3 { // the daemon moved, and moved again
		p, err := g.peerAt([]string{fmt.Sprintf("127.0.0.1:%d", 10+i)}, wire.Fingerprint{2})
		if err != nil {
			t.Fatal(err)
		}
		g.moveTo(p)
	}
	g.mu.Lock()
	_, kept := g.held[old]
	g.mu.Unlock()
	old.mu.Lock()
	retired := old.retired
	old.mu.Unlock()
	if !kept || retired {
		t.Fatalf("the peer a call uses, the handle moved on: held %v, retired %v; want held, not retired", kept, retired)
	}
	if held, _ := heldPeers(g); held != 2 {
		t.Errorf("the handle holds %d peers, want 2: the one in use and its own (the one between given back)", held)
	}
	g.done(old)
	old.mu.Lock()
	retired = old.retired
	old.mu.Unlock()
	if held, kept := heldPeers(g); held != 1 || kept != 1 || !retired {
		t.Errorf("the call ended: the handle holds %d peers, the client keeps %d, the one it used retired %v; want 1, 1, true", held, kept, retired)
	}
}

package client

import (
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// TestCellStatusKeyOfAnsweringConnection: CellStatus with no pin checks
// that the daemon names itself by the key its connection presented. It
// read that key from the peer after the call (p.seen), which a concurrent
// redial of the shared peer (another call's, the first connection having
// dropped) may have set to another connection's key meanwhile: a true
// answer was refused as naming another key (ErrProtocol), and a false one
// could have passed, paired with the other connection's key. The key is
// taken from the connection that answered. Here the peer's key is
// changed while the daemon answers, as such a redial would.
func TestCellStatusKeyOfAnsweringConnection(t *testing.T) {
	// The handler reaches the test's client and server through atomics:
	// what orders their making before its run is the network, which the
	// race detector does not see (CI, session 17: a data race on both).
	var client atomic.Pointer[Client]
	var server atomic.Pointer[lone]
	s := startLone(t, func(op wire.Op, raw wire.Raw, st *quic.Stream, stop <-chan struct{}) {
		c, s := client.Load(), server.Load()
		if op != wire.OpCellStatus || c == nil || s == nil {
			return
		}
		p, err := c.groupPeer([]string{s.addr.String()}, Fingerprint{}, wire.UUID{})
		if err != nil {
			return
		}
		p.mu.Lock()
		p.seen = Fingerprint{0xee} // another connection's, dialled meanwhile
		p.mu.Unlock()
		c.releaseGroup(p)
		self := wire.Replica{Addr: s.addr.String(), Fingerprint: s.id.Fingerprint()}
		wire.WriteResponse(st, wire.KindResult, wire.CellStatus{Self: self, State: "follower", Term: 1, Members: []wire.Replica{self}})
	})
	server.Store(s)
	c := newTestClient(t, Config{})
	client.Store(c)
	defer c.Close()
	st, err := c.CellStatus(t.Context(), s.addr.String(), Fingerprint{})
	if err != nil {
		t.Fatalf("cell status of a daemon naming itself by the key its connection presented: %v", err)
	}
	if st.Self.Fingerprint != s.id.Fingerprint() {
		t.Errorf("self %s, want %s", st.Self.Fingerprint.Short(), s.id.Fingerprint().Short())
	}
}

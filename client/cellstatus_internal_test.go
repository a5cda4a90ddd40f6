package client

import (
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
	var c *Client
	var s *lone
	s = startLone(t, func(op wire.Op, raw wire.Raw, st *quic.Stream, stop <-chan struct{}) {
		if op != wire.OpCellStatus {
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
	c = newTestClient(t, Config{})
	defer c.Close()
	st, err := c.CellStatus(t.Context(), s.addr.String(), Fingerprint{})
	if err != nil {
		t.Fatalf("cell status of a daemon naming itself by the key its connection presented: %v", err)
	}
	if st.Self.Fingerprint != s.id.Fingerprint() {
		t.Errorf("self %s, want %s", st.Self.Fingerprint.Short(), s.id.Fingerprint().Short())
	}
}

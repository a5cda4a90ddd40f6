package cell

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
)

// TestWrongPeerKeyReported: a cell started with one host's --cell-peer
// naming a wrong but valid key for another member (a reinstalled host's
// old key) forms, and its leader's status lists three members, but the
// odd member bootstrapped a configuration of its own, which raft never
// corrects (the bootstrap entries are index 1, term 1 on every member).
// Every member reports it (KeyMismatches: the log, cell_status,
// /metrics), naming the odd member; and the cell has lost its fault
// tolerance: with the leader killed, the two left hold elections without
// end and elect none.
func TestWrongPeerKeyReported(t *testing.T) {
	old, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var starts, elections atomic.Int64
	var odd atomic.Pointer[string]
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.keyCheckEvery = 50 * time.Millisecond
		cfg.Logger = slog.New(electionCounter{cfg.Logger.Handler(), &elections})
		if starts.Add(1) != 3 {
			return
		}
		// The third member's flags name another key for the first.
		peers := slices.Clone(cfg.Peers)
		peers[0].Fingerprint = old.Fingerprint()
		cfg.Peers = peers
		addr := cfg.Advertise
		odd.Store(&addr)
	})
	first, third := c.members[0], c.members[2]
	if *odd.Load() != third.addr {
		t.Fatalf("the odd member is %s, want %s", *odd.Load(), third.addr)
	}
	oddPeer := Peer{Addr: third.addr, Fingerprint: third.id.Fingerprint()}
	for _, m := range c.members {
		waitUntil(t, m.addr+" reporting the odd member's configuration", func() bool {
			return slices.ContainsFunc(m.node.KeyMismatches(), func(k KeyMismatch) bool { return k.By == oddPeer })
		})
	}
	// The odd member names the old key for the first member's address,
	// and the daemon there presented its own; the member beside them read
	// the same from the odd member's answer.
	want := KeyMismatch{By: oddPeer, Addr: first.addr, Named: old.Fingerprint(), Actual: first.id.Fingerprint()}
	for _, m := range c.members[1:] {
		if got := m.node.KeyMismatches(); !slices.Contains(got, want) {
			t.Errorf("%s reports %+v, want %+v among them", m.addr, got, want)
		}
		if got := m.node.Status().KeyMismatches; !slices.Contains(got, want) {
			t.Errorf("%s's status reports %+v, want %+v among them", m.addr, got, want)
		}
	}
	// The first member is refused by the odd one: its configuration does
	// not list the first's key.
	refused := KeyMismatch{By: oddPeer, Addr: first.addr, Actual: first.id.Fingerprint()}
	if got := first.node.KeyMismatches(); !slices.Contains(got, refused) {
		t.Errorf("%s reports %+v, want %+v among them", first.addr, got, refused)
	}

	// Lost fault tolerance: the second member, the one the other two
	// both accept, is killed (it leads, or follows); the two left, each
	// refusing or dialing a wrong key for the other, stand for election
	// round after round and never elect.
	second := c.members[1]
	second.crash()
	waitUntil(t, "the members left to know of no leader", func() bool {
		_, a := first.node.Leader()
		_, b := third.node.Leader()
		return !a && !b
	})
	elections.Store(0)
	const rounds = 10
	waitUntil(t, "the members left to stand for election many times", func() bool { return elections.Load() >= rounds })
	for _, m := range []*testMember{first, third} {
		if p, ok := m.node.Leader(); ok {
			t.Fatalf("%s follows %s after %d elections: the cell kept its fault tolerance", m.addr, p.Addr, rounds)
		}
	}
	t.Logf("with the second member killed, %d elections elected no leader", elections.Load())
}

// electionCounter counts the elections raft starts (its warnings saying
// so), and passes every record on.
type electionCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h electionCounter) Handle(ctx context.Context, r slog.Record) error {
	if m := strings.ToLower(r.Message); strings.HasPrefix(m, "heartbeat timeout reached, starting election") || strings.HasPrefix(m, "election timeout reached") {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h electionCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return electionCounter{h.Handler.WithAttrs(as), h.n}
}

func (h electionCounter) WithGroup(name string) slog.Handler {
	return electionCounter{h.Handler.WithGroup(name), h.n}
}

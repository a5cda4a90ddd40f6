package cell

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestWrongPeerKeyReported: a cell started with one host's --cell-peer
// naming a wrong but valid key for another member (a reinstalled host's
// old key) forms, and its leader's status lists three members, but the
// odd member bootstrapped a configuration of its own, which raft never
// corrects (the bootstrap entries are index 1, term 1 on every member).
// The odd member starts first, so its check at bootstrap finds the member
// it names wrong not running yet (TestWrongPeerKeyRefusedAtBootstrap is
// the other order). Every member reports it (KeyMismatches: the log,
// cell_status, /metrics), naming the odd member; and the cell has lost its
// fault tolerance: with the member both others accept killed, the two left
// hold elections without end and elect none.
func TestWrongPeerKeyReported(t *testing.T) {
	old, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var starts, elections atomic.Int64
	var oddAddr atomic.Pointer[string]
	var unanswered atomic.Pointer[[2]string] // a member's key checks whose questions to an address go unanswered
	var unansweredAsked atomic.Int64
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.keyCheckEvery = 50 * time.Millisecond
		cfg.Logger = slog.New(electionCounter{cfg.Logger.Handler(), &elections})
		self := cfg.Advertise
		cfg.keyCheckAsked = func(addr string) error {
			if u := unanswered.Load(); u != nil && u[0] == self && u[1] == addr {
				unansweredAsked.Add(1)
				return context.DeadlineExceeded
			}
			return nil
		}
		if starts.Add(1) != 1 {
			return
		}
		// The first member's flags name another key for the third.
		peers := slices.Clone(cfg.Peers)
		peers[2].Fingerprint = old.Fingerprint()
		cfg.Peers = peers
		addr := cfg.Advertise
		oddAddr.Store(&addr)
	})
	odd, other, named := c.members[0], c.members[1], c.members[2]
	if *oddAddr.Load() != odd.addr {
		t.Fatalf("the odd member is %s, want %s", *oddAddr.Load(), odd.addr)
	}
	oddPeer := Peer{Addr: odd.addr, Fingerprint: odd.id.Fingerprint()}
	for _, m := range c.members {
		waitUntil(t, m.addr+" reporting the odd member's configuration", func() bool {
			return slices.ContainsFunc(m.node.KeyMismatches(), func(k KeyMismatch) bool { return k.By == oddPeer })
		})
	}
	// The odd member names the old key for the third member's address,
	// and the daemon there presented its own; the second member read the
	// same from the odd member's answer. Each reports nothing else.
	want := KeyMismatch{By: oddPeer, Addr: named.addr, Named: old.Fingerprint(), Actual: named.id.Fingerprint()}
	for _, m := range []*testMember{odd, other} {
		if got := m.node.KeyMismatches(); !slices.Equal(got, []KeyMismatch{want}) {
			t.Errorf("%s reports %+v, want %+v", m.addr, got, want)
		}
		if got := m.node.Status().KeyMismatches; !slices.Equal(got, []KeyMismatch{want}) {
			t.Errorf("%s's status reports %+v, want %+v", m.addr, got, want)
		}
	}
	// Rounds in which the second member's questions to the third go
	// unanswered (a slow host) prove no key at the third's address: the
	// odd member's answer cannot show the mismatch then, and it is still
	// reported. (It was forgotten in such a round.)
	unanswered.Store(&[2]string{other.addr, named.addr})
	waitUntil(t, "rounds of the second member's check with the third unanswered",
		func() bool { return unansweredAsked.Load() > keyCheckRounds })
	if got := other.node.KeyMismatches(); !slices.Equal(got, []KeyMismatch{want}) {
		t.Errorf("%s, its questions to %s unanswered, reports %+v, want %+v", other.addr, named.addr, got, want)
	}
	unanswered.Store(nil)
	// The third member is refused by the odd one: its configuration does
	// not list the third's key.
	refused := KeyMismatch{By: oddPeer, Addr: named.addr, Actual: named.id.Fingerprint()}
	if got := named.node.KeyMismatches(); !slices.Equal(got, []KeyMismatch{refused}) {
		t.Errorf("%s reports %+v, want %+v", named.addr, got, refused)
	}

	// Lost fault tolerance: the second member, the one the other two both
	// accept, is killed (it leads, or follows); the two left, one refusing
	// the other's key and dialing a wrong key for it, stand for election
	// round after round and never elect.
	other.crash()
	waitUntil(t, "the members left to know of no leader", func() bool {
		_, a := odd.node.Leader()
		_, b := named.node.Leader()
		return !a && !b
	})
	elections.Store(0)
	const rounds = 10
	waitUntil(t, "the members left to stand for election many times", func() bool { return elections.Load() >= rounds })
	for _, m := range []*testMember{odd, named} {
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

// TestWrongPeerKeyRefusedAtBootstrap: a new cell's member whose flags name
// another key for a running member than the daemon there presents refuses
// to start, saying which flag and both keys, before it bootstraps: started
// again with the flag corrected, it bootstraps the cell's configuration.
// (It bootstrapped a configuration of its own, which raft never corrects.)
func TestWrongPeerKeyRefusedAtBootstrap(t *testing.T) {
	old, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCell{t: t, groups: []GroupConfig{{ID: uuid.New(), Name: "lobby"}}}
	for range 3 {
		c.members = append(c.members, c.newMember(false))
	}
	for _, m := range c.members {
		c.peers = append(c.peers, Peer{Addr: m.addr, Fingerprint: m.id.Fingerprint()})
	}
	first, third := c.members[0], c.members[2]
	var wrong atomic.Bool
	wrong.Store(true)
	c.mutate = func(cfg *Config) {
		if cfg.Advertise == third.addr && wrong.Load() {
			peers := slices.Clone(cfg.Peers)
			peers[0].Fingerprint = old.Fingerprint()
			cfg.Peers = peers
		}
	}
	c.start(c.members[0], false)
	c.start(c.members[1], false)
	err = c.tryStart(third, false)
	if !errors.Is(err, ErrPeerKeyMismatch) {
		t.Fatalf("started with a wrong --cell-peer: %v, want ErrPeerKeyMismatch", err)
	}
	for _, want := range []string{first.addr, old.Fingerprint().String(), first.id.Fingerprint().String(), "correct the flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	third.stop()
	wrong.Store(false)
	c.start(third, false)
	waitUntil(t, "the third member's configuration to name the first member's key", func() bool {
		f := third.node.running().GetConfiguration()
		return f.Error() == nil && slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool {
			return s.ID == raft.ServerID(first.id.Fingerprint().String())
		})
	})
	c.leader()
}

// TestWrongPeerKeyRecovery: README's recovery of a member started with a
// wrong --cell-peer (cell remove it, move its cell state and group logs
// aside, correct its flag, start it to join, cell add it) leaves every
// member's configuration naming the keys the members present: the reports
// end, and the cell survives the loss of the member that both others had
// to accept.
func TestWrongPeerKeyRecovery(t *testing.T) {
	old, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var starts atomic.Int64
	var wrong atomic.Bool
	wrong.Store(true)
	var oddAddr atomic.Pointer[string]
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.keyCheckEvery = 50 * time.Millisecond
		if starts.Add(1) == 1 {
			addr := cfg.Advertise
			oddAddr.Store(&addr)
		}
		if cfg.Advertise == *oddAddr.Load() && wrong.Load() {
			peers := slices.Clone(cfg.Peers)
			peers[2].Fingerprint = old.Fingerprint()
			cfg.Peers = peers
		}
	})
	odd, other := c.members[0], c.members[1]
	waitUntil(t, "the second member reporting the odd member's configuration", func() bool {
		return len(other.node.KeyMismatches()) > 0
	})

	c.removeMember(odd)
	odd.stop()
	if err := os.RemoveAll(filepath.Join(odd.dir, "raft")); err != nil {
		t.Fatal(err)
	}
	odd.host = newTestHost("")
	wrong.Store(false)
	c.start(odd, true)
	c.readd(odd)
	for _, m := range c.members {
		waitUntil(t, m.addr+" to report no mismatch", func() bool { return len(m.node.KeyMismatches()) == 0 })
	}
	other.crash()
	c.members = slices.DeleteFunc(c.members, func(m *testMember) bool { return m == other })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c.change("a join the two left commit", nil, func(n *Node) error {
		_, err := n.Join(ctx, c.groups[0].ID, wire.Fingerprint{7}, "seven")
		return err
	})
	t.Logf("with the second member killed, %s leads and commits", c.leader().addr)
}

// TestStrangerAtMemberAddressReported: the daemon at a member's address
// presents a key no configuration names (the member's host reinstalled
// with a new key, or another daemon that took its address), while every
// member's configuration names the member's. Each member then reports its
// own configuration as naming another key than the daemon there presents,
// and each other member's, from its answer: every member reports every
// member. huddle cell status tells this from a wrong --cell-peer by the
// configurations' agreeing on the key (cli's
// TestCellStatusStrangerAtMemberAddress); this is what it reads.
//
// Each member's log says so as the member not at its address, not as a
// misconfigured member to remove (it said CELL MISCONFIGURED for each
// member, with the advice to remove it and add it again, until session 15).
func TestStrangerAtMemberAddressReported(t *testing.T) {
	var mu sync.Mutex
	said := make(map[string]bool) // the members' error lines, by their first words
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.keyCheckEvery = 50 * time.Millisecond
		cfg.Logger = slog.New(errorLines{cfg.Logger.Handler(), func(msg string) {
			mu.Lock()
			said[msg[:min(len(msg), 40)]] = true
			mu.Unlock()
		}})
	})
	first, second, gone := c.members[0], c.members[1], c.members[2]
	gone.stop()
	stranger, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	gone.id, gone.host = stranger, newTestHost("")
	if err := os.RemoveAll(filepath.Join(gone.dir, "raft")); err != nil {
		t.Fatal(err)
	}
	c.start(gone, true) // waiting to be added: a daemon, not a member
	mismatch := func(by *testMember) KeyMismatch {
		return KeyMismatch{By: Peer{Addr: by.addr, Fingerprint: by.id.Fingerprint()}, Addr: gone.addr, Named: c.peers[2].Fingerprint, Actual: stranger.Fingerprint()}
	}
	want := []KeyMismatch{mismatch(first), mismatch(second)}
	slices.SortFunc(want, func(a, b KeyMismatch) int { return slices.Compare(a.By.Fingerprint[:], b.By.Fingerprint[:]) })
	for _, m := range []*testMember{first, second} {
		waitUntil(t, m.addr+" reporting both members' configurations", func() bool { return slices.Equal(m.node.KeyMismatches(), want) })
	}
	waitUntil(t, "the members' logs to say the member is not at its address", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return said["CELL MEMBER NOT AT ITS ADDRESS: the memb"]
	})
}

// errorLines passes every record on, and the message of each at error
// level to saw.
type errorLines struct {
	slog.Handler
	saw func(msg string)
}

func (h errorLines) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.saw(r.Message)
	}
	return h.Handler.Handle(ctx, r)
}

func (h errorLines) WithAttrs(as []slog.Attr) slog.Handler {
	return errorLines{h.Handler.WithAttrs(as), h.saw}
}

func (h errorLines) WithGroup(name string) slog.Handler {
	return errorLines{h.Handler.WithGroup(name), h.saw}
}

// TestPlainDaemonAtMemberAddressNotARefusal: a group daemon that is no
// cell member (huddle serve without --cell-peer, huddle up) at a stopped
// member's address answers the cell's ALPN with TLS's
// no_application_protocol, before it shows its key. That says nothing of
// this member's key: until session 15's walk refusedKey took every remote
// crypto error for a refusal of the key, so each member reported the
// stopped member's configuration as not listing it, logged CELL
// MISCONFIGURED every round with the advice to remove that member and add
// it again, and huddle cell status said UNCONFIRMED; nobody's
// configuration was wrong.
func TestPlainDaemonAtMemberAddressNotARefusal(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	first, gone := c.members[0], c.members[2]
	gone.stop()
	stranger, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp", gone.addr)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: udp}
	ln, err := qt.Listen(stranger.ServerTLS(), &quic.Config{}) // ALPN huddle/1 only, as a group daemon's
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); qt.Close(); udp.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err = first.node.askMembers(ctx, gone.addr)
	if err == nil || refusedKey(err) {
		t.Fatalf("asking a plain group daemon at a member's address: %v; want an error that is no refusal of this member's key", err)
	}
	found, _, _ := first.node.checkKeys()
	if len(found) != 0 {
		t.Fatalf("a check with a plain group daemon at a member's address found %+v; want nothing (no configuration is wrong)", found)
	}
}

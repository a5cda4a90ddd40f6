package cell

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
)

// TestRestartCatchesUpFromConfiguration: a member restarted with the
// --cell-peer flags it was first started with, which name two hosts
// replaced since (removed from the cell, and dead), and whose group log
// lost what its own snapshot covers, catches the log up from the members
// of its configuration as raft restores that snapshot at start. (It asked
// its flags' members, the only ones its transport knew before raft ran:
// each dead host cost a dial's timeout, 5 s, and with none left alive the
// restore failed, and the member did not start.) Its log shows no catch-up
// tried from a host no longer in the cell; the time it took to start is
// logged.
func TestRestartCatchesUpFromConfiguration(t *testing.T) {
	c := newTestCell(t, 3, true, compacting)
	flags := slices.Clone(c.peers)
	m, replaced := c.members[0], c.members[1:3]
	for _, old := range replaced {
		c.addMember(true)
		c.removeMember(old)
		old.stop()
	}
	g := c.leader().group("lobby")
	c.sendMany(g.ID, 0, 100)
	for _, o := range c.members {
		if o.node != nil {
			o.waitLast(g.ID, 100) // what m's snapshot covers: the others can serve it
		}
	}
	// Its snapshot lists the cell of now: m and the two added.
	if err := m.node.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatal(err)
	}
	m.stop()
	if err := os.RemoveAll(filepath.Join(m.host.dir, g.ID.String())); err != nil {
		t.Fatal(err)
	}

	rec := newRecorder(slog.DiscardHandler)
	c.peers = flags
	c.mutate = func(cfg *Config) {
		if cfg.Advertise == m.addr {
			rec = newRecorder(cfg.Logger.Handler())
			cfg.Logger = slog.New(rec)
		}
	}
	m.host = newTestHost(m.host.dir)
	start := time.Now()
	c.start(m, false) // raft restores m's snapshot within Start
	t.Logf("the member restarted with its group log caught up in %v", time.Since(start).Round(time.Millisecond))
	if last, _ := m.host.replica(g.ID).log.Tail(); last < 100 {
		t.Fatalf("the member started with its group log at %d, want 100", last)
	}
	lines, _ := rec.since(0)
	for _, l := range lines {
		for _, old := range replaced {
			if strings.Contains(l, "catch up") && strings.Contains(l, old.addr) {
				t.Errorf("the member tried to catch up from %s, a host replaced: %s", old.addr, l)
			}
		}
	}
	c.sendMany(g.ID, 100, 5)
	c.sameLogs(g.ID, 105)
}

// TestCatchUpOrder: a member catching up with no leader known asks the
// members of its configuration before those only its flags (or what it
// learnt) name, and within each, those whose link is not known to be down
// first.
func TestCatchUpOrder(t *testing.T) {
	udp := testport.UDP(t, net.IPv4(127, 0, 0, 1))
	qt := &quic.Transport{Conn: udp}
	t.Cleanup(func() { qt.Close() })
	var ids []*identity.Identity
	var peers []Peer // this member, two its flags name, two of its configuration
	for i := range 5 {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		peers = append(peers, Peer{Addr: fmt.Sprintf("127.0.0.1:%d", 1001+i), Fingerprint: id.Fingerprint()})
	}
	peers[0].Addr = udp.LocalAddr().String()
	self, flag1, flag2, conf1, conf2 := peers[0], peers[1], peers[2], peers[3], peers[4]
	n, err := New(Config{Identity: ids[0], QUIC: qt, Advertise: self.Addr, Join: true, Peers: []Peer{self, flag1, flag2},
		Host: newTestHost(""), Dir: t.TempDir(), Logger: testLogger(t, self.Addr)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	// A configuration that does not list this member yet (it waits to be
	// added): flags and configuration both count (accepted).
	n.setPeers(raft.Configuration{Servers: []raft.Server{
		{ID: raft.ServerID(conf1.Fingerprint.String()), Address: raft.ServerAddress(conf1.Addr)},
		{ID: raft.ServerID(conf2.Fingerprint.String()), Address: raft.ServerAddress(conf2.Addr)},
	}})
	n.tr.linkDown(conf1.Addr, errors.New("test: down"))
	n.tr.linkDown(flag1.Addr, errors.New("test: down"))
	if got, want := n.catchUpOrder(), []Peer{conf2, conf1, flag2, flag1}; !slices.Equal(got, want) {
		t.Fatalf("catch-up order %v, want %v", got, want)
	}
}

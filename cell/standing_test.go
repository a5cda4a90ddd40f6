package cell

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
)

// TestCandidateNamingGoneLeaderStandsAgain: a member whose log is behind
// stands for election naming a leader that is gone (raft's heartbeat
// handler can leave a candidate so, see staleLeaderLoop; here an
// InstallSnapshot of its term, which raft takes as a candidate, names it),
// and the one member that could be elected starts: the candidate refuses
// its pre-votes while it names a leader, and that member refuses the
// candidate's (its log is behind), so neither was ever elected (e2e's
// TestCellLeaderKill waited three minutes for a leader under load). The
// candidate now stops naming it, and the cell elects the other member.
func TestCandidateNamingGoneLeaderStandsAgain(t *testing.T) {
	c := newTestCell(t, 3, true, nil)
	a := c.leader()
	g := a.group("lobby")
	behind := c.followers(1)[0]
	var ahead *testMember
	for _, m := range c.members {
		if m != a && m != behind {
			ahead = m
		}
	}
	behind.stop()
	var last []store.Ack
	for i := range 20 {
		last = c.send(g.ID, store.Sender{Name: "s"}, [][16]byte{newID(i)}, []string{"m"})
	}
	ahead.waitLast(g.ID, last[0].Seq)
	a.crash()
	ahead.stop()

	// The member behind alone: it stands, and nobody answers.
	c.restart(behind)
	waitUntil(t, "the member behind to stand for election", func() bool { return behind.node.raft.State() == raft.Candidate })
	term := behind.node.raft.CurrentTerm()
	resp := make(chan raft.RPCResponse, 1)
	behind.node.net.consume <- raft.RPC{
		Command: &raft.InstallSnapshotRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(a.id.Fingerprint().String()), Addr: []byte(a.addr)},
			Term:      term,
			Size:      1,
		},
		Reader:   bytes.NewReader(nil),
		RespChan: resp,
	}
	<-resp // refused: it carries no configuration; the leader is named first
	if addr, _ := behind.node.raft.LeaderWithID(); addr != raft.ServerAddress(a.addr) || behind.node.raft.State() != raft.Candidate || behind.node.raft.CurrentTerm() != term {
		t.Fatalf("the member behind, a candidate of term %d, names %q: want it a candidate of that term naming the leader that is gone (%s), found %v of term %d",
			term, addr, a.addr, behind.node.raft.State(), behind.node.raft.CurrentTerm())
	}

	c.restart(ahead)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := ahead.node.leading(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			addr, _ := behind.node.raft.LeaderWithID()
			t.Fatalf("no leader after 15 s: the member ahead is %v, the member behind %v naming %q", ahead.node.raft.State(), behind.node.raft.State(), addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitUntil(t, "the member behind to follow the new leader", func() bool {
		addr, _ := behind.node.raft.LeaderWithID()
		return addr == raft.ServerAddress(ahead.addr)
	})
	behind.waitLast(g.ID, last[0].Seq)
}

// TestUnnameLeavesNoGoneLeader: the request a candidate naming a gone
// leader is handed (unname) reaches it, in the race staleLeaderLoop
// allows, once another member won the election and it follows that one:
// it must not name the gone leader meanwhile (its clients would be sent
// there). Here a follower of the leader is handed it (as raft takes it
// after unname's last check) while the leader's heartbeats to it are
// held. (The request named the gone leader, and the follower named it
// until the leader's next heartbeat.)
func TestUnnameLeavesNoGoneLeader(t *testing.T) {
	var deaf atomic.Pointer[string]
	c := newTestCell(t, 3, false, func(cfg *Config) {
		self := cfg.Advertise
		cfg.received = func(req any) {
			if _, ok := req.(*raft.AppendEntriesRequest); ok {
				holdWhile(&deaf, self)
			}
		}
	})
	l := c.leader()
	f := c.follower()
	var gone *testMember
	for _, m := range c.members {
		if m != l && m != f {
			gone = m
		}
	}
	deaf.Store(&f.addr)
	defer deaf.Store(nil)
	f.node.handUnname(staleLeader{term: f.node.raft.CurrentTerm(), addr: raft.ServerAddress(gone.addr), id: raft.ServerID(gone.id.Fingerprint().String())},
		func() bool { return true })
	if addr, _ := f.node.raft.LeaderWithID(); addr == raft.ServerAddress(gone.addr) || f.node.raft.State() != raft.Follower {
		t.Fatalf("the follower handed the request is a %v naming %q; want a follower naming no leader, or the leader (%s), not the gone one (%s)",
			f.node.raft.State(), addr, l.addr, gone.addr)
	}
	deaf.Store(nil)
}

// TestUnnameSparesWinner: a candidate naming a gone leader that wins its
// election after staleLeaderLoop's check, before raft's loop takes the
// request unname hands it, takes that request (of its own term) as
// another leader's, and steps down. unname now hands it only while raft
// still is that candidate, checked again as it offers it: here it is
// asked to unname the leader of the cell, which must lead on, in the same
// term. (Checked once, at the loop's check, the request deposed it.)
func TestUnnameSparesWinner(t *testing.T) {
	c := newTestCell(t, 3, false, steadyLeader)
	var l *testMember
	var term uint64
	waitUntil(t, "a leader leading at its term", func() bool {
		l = c.leader()
		term = l.node.raft.CurrentTerm()
		return l.node.raft.State() == raft.Leader
	})
	var gone *testMember
	for _, m := range c.members {
		if m != l {
			gone = m
		}
	}
	l.node.unname(staleLeader{term: term, addr: raft.ServerAddress(gone.addr), id: raft.ServerID(gone.id.Fingerprint().String())})
	if st, now := l.node.raft.State(), l.node.raft.CurrentTerm(); st != raft.Leader && now == term {
		t.Fatalf("the leader of term %d, handed unname's request for that term, is a %v of term %d: want it leading on", term, st, now)
	}
}

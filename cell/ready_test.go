package cell

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// errNoDial is the dial fault of TestElectionOnReadyConnections.
var errNoDial = errors.New("dialing blocked by the test")

// TestElectionOnReadyConnections: the followers of a cell hold a
// connection ready to each other, so that a candidacy's RPCs need no
// dial. Here no dial can succeed once the leader is killed, so the
// followers can elect only over ready connections. One of them was
// restarted first: it holds only what it dialed as it started, and the
// other's pooled connections to it were ended by its restart (found so
// and replaced when it dialed in, refresh). Before ready connections a
// follower dialed the other only when it stood for election, and on
// round trips of 100-300 ms each candidacy's dials outlasted the election
// timeout (2-16 candidacies in internal/jepsen's delay-kill-leader).
func TestElectionOnReadyConnections(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	leader := c.leader()
	var f, g *testMember
	for _, m := range c.members {
		switch {
		case m == leader:
		case f == nil:
			f = m
		default:
			g = m
		}
	}
	g.node.tr.mu.Lock()
	before := g.node.tr.tcpSeq
	g.node.tr.mu.Unlock()
	c.restart(f)

	waitUntil(t, "ready connections between the followers, the restarted one's and one dialed back to it after its restart",
		func() bool { return readyTo(f, g, 0) && readyTo(g, f, before) })
	for _, m := range []*testMember{f, g} {
		m.node.tr.mu.Lock()
		m.node.tr.dialFault = func() error { return errNoDial }
		m.node.tr.mu.Unlock()
	}
	leader.crash()

	waitUntil(t, "a leader elected with dials blocked (over connections the followers held ready to each other)",
		func() bool { return f.node.raft.State() == raft.Leader || g.node.raft.State() == raft.Leader })
	for _, m := range []*testMember{f, g} {
		m.node.tr.mu.Lock()
		m.node.tr.dialFault = nil
		m.node.tr.mu.Unlock()
	}
	c.leader() // and it serves
}

// readyTo reports whether m's raftNet holds an idle connection to o
// tracked after the connection numbered after (its transport's tcpSeq).
func readyTo(m, o *testMember, after uint64) bool {
	n := m.node.net
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.idle[raft.ServerAddress(o.addr)] {
		if tc, ok := c.conn.(*tcpConn); ok && tc.seq > after {
			return true
		}
	}
	return false
}

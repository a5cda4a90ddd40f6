package cell

import (
	"errors"
	"sync"
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
	c.restart(f)

	// Each holds one the other accepted as it runs now: one of g's
	// dialed to f before its restart (g's ready connections were still
	// being dialed as the cell formed) passed for ready until f's dial
	// in had g drop it, and then none was left, nor could be dialed
	// (at load ~39: no leader in 30 s, g's candidacies dialing f).
	waitUntil(t, "ready connections between the followers, the restarted one's and one dialed back to it after its restart",
		func() bool { return readyTo(f, g) && readyTo(g, f) })
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

// readyTo reports whether m's raftNet holds an idle connection to o that
// o's transport accepted and holds (not one to o before a restart).
func readyTo(m, o *testMember) bool {
	o.node.tr.mu.Lock()
	accepted := make(map[string]bool)
	for c := range o.node.tr.tcpConns {
		if c.addr == "" {
			accepted[c.raw.RemoteAddr().String()] = true
		}
	}
	o.node.tr.mu.Unlock()
	n := m.node.net
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.idle[raft.ServerAddress(o.addr)] {
		if tc, ok := c.conn.(*tcpConn); ok && accepted[tc.raw.LocalAddr().String()] {
			return true
		}
	}
	return false
}

// TestNewLeaderOnReadyConnections: a new leader runs on the connections
// held ready to its followers, with no dial: its heartbeats and its
// pipeline each on one. Here no dial can succeed once the leader is
// killed. Before, one connection was held ready: the new leader's
// pipeline dialed its own (and failed here), and its heartbeats dialed
// whenever the first AppendEntries held the ready one; on round trips of
// 100-300 ms those dials outlasted the 300 ms lease, and most new leaders
// stepped down within a second of winning (internal/jepsen,
// delay-kill-leader).
func TestNewLeaderOnReadyConnections(t *testing.T) {
	rerunOnNewCells(t, 3, "the new leader was deposed before the checks", func(t *testing.T) bool {
		var mu sync.Mutex
		heartbeats := make(map[string]map[uint64]int) // by the member that received them, by term
		c := newTestCell(t, 3, false, func(cfg *Config) {
			self := cfg.Advertise
			cfg.received = func(req any) {
				if ae, ok := req.(*raft.AppendEntriesRequest); ok && isHeartbeat(ae) {
					mu.Lock()
					if heartbeats[self] == nil {
						heartbeats[self] = make(map[uint64]int)
					}
					heartbeats[self][ae.Term]++
					mu.Unlock()
				}
			}
		})
		heard := func(m *testMember, term uint64) int {
			mu.Lock()
			defer mu.Unlock()
			return heartbeats[m.addr][term]
		}
		leader := c.leader()
		var followers []*testMember
		for _, m := range c.members {
			if m != leader {
				followers = append(followers, m)
			}
		}
		f, g := followers[0], followers[1]
		waitUntil(t, "connections held ready between the followers, each way",
			func() bool { return readyCount(f, g) >= readyConns && readyCount(g, f) >= readyConns })
		for _, m := range followers {
			m.node.tr.mu.Lock()
			m.node.tr.dialFault = func() error { return errNoDial }
			m.node.tr.mu.Unlock()
		}
		leader.crash()

		waitUntil(t, "a leader elected with dials blocked",
			func() bool { return f.node.raft.State() == raft.Leader || g.node.raft.State() == raft.Leader })
		next, other := f, g
		if g.node.raft.State() == raft.Leader {
			next, other = g, f
		}
		term := next.node.raft.CurrentTerm()
		// Its pipeline to the other, then heartbeats beside it, all with
		// dials blocked.
		var since int
		checks := []struct {
			what string
			done func() bool
		}{
			{"the new leader's pipeline to the other follower", func() bool {
				if pipelinesTo(next, other) {
					since = heard(other, term)
					return true
				}
				return false
			}},
			{"heartbeats of the new leader beside its pipeline", func() bool { return heard(other, term) >= since+10 }},
		}
		for _, check := range checks {
			deposed := false
			waitUntil(t, check.what+", with dials blocked (a connection held ready for it)", func() bool {
				deposed = next.node.raft.State() != raft.Leader || next.node.raft.CurrentTerm() != term
				return deposed || check.done()
			})
			if deposed {
				return false
			}
		}
		for _, m := range followers {
			m.node.tr.mu.Lock()
			m.node.tr.dialFault = nil
			m.node.tr.mu.Unlock()
		}
		return true
	})
}

// readyCount returns how many idle connections m's raftNet holds to o.
func readyCount(m, o *testMember) int {
	n := m.node.net
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.idle[raft.ServerAddress(o.addr)])
}

// pipelinesTo reports whether m's raftNet runs a pipeline to o.
func pipelinesTo(m, o *testMember) bool {
	n := m.node.net
	n.mu.Lock()
	defer n.mu.Unlock()
	for p := range n.pipes {
		if p.c.target == raft.ServerAddress(o.addr) {
			return true
		}
	}
	return false
}

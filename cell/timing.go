package cell

import (
	"net"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// Election timing from the round trips the cell measures. When a leader
// dies, both followers of a cell of three lose it at the same moment and
// stand for election within a round trip of each other; both pre-votes
// succeed (neither has a leader any more), each votes for itself, and the
// votes split. Each then waits out its election timeout, drawn by raft
// between ElectionTimeout and twice it, and stands again: the first to
// stand wins if its vote request reaches the other before the other's own
// pre-vote has succeeded, about half a round trip ahead. With 300-600 ms
// draws and round trips of 100-300 ms, that took 2-24 candidacies
// (internal/jepsen, delay-kill-leader), the same draw racing again each
// time; a longer timeout for everyone cut the candidacies but made each
// split cost more.
//
// So the members' election timeouts are staggered by their rank among the
// voters (their keys in order) in steps of the round trip measured: the
// first keeps ElectionTimeout, the second gets ElectionTimeout plus a
// round trip, the third plus two, and so on. After a split the lower
// ranked candidate mostly stands again first, far enough ahead, and wins:
// in 40 leader kills on those links no election took more than four
// candidacies nor 2.5 s, and sends came back within 3.3 s of every kill
// (before: up to 15 candidacies, 5 s, and 5.7 s; BENCHMARKS.md, "Network
// faults"). Steps of two round trips parted the candidates more surely
// but cost more than they saved. On a LAN the round trip is a fraction of
// a millisecond and every member keeps ElectionTimeout; the steps grow as
// the links slow, up to ElectionTimeout each (staggered), and shrink back as they clear. Only the election timeout changes (raft
// reloads it, ReloadConfig): a follower still stands after
// HeartbeatTimeout without a leader, and raft reloads neither the lease
// nor a lease longer than the heartbeat timeout.
//
// The round trip is the kernel's (TCP_INFO, Linux; none elsewhere, where
// the timeouts stay as configured): the largest smoothed round trip plus
// twice its deviation among the raft connections that carried data in
// the last rttWindow (a follower's from the leader, the leader's to the
// followers): on round trips of 100-300 ms it measured 160-540 ms, the
// leader's delayed acknowledgements of a follower's answers counted in. Connections that carried nothing lately (those held ready)
// are not counted: their round trip is their handshake's. With none
// counted (a candidate whose leader died), the timeout stays as it was.

const (
	// timingEvery is how often a member measures the round trip and
	// sets its election timeout.
	timingEvery = time.Second
	// rttWindow: a connection counts for the round trip if it received
	// data within it.
	rttWindow = 5 * time.Second
)

// staggered returns the election timeout of the voter of rank rank (0:
// the first of the voters' keys in order) with base the configured one,
// on round trips of rtt. A round trip under half of base leaves it base:
// raft's own draw parts candidates whose votes take that little, and a
// follower's kernel counts the leader's delayed acknowledgements (40 ms
// and more) into its round trip, so a LAN measures tens of milliseconds
// (12-62 ms in internal/jepsen with no delay) where it has a fraction of
// one.
//
// A step is at most base, so no voter's timeout exceeds base times the
// number of voters (0.9 s in a cell of three, 1.5 s in one of five, at
// the default 300 ms). A step parts two candidacies if it outlasts the
// round trip their votes take, and a round trip the cell can lead over at
// all is under base (the heartbeat and lease timeouts default to it: a
// follower stands, and a leader steps down, after that long without
// hearing): a larger figure is delayed acknowledgements counted in (on
// round trips of up to 300 ms the kernel measured up to 540 ms), a link
// the cell cannot lead over anyway, or a bogus reading. Uncapped, one
// member on a link of seconds gave the others election timeouts of
// seconds, and a cell that lost its leader waited them out.
//
// A timeout raised (now, above base) comes back to base only once the
// round trip is under a third of base, not half: a round trip wavering
// about half of base (150 ms at the default, a cell across an ocean)
// flipped each member's timeout every second, each flip a ReloadConfig
// and a log line.
func staggered(base time.Duration, rank int, rtt, now time.Duration) time.Duration {
	if rtt < base/2 && (now <= base || rtt < base/3) {
		return base
	}
	return base + time.Duration(rank)*min(rtt, base)
}

// timingLoop sets raft's election timeout from the round trip measured
// (staggered) every timingEvery, until the node closes.
func (n *Node) timingLoop() { n.every(or(n.cfg.timingEvery, timingEvery), n.setTiming) }

// setTiming sets raft's election timeout from the round trip measured
// now, if there is one and the timeout differs by more than an eighth
// from raft's.
func (n *Node) setTiming() {
	r := n.running()
	if r == nil {
		return
	}
	rtt, ok := n.net.measuredRTT()
	if !ok {
		return
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	var voters []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	slices.Sort(voters)
	rank := slices.Index(voters, n.self.Fingerprint.String())
	if rank < 0 {
		return // not a voter: it does not stand
	}
	rc := r.ReloadableConfig()
	want := staggered(n.cfg.ElectionTimeout, rank, rtt, rc.ElectionTimeout)
	if d := want - rc.ElectionTimeout; d.Abs() <= rc.ElectionTimeout/8 {
		return
	}
	rc.ElectionTimeout = want
	if err := r.ReloadConfig(rc); err != nil {
		n.cfg.Logger.Warn("cell: set the election timeout", "timeout", want, "err", err)
		return
	}
	n.cfg.Logger.Info("cell: election timeout set from the round trip", "timeout", want, "rtt", rtt, "rank", rank, "voters", len(voters))
}

// measuredRTT returns the round trip to the other members (see above), or
// false if no connection counts.
func (n *raftNet) measuredRTT() (time.Duration, bool) {
	if n.rtt != nil {
		return n.rtt()
	}
	n.mu.Lock()
	conns := make([]net.Conn, 0, len(n.served)+len(n.pipes))
	for c := range n.served {
		conns = append(conns, c)
	}
	for p := range n.pipes {
		conns = append(conns, p.c.conn)
	}
	for _, cs := range n.idle {
		for _, c := range cs {
			conns = append(conns, c.conn)
		}
	}
	n.mu.Unlock()
	var most time.Duration
	found := false
	for _, c := range conns {
		tc, ok := c.(*tcpConn)
		if !ok {
			continue
		}
		if rtt, ok := connRTT(tc.raw, rttWindow); ok {
			most, found = max(most, rtt), true
		}
	}
	return most, found
}

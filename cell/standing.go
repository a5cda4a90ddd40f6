package cell

import (
	"time"

	"github.com/hashicorp/raft"
)

// A candidate that names a leader refuses every pre-vote ("rejecting
// pre-vote request since we have a leader"), and raft (v1.7.2) clears the
// leader it names only on a change of state, which a candidate that cannot
// win makes only when a leader, or a candidate of a later term, speaks to
// it. It comes to name one when raft's heartbeat handler, which runs beside
// raft's main loop, sets the leader of a heartbeat just as the main loop
// turns the follower into a candidate (it checks the state before the main
// loop changes it, and sets the leader after the change cleared it), or
// when an InstallSnapshot of its own term reaches it as a candidate. If that
// leader is then gone, and the candidate's log is behind the one member
// that could be elected (that member refuses its pre-votes), neither is
// elected, for ever: e2e's TestCellLeaderKill met it under load (session
// 16), a restarted member naming the leader killed just after, for three
// minutes.
//
// staleLeaderLoop watches for it: a candidate that names the same leader
// in the same term at two checks a HeartbeatTimeout apart hears nothing
// from it (a leader's heartbeats, every tenth of that, turn a candidate
// back into its follower), and is handed, on raft's main loop, an empty
// AppendEntries of that term that names no leader (unname): the candidate
// becomes a follower naming none (granting other candidates' pre-votes
// from then on), and, hearing nothing, stands again once its heartbeat
// timeout passes. The request carries no entries, no previous entry and
// no commit index: raft changes nothing else for it.
//
// An election may end between the check and raft's taking the request.
// If another member won that term, this member follows it already, and
// the request leaves it naming no leader until the winner's next
// heartbeat, a tenth of a HeartbeatTimeout later: its clients are told
// no leader is known (they ask the others), not sent to the one that is
// gone, as when the request named that leader (until session 17). If
// this member won it, the request deposes it (raft takes an AppendEntries
// of its own term as another leader's), which raft gives no way to rule
// out from outside its main loop. unname narrows that moment: it hands
// the request over only while raft still is a candidate of that term
// naming that leader, checked again every unnameTry while raft's loop has
// not taken it (until session 18 it was checked once, and raft's loop,
// busy with a vote's fsync say, might take it up to a HeartbeatTimeout
// later). What is left takes both an election won by a candidate that
// names a gone leader and a moment of unnameTry, and costs an election.
func (n *Node) staleLeaderLoop() {
	var last staleLeader
	n.every(n.cfg.HeartbeatTimeout, func() { last = n.checkStaleLeader(last) })
}

// staleLeader is a candidate's term and the leader it named at a check.
type staleLeader struct {
	term uint64
	addr raft.ServerAddress
	id   raft.ServerID
}

// checkStaleLeader repairs a candidate that named the same leader at the
// check before (last) and returns what it names now.
func (n *Node) checkStaleLeader(last staleLeader) staleLeader {
	r := n.running()
	if r == nil || r.State() != raft.Candidate {
		return staleLeader{}
	}
	addr, id := r.LeaderWithID()
	if addr == "" {
		return staleLeader{}
	}
	now := staleLeader{term: r.CurrentTerm(), addr: addr, id: id}
	if now != last {
		return now
	}
	n.cfg.Logger.Warn("cell: this member stands for election but still names a leader it no longer hears, so it refuses every other candidate (a race in raft): it follows no leader, and stands afresh once it hears nothing more",
		"leader", string(addr), "term", now.term)
	n.unname(now)
	return staleLeader{}
}

// unnameTry is how long unname offers raft its request before it checks
// again that raft still needs it.
const unnameTry = 5 * time.Millisecond

// unname hands raft, on its main loop, an empty AppendEntries of stale's
// term that names no leader, not even stale's (see staleLeaderLoop), while
// raft still is a candidate of that term naming stale's leader, and waits
// for raft's answer; a HeartbeatTimeout at most each.
func (n *Node) unname(stale staleLeader) {
	n.handUnname(stale, func() bool { return n.namesStale(stale) })
}

// namesStale reports whether raft is a candidate of stale's term naming
// stale's leader.
func (n *Node) namesStale(stale staleLeader) bool {
	r := n.running()
	if r == nil || r.State() != raft.Candidate || r.CurrentTerm() != stale.term {
		return false
	}
	addr, id := r.LeaderWithID()
	return addr == stale.addr && id == stale.id
}

// handUnname hands raft unname's request while still says it is needed,
// checked before each unnameTry of offering it.
func (n *Node) handUnname(stale staleLeader, still func() bool) {
	resp := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{
		Command: &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax},
			Term:      stale.term,
		},
		RespChan: resp,
	}
	giveUp := time.NewTimer(n.cfg.HeartbeatTimeout)
	defer giveUp.Stop()
	try := time.NewTicker(unnameTry)
	defer try.Stop()
	for handed := false; !handed; {
		if !still() {
			return
		}
		select {
		case n.net.consume <- rpc:
			handed = true
		case <-try.C:
		case <-n.closing:
			return
		case <-giveUp.C:
			return
		}
	}
	select {
	case <-resp:
	case <-n.closing:
	case <-time.After(n.cfg.HeartbeatTimeout):
	}
}

package cell

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A leadership transfer to a member whose replication is stuck wedged the
// leader (hashicorp/raft v1.7.2, raft.go leadershipTransfer): raft brings
// the member level by handing a request to the goroutine that replicates
// to it (a channel of one) and waiting for its answer or for the transfer
// to give up (an ElectionTimeout); given up, the request stays queued
// until that goroutine next looks, which it does only once its call in
// flight returns: an AppendEntries to a silent member (the RPC timeout,
// 5 s), one waiting for a member that cannot be dialed (linkWait, 30 s),
// or raft's back-off after failures (up to 10.24 s). A second transfer to
// that member meanwhile blocks on the full queue without watching the
// give-up, and raft refuses every proposal ("leadership transfer in
// progress") until the queue drains, though it answered the transfer's
// caller "leadership transfer timeout" an ElectionTimeout in. Likewise a
// TimeoutNow sent to a member gone silent held the refusal for the whole
// RPC timeout (TestTransferToStuckMember, TestTransferTimeoutNowHeld:
// refused for as long as the member's RPCs were held). huddle transfers on purpose often: a daemon
// stopping (Handover), `huddle cell remove` of the leader (and an
// operator's retry), a stalled leader every HeartbeatTimeout (stall.go),
// a leader elected while its logs catch up (awaitRestored).
//
// So this member transfers only to a voter whose replication is current
// (transferable): one that answered an AppendEntries within a
// HeartbeatTimeout, and that has acknowledged this member's last entry, so
// that raft has nothing to bring level and queues nothing, or whose
// replication answered within a HeartbeatTimeout, is not failing (raft
// backs off), has no call of its own in flight for longer, and is no
// member raft gave a transfer up to in this term (the request that
// transfer queued may wait still, unseen, behind a call stuck since: its
// answers to what it took before it went silent can come late, and made
// it look current again: TestTransferToMemberAnsweredLate); and raftNet
// bounds a TimeoutNow at two ElectionTimeouts, after raft has given the
// transfer up (a bound of one raced raft's own timer under load, and the
// caller saw the TimeoutNow's error, not raft's give-up, which Handover
// and the stalled leader follow: TestRemoveLeaderTransferLate).

// replication is what raft's replication to one member last did, as the
// transport saw it.
type replication struct {
	mu       sync.Mutex
	answered time.Time // its last successful AppendEntries answer, heartbeats included
	// term and matched: of its last successful replicating answer (not a
	// heartbeat), the request's term and last index; replied, when.
	term, matched uint64
	replied       time.Time
	failed        bool      // the last replicating AppendEntries failed, or was refused
	since         time.Time // an AppendEntries not pipelined is in flight since; zero if none
	gaveUp        uint64    // the term in which raft gave a transfer to this member up; 0 if none
}

// givenUp notes that raft gave a transfer to this member up in term.
func (r *replication) givenUp(term uint64) {
	r.mu.Lock()
	r.gaveUp = max(r.gaveUp, term)
	r.mu.Unlock()
}

// start notes a replicating AppendEntries not pipelined in flight.
func (r *replication) start(now time.Time) {
	r.mu.Lock()
	r.since = now
	r.mu.Unlock()
}

// done notes the outcome of an AppendEntries: err is the call's, resp its
// answer; hb if it was a heartbeat, inflight if start noted it.
func (r *replication) done(now time.Time, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error, hb, inflight bool) {
	ok := err == nil && resp.Success
	r.mu.Lock()
	defer r.mu.Unlock()
	if inflight {
		r.since = time.Time{}
	}
	if ok {
		r.answered = now
	}
	if hb {
		return
	}
	r.failed = !ok
	if !ok {
		return
	}
	last := req.PrevLogEntry
	if len(req.Entries) > 0 {
		last = req.Entries[len(req.Entries)-1].Index
	}
	if req.Term != r.term || last > r.matched {
		r.term, r.matched = req.Term, last
	}
	r.replied = now
}

// current reports whether a transfer to this member can end as raft means
// it to (above), at now, this member leading in term with last its last
// index; if not, why.
func (r *replication) current(now time.Time, term, last uint64, within time.Duration) (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.answered.IsZero() || now.Sub(r.answered) > within:
		return false, "it has not answered an AppendEntries within a heartbeat timeout"
	case r.term == term && r.matched >= last:
		return true, ""
	case r.gaveUp == term:
		return false, whyGaveUp
	case r.failed:
		return false, "it is behind, and raft's last AppendEntries to it failed"
	case !r.since.IsZero() && now.Sub(r.since) > within:
		return false, fmt.Sprintf("it is behind, and raft's AppendEntries to it has been in flight for %v", now.Sub(r.since).Round(time.Millisecond))
	case now.Sub(r.replied) > within:
		return false, "it is behind, and has acknowledged no entry within a heartbeat timeout"
	}
	return true, ""
}

// whyGaveUp is current's refusal of a member raft gave a transfer to up
// in this term.
const whyGaveUp = "it is behind, and raft gave a transfer to it up in this term (its request to bring it level may still wait for its replication)"

// matchedIn returns the last index this member acknowledged in term (0 if
// none).
func (r *replication) matchedIn(term uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.term != term {
		return 0
	}
	return r.matched
}

// errNoCurrentVoter: no voter's replication is current enough to take the
// leadership over (transferable).
var errNoCurrentVoter = errors.New("no other voter's replication is current")

// transferable waits up to a HeartbeatTimeout (a leader just elected
// hears its followers' first answers within a round trip) for a voter
// other than this member whose replication is current (above): to, if
// set, else the one that acknowledged most. It returns the server, or
// why none is, or ErrClosed.
func (n *Node) transferable(to *raft.Server) (raft.Server, error) {
	deadline := time.NewTimer(n.cfg.HeartbeatTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(n.cfg.HeartbeatTimeout / 20)
	defer tick.Stop()
	for {
		s, err := n.currentVoter(to)
		if err == nil || !errors.Is(err, errNoCurrentVoter) {
			return s, err
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return raft.Server{}, err
		case <-n.closing:
			return raft.Server{}, fmt.Errorf("cell: hand the leadership over: %w", ErrClosed)
		}
	}
}

// currentVoter is transferable's look, once.
func (n *Node) currentVoter(to *raft.Server) (raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, err
	}
	term, last, now := n.raft.CurrentTerm(), n.raft.LastIndex(), time.Now()
	self := raft.ServerID(n.self.Fingerprint.String())
	var pick raft.Server
	var best uint64
	var why []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || s.ID == self || to != nil && s.ID != to.ID {
			continue
		}
		r := n.net.replicationTo(s.ID)
		if ok, reason := r.current(now, term, last, n.cfg.HeartbeatTimeout); !ok {
			why = append(why, fmt.Sprintf("%s: %s", s.Address, reason))
			continue
		}
		if m := r.matchedIn(term); pick.ID == "" || m > best {
			pick, best = s, m
		}
	}
	if pick.ID != "" {
		return pick, nil
	}
	if len(why) == 0 {
		why = append(why, "no other voter")
	}
	return raft.Server{}, fmt.Errorf("%w (%s)", errNoCurrentVoter, strings.Join(why, "; "))
}

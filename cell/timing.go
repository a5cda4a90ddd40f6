package cell

import (
	"net"
	"slices"
	"sync"
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
//
// Votes answered late. A candidacy ends when raft's election timer fires
// (a draw between the election timeout and twice it): a candidate whose
// pre-votes, or then votes, are granted by a majority only after that
// stands again in the next term, and the grants of the last one are
// dropped. Grants that take longer than the draw every time elect no one,
// however long it goes on: a cell starved of CPU (session 22: every
// member in one process at load 40-45 elected no one for 18-35 s, 169
// candidacies in 30 s) or on disks slow to fsync (a voter syncs the term
// and its vote, twice, before it answers, and a candidate its term before
// it asks; an SD card or a busy disk takes 100 ms to over a second per
// fsync). The kernel's round trip shows neither. So each member times the
// grants of its own vote and pre-vote requests: for each round (a term's
// pre-votes, or its votes), the grant that completes a majority with its
// own vote (the first of a cell of three's two others, the second of a
// cell of five's four) is how long that candidacy needed to win. If a
// round took at least the configured timeout (raft's shortest draw:
// shorter rounds win more often than not, and a cell under ordinary load
// keeps its timeouts) within the last voteWindow, the member's election timeout is raised by what twice the
// slowest such (votesLate; up to the RPC timeout: an answer later than
// that is a failed request, never counted) exceeds the configured one,
// on top of the stagger, which it keeps; its next candidacies then wait
// for the grants, and the cell elects.
//
// Only the grants a majority needs count: a frozen or partitioned
// member's late one, once the others' came in time, changes nothing.
// Refusals do not count, however late: waiting longer would not have won
// the candidacy, and the raise lengthens the wait after a refused
// pre-vote campaign too (a member restarting, its transport up before its
// raft, refused a pre-vote after 948 ms; raised on that, the other member
// waited 2-4 s to stand again, and a leader frozen for 3 s came back to
// lead before anyone was elected: internal/jepsen, pause-leader, session
// 23). Otherwise the raise costs only split votes (each waits the longer
// timeout out): an election whose grants come back in time ends with
// them, whatever the timeout. It is logged when set (`cell: election
// timeout raised: votes answered late`), and lapses voteWindow after the
// last slow round, back to the round trip's (staggered) timeout.

const (
	// timingEvery is how often a member measures the round trip and
	// sets its election timeout.
	timingEvery = time.Second
	// rttWindow: a connection counts for the round trip if it received
	// data within it.
	rttWindow = 5 * time.Second
	// voteWindow: a slow round of votes counts for the election timeout
	// for this long (votesLate).
	voteWindow = 30 * time.Second
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
// (staggered) and the votes answered lately (votesLate) every
// timingEvery, and as a round of votes completes late, until the node
// closes.
func (n *Node) timingLoop() {
	n.everyOrWoken(or(n.cfg.timingEvery, timingEvery), n.timingWake, n.setTiming)
}

// setTiming sets raft's election timeout from the round trip measured
// now (staggered) and the votes answered lately (votesLate), if the
// timeout that gives differs by more than an eighth from raft's. With no
// round trip measured the round trip's part stays as it was.
func (n *Node) setTiming() {
	r := n.running()
	if r == nil {
		return
	}
	rtt, measured := n.net.measuredRTT()
	floor, took := n.votes.floor(n.cfg.ElectionTimeout, max(n.cfg.RPCTimeout, n.cfg.ElectionTimeout), time.Now())
	if !measured && floor == 0 && !n.votes.raised() {
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
	stagger := n.votes.stagger(rc.ElectionTimeout)
	if measured {
		stagger = staggered(n.cfg.ElectionTimeout, rank, rtt, stagger)
		n.votes.setStagger(stagger)
	}
	// The votes' floor lifts the whole stagger, so that members raised
	// for votes answered late are still parted by rank.
	raise := max(floor-n.cfg.ElectionTimeout, 0)
	want := stagger + raise
	n.votes.setRaised(raise > 0)
	if d := want - rc.ElectionTimeout; d.Abs() <= rc.ElectionTimeout/8 {
		return
	}
	rc.ElectionTimeout = want
	if err := r.ReloadConfig(rc); err != nil {
		n.cfg.Logger.Warn("cell: set the election timeout", "timeout", want, "err", err)
		return
	}
	// Raft gives a leadership transfer up after the timeout it has now:
	// TimeoutNow's bound must outlast it (raftNet.transferWait).
	n.net.transferWait.Store(int64(2 * want))
	if raise > 0 {
		n.cfg.Logger.Info("cell: election timeout raised: votes answered late", "timeout", want, "slowest", took.Round(time.Millisecond),
			"rtt", rtt, "rank", rank, "voters", len(voters))
		return
	}
	n.cfg.Logger.Info("cell: election timeout set from the round trip", "timeout", want, "rtt", rtt, "rank", rank, "voters", len(voters))
}

// voteRound is one round of a candidacy's requests: its term's pre-votes
// or its votes.
type voteRound struct {
	pre  bool
	term uint64
}

// votesLate keeps, of a member's rounds of vote requests, how long each
// took to be granted by as many members as it needed, for the election
// timeout (see above), and the timeout's part from the round trip.
type votesLate struct {
	// window is voteWindow, or Config.voteWindow (tests).
	window time.Duration

	mu sync.Mutex
	// rounds are the recent rounds' grants so far. A round is its
	// requests' kind and term, and when they were sent: a candidate
	// whose pre-votes failed asks again in the same term, an election
	// timeout later (at least base), and its requests are sent together.
	rounds []roundAnswers
	// slowest is the slowest round that completed within voteWindow, at
	// when it did. (The slowest, kept until it lapses: a faster round
	// after a slower one replaces it only then.)
	slowest   time.Duration
	slowestAt time.Time
	// staggerSet is the timeout from the round trip last set (0: none
	// yet); raisedSet says the timeout set was raised past it for votes.
	staggerSet time.Duration
	raisedSet  bool
}

// roundAnswers counts the grants of one round's requests.
type roundAnswers struct {
	round  voteRound
	sent   time.Time
	grants int
}

// granted records a grant of a request of round sent at sent that
// took took, with need grants in all completing the majority; it
// reports whether the round is now complete and took at least
// base (the timing loop should look now, not at its next tick).
func (v *votesLate) granted(round voteRound, sent time.Time, took time.Duration, need int, base time.Duration) bool {
	if need <= 0 {
		return false
	}
	now := sent.Add(took)
	v.mu.Lock()
	defer v.mu.Unlock()
	// A round is done with once no grant of it can come: each request
	// fails at the RPC timeout, which is at most a minute.
	v.rounds = slices.DeleteFunc(v.rounds, func(r roundAnswers) bool { return now.Sub(r.sent) > time.Minute })
	i := slices.IndexFunc(v.rounds, func(r roundAnswers) bool { return r.round == round && (r.sent.Sub(sent)).Abs() < base/2 })
	if i < 0 {
		v.rounds = append(v.rounds, roundAnswers{round: round, sent: sent})
		i = len(v.rounds) - 1
	}
	v.rounds[i].grants++
	if v.rounds[i].grants != need {
		return false
	}
	if took >= v.slowest || now.Sub(v.slowestAt) > v.window {
		v.slowest, v.slowestAt = took, now
	}
	return took >= base
}

// floor returns the least election timeout the rounds of the last
// voteWindow call for (0: none): twice the slowest, at most ceiling, if
// it took at least base; and how long that round took.
func (v *votesLate) floor(base, ceiling time.Duration, now time.Time) (time.Duration, time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.slowest < base || now.Sub(v.slowestAt) > v.window {
		return 0, 0
	}
	return min(2*v.slowest, ceiling), v.slowest
}

// stagger returns the timeout from the round trip last set, or current
// if none was.
func (v *votesLate) stagger(current time.Duration) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.staggerSet == 0 {
		return current
	}
	return v.staggerSet
}

func (v *votesLate) setStagger(d time.Duration) {
	v.mu.Lock()
	v.staggerSet = d
	v.mu.Unlock()
}

// raised reports whether the timeout last set was raised for votes (so
// that it comes back once they lapse, whether or not a round trip is
// measured then).
func (v *votesLate) raised() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.raisedSet
}

func (v *votesLate) setRaised(raised bool) {
	v.mu.Lock()
	v.raisedSet = raised
	v.mu.Unlock()
}

// voteGranted is the raft transport's report of a grant of this
// member's vote or pre-vote request (raftNet.timedVote): a round that
// completed a majority late wakes the timing loop.
func (n *Node) voteGranted(round voteRound, sent time.Time, took time.Duration) {
	r := n.running()
	if r == nil {
		return
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	// A majority of voters, this member's own vote among them.
	if n.votes.granted(round, sent, took, voters/2, n.cfg.ElectionTimeout) {
		select {
		case n.timingWake <- struct{}{}:
		default: // a wake-up is pending
		}
	}
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

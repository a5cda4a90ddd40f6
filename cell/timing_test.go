package cell

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestElectionTimeoutFollowsRoundTrip: each voter's election timeout is
// the configured one plus its rank among the voters' keys times the round
// trip measured: it rises when the links slow (a round trip under half
// the configured timeout adds nothing), steps by at most the configured
// timeout however long the round trip, stays as it was while nothing is
// measured (a candidate whose leader died), stays raised for a round trip
// between a third and half the configured one (no flipping), and comes
// back when the links clear. The round trip is the test's (Config.rtt)
// in place of the kernel's.
func TestElectionTimeoutFollowsRoundTrip(t *testing.T) {
	var rtt atomic.Int64      // the round trip every member measures; -1: none
	var measured atomic.Int64 // times a member measured it
	c := newTestCell(t, 3, false, func(cfg *Config) {
		// Measured every 100 ms, not every second: each step below waits
		// for a round or two of every member's (the test took 7-8 s).
		cfg.timingEvery = 100 * time.Millisecond
		// Votes answered late (a loaded machine) raise the timeouts
		// for the window after (TestElectsWhileVotesAnsweredLate): not
		// what this test looks at.
		cfg.voteWindow = time.Nanosecond
		cfg.rtt = func() (time.Duration, bool) {
			measured.Add(1)
			d := time.Duration(rtt.Load())
			return d, d >= 0
		}
	})
	c.leader()
	var ids []string
	for _, m := range c.members {
		ids = append(ids, m.id.Fingerprint().String())
	}
	slices.Sort(ids)
	timeout := func(m *testMember) time.Duration { return m.node.raft.ReloadableConfig().ElectionTimeout }
	each := func(what string, want func(rank int) time.Duration) {
		t.Helper()
		waitUntil(t, what, func() bool {
			for _, m := range c.members {
				if timeout(m) != want(slices.Index(ids, m.id.Fingerprint().String())) {
					return false
				}
			}
			return true
		})
	}
	base := DefaultElectionTimeout

	rtt.Store(int64(200 * time.Millisecond))
	each("election timeouts staggered by 200 ms round trips", func(rank int) time.Duration {
		return base + time.Duration(rank)*200*time.Millisecond
	})
	rtt.Store(-1) // nothing measured: as they were
	since := measured.Load()
	waitUntil(t, "two rounds of measuring by every member", func() bool { return measured.Load() >= since+2*int64(len(c.members)) })
	for _, m := range c.members {
		if got, want := timeout(m), base+time.Duration(slices.Index(ids, m.id.Fingerprint().String()))*200*time.Millisecond; got != want {
			t.Fatalf("with no round trip measured, %s's election timeout changed to %v from %v", m.addr, got, want)
		}
	}
	// One member on a link of seconds, or a bogus reading: a step of at
	// most the configured timeout, so none above it times the voters.
	rtt.Store(int64(8 * time.Second))
	each("election timeouts staggered by at most the configured one per rank, an 8 s round trip measured", func(rank int) time.Duration {
		return base + time.Duration(rank)*base
	})
	// Under half the configured timeout but not a third: raised, they stay
	// raised (stepping by the round trip) rather than flip back and forth.
	rtt.Store(int64(120 * time.Millisecond))
	each("election timeouts still staggered, a 120 ms round trip measured after a raise", func(rank int) time.Duration {
		return base + time.Duration(rank)*120*time.Millisecond
	})
	rtt.Store(int64(60 * time.Millisecond)) // what a LAN's follower measures, delayed acknowledgements counted in
	each("election timeouts back to the configured one, a LAN's round trip measured", func(int) time.Duration { return base })
}

// TestStaggeredCapped: the stagger steps by the round trip up to the
// configured timeout and no further, whatever the figure measured; a
// raised timeout comes back below a third of the configured one, not half.
func TestStaggeredCapped(t *testing.T) {
	const base = 300 * time.Millisecond
	for _, c := range []struct {
		rank     int
		rtt, now time.Duration
		want     time.Duration
	}{
		{0, 10 * time.Second, base, base},
		{1, 140 * time.Millisecond, base, base},                   // under half: no stagger
		{1, 200 * time.Millisecond, base, 500 * time.Millisecond}, // a round trip per rank
		{2, 200 * time.Millisecond, base, 700 * time.Millisecond},
		{2, 540 * time.Millisecond, base, 900 * time.Millisecond}, // capped at base per rank
		{4, 5 * time.Second, base, 5 * base},
		{4, time.Duration(1<<32-1) * time.Microsecond, base, 5 * base},              // the largest TCP_INFO figure
		{2, 140 * time.Millisecond, 700 * time.Millisecond, 580 * time.Millisecond}, // raised: stays so down to a third
		{2, 99 * time.Millisecond, 700 * time.Millisecond, base},                    // under a third: back
	} {
		if got := staggered(base, c.rank, c.rtt, c.now); got != c.want {
			t.Errorf("staggered(%v, %d, %v, now %v) = %v, want %v", base, c.rank, c.rtt, c.now, got, c.want)
		}
	}
}

// TestElectsWhileVotesAnsweredLate: a cell whose members answer every
// vote and pre-vote request 700 ms late, past raft's draw of 300-600 ms
// (as a cell starved of CPU does, or one on disks slow to fsync the
// votes), still elects a leader: each member times the answers to its
// own requests and raises its election timeout to twice the slowest
// round's, so that its next candidacies wait for them. Without the raise
// every candidacy ends before its answers come, and no one is ever
// elected.
func TestElectsWhileVotesAnsweredLate(t *testing.T) {
	const late = 700 * time.Millisecond
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.received = func(req any) {
			switch req.(type) {
			case *raft.RequestVoteRequest, *raft.RequestPreVoteRequest:
				time.Sleep(late) // the fault: each answer late, not a wait for an event
			}
		}
	})
	l := c.leader()
	// It won a candidacy that waited for its answers: its timeout was
	// raised past them.
	if got := l.node.raft.ReloadableConfig().ElectionTimeout; got < 2*late {
		t.Errorf("the leader's election timeout is %v, want at least twice the answers' %v", got, late)
	}
}

// TestVotesLateCountsTheMajority: a round's time is that of the grant
// that completes a majority with the candidate's own vote (refusals never
// reach it: raftNet.timedVote), so a member that grants late once the
// others did (frozen, cut off) raises nothing; a candidate asking again
// in the same term (its pre-votes failed) is a round of its own; rounds
// under the configured timeout (raft's shortest draw) raise nothing; the
// raise is twice the slowest round, at most the ceiling, and lapses after
// the window.
func TestVotesLateCountsTheMajority(t *testing.T) {
	const base, ceiling = 300 * time.Millisecond, 5 * time.Second
	t0 := time.Unix(1000, 0)
	v := votesLate{window: 30 * time.Second}
	floor := func(at time.Time) time.Duration { f, _ := v.floor(base, ceiling, at); return f }

	// A cell of three (one answer needed): a fast answer, then the
	// frozen member's, 3 s late.
	pre := voteRound{pre: true, term: 7}
	if v.granted(pre, t0, 20*time.Millisecond, 1, base) {
		t.Error("a round answered in 20 ms woke the timing loop")
	}
	if v.granted(pre, t0, 3*time.Second, 1, base) {
		t.Error("a late answer after the majority's woke the timing loop")
	}
	if got := floor(t0.Add(3 * time.Second)); got != 0 {
		t.Errorf("floor after a round the majority answered in 20 ms = %v, want 0", got)
	}
	if v.granted(voteRound{pre: true, term: 6}, t0, 250*time.Millisecond, 1, base) {
		t.Error("a round granted in 250 ms, under the configured 300 ms, woke the timing loop")
	}
	if got := floor(t0.Add(time.Second)); got != 0 {
		t.Errorf("floor after a round granted in 250 ms = %v, want 0", got)
	}

	// The same term's pre-votes asked again an election timeout later,
	// answered late: a round of its own.
	again := t0.Add(base)
	if !v.granted(pre, again, 700*time.Millisecond, 1, base) {
		t.Error("a round answered in 700 ms did not wake the timing loop")
	}
	at := again.Add(700 * time.Millisecond)
	if got := floor(at); got != 1400*time.Millisecond {
		t.Errorf("floor after a round of 700 ms = %v, want 1.4s", got)
	}
	// A faster round after it does not lower it while it lasts; a
	// slower one raises it, up to the ceiling.
	v.granted(voteRound{term: 8}, at, 100*time.Millisecond, 1, base)
	if got := floor(at.Add(time.Second)); got != 1400*time.Millisecond {
		t.Errorf("floor after a faster round = %v, want 1.4s still", got)
	}
	v.granted(voteRound{term: 9}, at, 4*time.Second, 1, base)
	if got := floor(at.Add(4 * time.Second)); got != ceiling {
		t.Errorf("floor after a round of 4 s = %v, want the ceiling %v", got, ceiling)
	}
	if got := floor(at.Add(4*time.Second + 31*time.Second)); got != 0 {
		t.Errorf("floor 31 s after the last slow round = %v, want 0 (lapsed)", got)
	}

	// A cell of five (two answers needed): the second answer is the
	// round's.
	five := votesLate{window: 30 * time.Second}
	r := voteRound{term: 3}
	if five.granted(r, t0, 10*time.Millisecond, 2, base) {
		t.Error("the first of two answers needed completed the round")
	}
	if !five.granted(r, t0, 800*time.Millisecond, 2, base) {
		t.Error("the second of two answers needed, 800 ms late, did not complete the round late")
	}
	if got, _ := five.floor(base, ceiling, t0.Add(time.Second)); got != 1600*time.Millisecond {
		t.Errorf("floor of a cell of five after its second answer came in 800 ms = %v, want 1.6s", got)
	}
}

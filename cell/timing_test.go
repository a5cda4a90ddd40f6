package cell

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
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

package cell

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestElectionTimeoutFollowsRoundTrip: each voter's election timeout is
// the configured one plus its rank among the voters' keys times the round
// trip measured: it rises when the links slow, comes back when they clear
// (a round trip under half the configured timeout adds nothing), and stays
// as it was while nothing is measured (a candidate whose leader died). The round trip is the test's (Config.rtt) in place of the
// kernel's.
func TestElectionTimeoutFollowsRoundTrip(t *testing.T) {
	var rtt atomic.Int64      // the round trip every member measures; -1: none
	var measured atomic.Int64 // times a member measured it
	c := newTestCell(t, 3, false, func(cfg *Config) {
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
	rtt.Store(int64(60 * time.Millisecond)) // what a LAN's follower measures, delayed acknowledgements counted in
	each("election timeouts back to the configured one, a LAN's round trip measured", func(int) time.Duration { return base })
}

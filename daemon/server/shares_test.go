package server

import (
	"net/netip"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestCutCallGivesBack cuts off a stalled call for a newcomer, lets it give
// back part of what it holds before it ends (as a call does when its
// request buffer is released), then ends it: what the shares count as on
// its way back (cutting) must come back to zero, or every later newcomer
// would find less to cut and wait instead.
func TestCutCallGivesBack(t *testing.T) {
	l := defaultShares()
	l.addr[resRequest], l.total[resRequest] = 100, 100
	s := newShares(l)
	attacker := s.attach(netip.MustParsePrefix("192.0.2.1/32"), wire.Fingerprint{1})
	newcomer := s.attach(netip.MustParsePrefix("192.0.2.2/32"), wire.Fingerprint{2})
	c := &Call{}
	if !attacker.admit(c) {
		t.Fatal("admit refused")
	}
	s.mu.Lock()
	attacker.addLocked(c, resRequest, 100)
	cut := newcomer.cutLocked(resRequest, 50)
	s.mu.Unlock()
	if len(cut) != 1 || !c.cut.Load() {
		t.Fatalf("%d calls cut, want the stalled one", len(cut))
	}
	attacker.give(c, resRequest, 60)
	attacker.end(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := s.cutting; got != (amounts{}) {
		t.Fatalf("cutting %v after the cut call ended, want nothing", got)
	}
	if got := s.held; got != (amounts{}) {
		t.Fatalf("held %v after the cut call ended, want nothing", got)
	}
}

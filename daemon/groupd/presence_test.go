package groupd

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// testClock is a clock a test sets by hand.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) now() time.Time    { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t int64)       { c.ns.Store(t) }
func newTestClock(t0 int64) *testClock { c := &testClock{}; c.set(t0); return c }

// members returns the group's members by name, as p sees them.
func (p *peer) members(g wire.UUID) map[string]wire.Member {
	p.t.Helper()
	var ml wire.MemberList
	must(p.t, p.call(wire.OpMembers, wire.GroupRef{Group: g}, &ml))
	out := make(map[string]wire.Member, len(ml.Members))
	for _, m := range ml.Members {
		out[m.Name] = m
	}
	return out
}

// openWatch starts a watch and reads its Start frame; the caller cancels it.
func (p *peer) openWatch(g wire.UUID) *quic.Stream {
	p.t.Helper()
	str := p.open(request(p.t, wire.OpWatch, wire.Watch{Group: g}))
	f, err := readFrame(str)
	must(p.t, err)
	if f.kind != wire.KindStart {
		p.t.Fatalf("watch: first frame of kind %d, want Start", f.kind)
	}
	p.t.Cleanup(func() { str.CancelRead(0x1); str.CancelWrite(0x1) })
	return str
}

// TestGroupPresence checks the members reply's presence: a member is online
// exactly while it has a watch open (two watches: until both end), and its
// last_seen is when it last made a request or ended a watch, or the reply's
// time while it is online.
func TestGroupPresence(t *testing.T) {
	const t0 = int64(1_800_000_000_000_000_000)
	clock := newTestClock(t0)
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour, Now: clock.now})
	g := gid(d)
	alice := joined(t, d, "alice")
	clock.set(t0 + 1e9)
	bob := joined(t, d, "bob")

	clock.set(t0 + 2e9)
	ms := bob.members(g)
	if a := ms["alice"]; a.Online || a.LastSeen != t0 {
		t.Fatalf("alice before any watch: %+v, want offline, last seen at her join %d", a, t0)
	}
	if b := ms["bob"]; b.Online || b.LastSeen != t0+2e9 {
		t.Fatalf("bob asking for members: %+v, want offline, last seen now %d", b, t0+2e9)
	}

	clock.set(t0 + 3e9)
	w1 := alice.openWatch(g)
	w2 := alice.openWatch(g)
	clock.set(t0 + 4e9)
	if a := bob.members(g)["alice"]; !a.Online || a.LastSeen != t0+4e9 {
		t.Fatalf("alice watching: %+v, want online, last seen now %d", a, t0+4e9)
	}

	clock.set(t0 + 5e9)
	w1.CancelRead(0x1)
	w1.CancelWrite(0x1)
	eventually(t, "the first watch to end", func() bool { return int64(d.srv.Stats().Streams) == 1 })
	if a := bob.members(g)["alice"]; !a.Online {
		t.Fatalf("alice with one watch left: %+v, want online", a)
	}
	clock.set(t0 + 6e9)
	w2.CancelRead(0x1)
	w2.CancelWrite(0x1)
	eventually(t, "the second watch to end", func() bool { return int64(d.srv.Stats().Streams) == 0 })
	clock.set(t0 + 7e9)
	if a := bob.members(g)["alice"]; a.Online || a.LastSeen != t0+6e9 {
		t.Fatalf("alice after her watches ended: %+v, want offline, last seen when the last ended %d", a, t0+6e9)
	}

	// A send and a fetch count as being seen; a clock stepping back does
	// not move last_seen back.
	clock.set(t0 + 8e9)
	_, err := alice.send(g, outgoing("hi"))
	must(t, err)
	clock.set(t0 + 7_500_000_000)
	_, _, err = alice.fetch(wire.Fetch{Group: g})
	must(t, err)
	if a := bob.members(g)["alice"]; a.LastSeen != t0+8e9 {
		t.Fatalf("alice after a send at %d and a fetch at an earlier time: %+v", t0+8e9, a)
	}
}

// TestGroupPresenceAfterLeave checks that a watch ended by leaving does not
// leave its member online when it joins again.
func TestGroupPresenceAfterLeave(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	g := gid(d)
	alice := joined(t, d, "alice")
	bob := joined(t, d, "bob")
	alice.openWatch(g)
	if !bob.members(g)["alice"].Online {
		t.Fatal("alice watching: not online")
	}
	must(t, alice.call(wire.OpLeave, wire.GroupRef{Group: g}, nil))
	if _, ok := bob.members(g)["alice"]; ok {
		t.Fatal("alice listed after leaving")
	}
	eventually(t, "the watch to end", func() bool { return int64(d.srv.Stats().Streams) == 0 })
	must(t, alice.call(wire.OpJoin, wire.Join{Group: g, Name: "alice"}, nil))
	if a := bob.members(g)["alice"]; a.Online {
		t.Fatalf("alice joined again without a watch: %+v, want offline", a)
	}
}

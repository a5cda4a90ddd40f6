package cli

import (
	"bytes"
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestJoinDaemonMemberKeyOnly: huddle join GROUP --daemon FINGERPRINT
// with a cell member's key takes the group at that member: a rogue
// registry listing the cell's UUID with the member's key beside one of
// its own, leading, had the CLI send the join (the user's name, a
// private group's secret) to the rogue's key, and record it in the
// group's replica set, dialled from then on. The member named is the one
// dialled and the one recorded; the set is followed from its word.
func TestJoinDaemonMemberKeyOnly(t *testing.T) {
	group := wire.UUID{7}
	member, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	m := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		switch c.Op() {
		case wire.OpInfo:
			return c.Result(wire.Info{Group: group, Name: "general", Epoch: 1, Members: 1, Member: true, Fingerprint: member.Fingerprint(),
				Limits: wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}})
		case wire.OpMembers:
			return c.Result(wire.MemberList{})
		case wire.OpJoin:
			return c.Result(wire.Joined{Epoch: 1})
		}
		return &wire.Error{Code: wire.CodeUnsupported}
	})
	if err := m.Listen(member); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var rogueAsked atomic.Int32
	rogueID, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	rogue := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		rogueAsked.Add(1)
		return &wire.Error{Code: wire.CodeUnauthorized, Message: "no"}
	})
	if err := rogue.Listen(rogueID); err != nil {
		t.Fatal(err)
	}
	if err := rogue.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rogue.Close)
	rs := []wire.Replica{{Addr: m.Addr().String(), Fingerprint: member.Fingerprint()},
		{Addr: rogue.Addr().String(), Fingerprint: rogueID.Fingerprint(), Leader: true}}
	slices.SortFunc(rs, func(a, b wire.Replica) int { return bytes.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
	reg := listingRegistry(t, wire.GroupEntry{Group: group, Name: "general", Addrs: []string{rogue.Addr().String()},
		Fingerprint: rogueID.Fingerprint(), ExpiresMS: 60_000, Replicas: rs})
	u := newTestUser(t, reg)
	u.ok(t, "join", group.String(), "--as", "me", "--daemon", member.Fingerprint().String())
	if n := rogueAsked.Load(); n != 0 {
		t.Errorf("the rogue's key, listed beside the member named, was asked %d times", n)
	}
	set, err := loadJoined(u.home)
	if err != nil {
		t.Fatal(err)
	}
	for k, l := range set {
		if k.Daemon == rogueID.Fingerprint() || slices.Contains(l.cell, rogueID.Fingerprint()) {
			t.Errorf("the joined file records the rogue's key: %v %v", k, l.cell)
		}
	}
	if !set.has(wire.GroupEntry{Group: group, Fingerprint: member.Fingerprint()}) {
		t.Errorf("the group is not recorded at the member named: %v", set)
	}
}

package cli

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// statusDaemon runs a daemon of its own key that answers cell_status
// naming itself and the members *members holds (nil: it refuses), and
// counts the questions in asked.
func statusDaemon(t *testing.T, members *atomic.Pointer[[]wire.Fingerprint], asked *atomic.Int32) wire.Replica {
	t.Helper()
	return cellStatusDaemon(t, func(_ context.Context, self wire.Replica) (wire.CellStatus, error) {
		asked.Add(1)
		keys := members.Load()
		if keys == nil {
			return wire.CellStatus{}, &wire.Error{Code: wire.CodeUnavailable}
		}
		var rs []wire.Replica
		for _, fp := range *keys {
			rs = append(rs, wire.Replica{Addr: "127.0.0.1:9", Fingerprint: fp})
		}
		return wire.CellStatus{Self: self, State: "follower", Term: 2, Members: rs}, nil
	})
}

// cellStatusDaemon runs a daemon of its own key that answers cell_status
// with what answer returns (self: the daemon, at its address), and
// refuses every other operation.
func cellStatusDaemon(t *testing.T, answer func(ctx context.Context, self wire.Replica) (wire.CellStatus, error)) wire.Replica {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var s *server.Server
	s = server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpCellStatus {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		st, err := answer(ctx, wire.Replica{Addr: s.Addr().String(), Fingerprint: id.Fingerprint()})
		if err != nil {
			return err
		}
		return c.Result(st)
	})
	if err := s.Listen(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return wire.Replica{Addr: s.Addr().String(), Fingerprint: id.Fingerprint()}
}

// TestJoinedCellRemovedMemberAlone: a member removed from a cell (its
// host taken out, its key stolen since) is still in the replica set the
// joined file records until the set is followed; a rogue registry listing
// the group with that key alone, at the thief's address, had the CLI ask
// it first and record what it answered, a set of the thief's own keys,
// which it then dialled. The set recorded changes only when a majority of
// it answers the new set alike (client.CellMembers).
func TestJoinedCellRemovedMemberAlone(t *testing.T) {
	var aSays, bSays, cSays atomic.Pointer[[]wire.Fingerprint]
	var asked atomic.Int32
	a := statusDaemon(t, &aSays, &asked) // removed, its key stolen
	b := statusDaemon(t, &bSays, &asked)
	c := statusDaemon(t, &cSays, &asked)
	d, rogue := wire.Fingerprint{0xd}, wire.Fingerprint{0xe}
	aSays.Store(&[]wire.Fingerprint{a.Fingerprint, rogue})
	group := wire.UUID{7}
	dir := t.TempDir()
	s := &session{home: dir}
	s.joined, _ = loadJoined(dir)
	s.record(t.Context(), wire.GroupEntry{Group: group, Name: "general", Fingerprint: b.Fingerprint, Addrs: []string{b.Addr},
		Replicas: []wire.Replica{a, {Addr: b.Addr, Fingerprint: b.Fingerprint, Leader: true}, c}})

	cl := newTestClient(t)
	// The rogue registry's listing: the group at the stolen key alone,
	// leading; the real registry's: the cell now (b, c and d).
	rogueListing := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: group, Name: "general", Fingerprint: a.Fingerprint, Addrs: []string{a.Addr},
		Replicas: []wire.Replica{{Addr: a.Addr, Fingerprint: a.Fingerprint, Leader: true}}}}
	real := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: group, Name: "general", Fingerprint: b.Fingerprint, Addrs: []string{b.Addr},
		Replicas: []wire.Replica{{Addr: b.Addr, Fingerprint: b.Fingerprint, Leader: true}, c, {Addr: "127.0.0.1:9", Fingerprint: d}}}}
	k := joinedGroup{group, b.Fingerprint}
	groups := []client.ListedGroup{rogueListing, real}

	// b and c do not answer (an attacker may keep them from it): the
	// thief's word alone changes nothing.
	set, changed, _ := followCell(t.Context(), cl, dir, lockfile.Locker{Wait: defaultLockWait}, s.joined, k, groups)
	if l := set[k]; changed || !slices.Equal(l.cell, []wire.Fingerprint{a.Fingerprint, b.Fingerprint, c.Fingerprint}) {
		t.Fatalf("the removed member's word alone: changed %v, set %v; want the set recorded, unchanged", changed, l.cell)
	}
	if after, _ := loadJoined(dir); slices.ContainsFunc(after[k].cell, func(fp wire.Fingerprint) bool { return fp == rogue }) {
		t.Fatalf("the joined file records the thief's key: %v", after[k].cell)
	}
	if asked.Load() == 0 {
		t.Fatal("nobody was asked")
	}

	// b answers the cell as it is, c lags (the set it had): no majority.
	now := []wire.Fingerprint{b.Fingerprint, c.Fingerprint, d}
	bSays.Store(&now)
	cSays.Store(&[]wire.Fingerprint{a.Fingerprint, b.Fingerprint, c.Fingerprint})
	if _, changed, _ := followCell(t.Context(), cl, dir, lockfile.Locker{Wait: defaultLockWait}, s.joined, k, groups); changed {
		t.Fatal("recorded a set one member of three answered")
	}
	// b and c answer it alike: the set follows the cell.
	cSays.Store(&now)
	set, changed, _ = followCell(t.Context(), cl, dir, lockfile.Locker{Wait: defaultLockWait}, s.joined, k, groups)
	got := slices.Clone(set[k].cell)
	slices.SortFunc(got, func(x, y wire.Fingerprint) int { return slices.Compare(x[:], y[:]) })
	want := slices.Clone(now)
	slices.SortFunc(want, func(x, y wire.Fingerprint) int { return slices.Compare(x[:], y[:]) })
	if !changed || !slices.Equal(got, want) {
		t.Fatalf("b and c answer the cell alike: changed %v, set %v; want %v", changed, got, want)
	}
}

package cli

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// gatedStatusDaemon runs a daemon of its own key that answers cell_status
// naming itself and says, once gate is closed; until then each question
// waits (or ends with its stream).
func gatedStatusDaemon(t *testing.T, says []wire.Fingerprint, asked func(), gate <-chan struct{}) wire.Replica {
	t.Helper()
	return cellStatusDaemon(t, func(ctx context.Context, self wire.Replica) (wire.CellStatus, error) {
		asked()
		select {
		case <-gate:
		case <-ctx.Done():
			return wire.CellStatus{}, ctx.Err()
		}
		rs := []wire.Replica{self}
		for _, fp := range says {
			rs = append(rs, wire.Replica{Addr: "127.0.0.1:9", Fingerprint: fp})
		}
		return wire.CellStatus{Self: self, State: "leader", Term: 2, Members: rs}, nil
	})
}

// TestGroupsFollowsCellsAtOnce: huddle groups asks the members of every
// cell the user joined whose listings name other members at once
// (followCells). It asked them one after the other, up to 4 s each: here
// each cell's member answers only once both have been asked, so one
// after the other, the first went unanswered and was not followed.
func TestGroupsFollowsCellsAtOnce(t *testing.T) {
	gate := make(chan struct{})
	var asked atomic.Int32
	var once sync.Once
	ask := func() {
		if asked.Add(1) == 2 {
			once.Do(func() { close(gate) })
		}
	}
	d, e := wire.Fingerprint{0xd}, wire.Fingerprint{0xe}
	a := gatedStatusDaemon(t, []wire.Fingerprint{d}, ask, gate)
	b := gatedStatusDaemon(t, []wire.Fingerprint{e}, ask, gate)
	set := joinedSet{}
	var entries []wire.GroupEntry
	for i, m := range []struct {
		r     wire.Replica
		added wire.Fingerprint
	}{{a, d}, {b, e}} {
		g := wire.UUID{byte(i + 1)}
		entries = append(entries, wire.GroupEntry{Group: g, Name: fmt.Sprintf("cell%d", i), Addrs: []string{m.r.Addr}, Fingerprint: m.r.Fingerprint, ExpiresMS: 15000,
			Replicas: []wire.Replica{{Addr: m.r.Addr, Fingerprint: m.r.Fingerprint, Leader: true}, {Addr: "127.0.0.1:9", Fingerprint: m.added}}})
		set[joinedGroup{g, m.r.Fingerprint}] = joinedLine{name: fmt.Sprintf("cell%d", i), cell: []wire.Fingerprint{m.r.Fingerprint}}
	}
	u := newTestUser(t, listingRegistry(t, entries...))
	if err := saveJoined(u.home, set); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := u.run(t, "groups"); code != ExitOK {
		t.Fatalf("huddle groups: exit %d:\n%s", code, stderr)
	}
	after, err := loadJoined(u.home)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		k    joinedGroup
		want []wire.Fingerprint
	}{{joinedGroup{wire.UUID{1}, a.Fingerprint}, []wire.Fingerprint{a.Fingerprint, d}}, {joinedGroup{wire.UUID{2}, b.Fingerprint}, []wire.Fingerprint{b.Fingerprint, e}}} {
		if got := after[m.k].cell; len(got) != len(m.want) || slices.ContainsFunc(m.want, func(fp wire.Fingerprint) bool { return !slices.Contains(got, fp) }) {
			t.Errorf("cell %v after huddle groups: members %v; want %v (followed)", m.k.Group, got, m.want)
		}
	}
}

package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellStatusGroupsBounded: CellStatus takes a member's answer listing
// at most wire.MaxCellGroups groups, with how many more it hosts
// (GroupsOmitted), and refuses one listing more (ErrProtocol, ErrTooLarge):
// a member hosting many groups, or a hostile one, answered as much as a
// frame holds, all of which the client decoded and a program took for the
// cell's groups.
func TestCellStatusGroupsBounded(t *testing.T) {
	var self atomic.Pointer[wire.Replica]
	var listed atomic.Int64
	e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpCellStatus {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		me := *self.Load()
		st := wire.CellStatus{Self: me, State: "leader", Term: 2, Members: []wire.Replica{me}, GroupsOmitted: 7}
		for i := range listed.Load() {
			st.Groups = append(st.Groups, wire.CellGroup{Group: wire.UUID{byte(i), byte(i >> 8)}, Name: "g", Epoch: 1})
		}
		return c.Result(st)
	})
	self.Store(&wire.Replica{Addr: e.Addrs[0], Fingerprint: e.Fingerprint})
	c := newClient(t)
	listed.Store(wire.MaxCellGroups)
	if st, err := c.CellStatus(t.Context(), e.Addrs[0], e.Fingerprint); err != nil || len(st.Groups) != wire.MaxCellGroups || st.GroupsOmitted != 7 {
		t.Errorf("a status of %d groups, 7 omitted: %d groups, %d omitted, %v", wire.MaxCellGroups, len(st.Groups), st.GroupsOmitted, err)
	}
	// Groups left out, fewer than the first MaxCellGroups listed: the
	// count was taken as the groups left out (huddle cell status showed
	// "and 7 more groups not listed" after one group), though a member
	// leaves out only what is past them.
	for _, n := range []int64{0, 1, wire.MaxCellGroups - 1} {
		listed.Store(n)
		if st, err := c.CellStatus(t.Context(), e.Addrs[0], e.Fingerprint); !errors.Is(err, client.ErrProtocol) {
			t.Errorf("a status of %d groups, 7 more left out: %d groups, %d omitted, %v; want ErrProtocol", n, len(st.Groups), st.GroupsOmitted, err)
		}
	}
	listed.Store(wire.MaxCellGroups + 1)
	if _, err := c.CellStatus(t.Context(), e.Addrs[0], e.Fingerprint); !errors.Is(err, client.ErrProtocol) || !errors.Is(err, client.ErrTooLarge) {
		t.Errorf("a status of %d groups: %v, want ErrProtocol and ErrTooLarge", wire.MaxCellGroups+1, err)
	}
}

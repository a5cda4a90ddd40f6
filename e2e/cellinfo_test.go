//go:build linux

package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellInfoPastDeadMember: a handle on a cell's group asks for its info
// and members at any live member once the one it knew is killed, as huddle
// web's handles do across elections (they are kept; the page asks each
// group's info every 30 s). Info and Members asked the member the handle
// knew alone: walking huddle web in session 15, a cell's group was shown
// "unreachable" from the first info after its leader's death on, while
// the cell served it and a join through the same handle worked.
func TestCellInfoPastDeadMember(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	members, peers := newCellMembers(t, 3, 3)
	startMembers(t, members, peers, reg.registry)
	var replicas []wire.Replica
	for _, m := range members {
		replicas = append(replicas, wire.Replica{Addr: m.addr, Fingerprint: m.fp})
	}
	var group string
	for _, m := range members {
		group = cellGroupLine(t, m)
	}
	gid, err := uuid.Parse(group)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	h, err := cl.Group(wire.GroupEntry{Group: gid, Name: "general", Addrs: []string{members[0].addr}, Fingerprint: members[0].fp, Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := h.Join(ctx, "reader", nil); err != nil {
		t.Fatalf("join: %v", err)
	}
	if _, err := h.Info(ctx); err != nil {
		t.Fatalf("info: %v", err)
	}

	// Kill the leader, which the handle knows from the join: the other
	// two are a majority, and serve the group.
	var leader *cellMember
	for _, r := range h.Replicas() {
		for _, m := range members {
			if r.Leader && r.Fingerprint == m.fp {
				leader = m
			}
		}
	}
	if leader == nil {
		t.Fatalf("no leader among the replicas the handle knows: %+v", h.Replicas())
	}
	leader.p.stop(t, syscall.SIGKILL)
	for _, ask := range []struct {
		what string
		call func(context.Context) error
	}{
		{"info", func(ctx context.Context) error { _, err := h.Info(ctx); return err }},
		{"members", func(ctx context.Context) error { _, err := h.Members(ctx); return err }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := ask.call(ctx)
		cancel()
		if err != nil {
			t.Errorf("%s with the member the handle knew killed, two of three running: %v; want an answer from another member", ask.what, err)
		}
	}
}

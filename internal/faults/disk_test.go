//go:build linux

package faults

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/internal/testdisk"
	"github.com/huddle-chat/huddle/wire"
)

// smallDisk mounts a tmpfs of 256 KiB on a new directory, unmounted when
// the test ends, and returns the directory and a function that fills it.
func smallDisk(t *testing.T) (dir string, fill func() (free func())) {
	t.Helper()
	return testdisk.Small(t, "256k")
}

// TestFullDiskMembership runs a group daemon whose state directory is on a
// disk that fills up: joins and leaves are then refused as unavailable
// and change nothing (the refused joiner cannot send, the refused leaver
// still can), a SIGKILL and restart on the full disk finds exactly the
// membership that was acknowledged, and once there is room again the
// same requests succeed.
func TestFullDiskMembership(t *testing.T) {
	dir, fill := smallDisk(t)
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	defer reg.kill(syscall.SIGTERM)
	groups := startGroups(t, regAddr, dir)
	stayer, refused := newUser(t), newUser(t)
	var listed map[string]wire.GroupEntry
	eventually(t, "the groups listed", func() bool { listed = stayer.listed(regAddr); return len(listed) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	group := func(u *user) *client.Group {
		g, err := u.cl.Group(listed["alpha"])
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	gs, gr := group(stayer), group(refused)
	if _, err := gs.Join(ctx, "stayer", nil); err != nil {
		t.Fatal(err)
	}

	free := fill()
	if _, err := gr.Join(ctx, "refused", nil); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("join on a full disk: %v, want unavailable", err)
	}
	if _, err := gs.Leave(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("leave on a full disk: %v, want unavailable", err)
	}
	check := func(when string) {
		t.Helper()
		if _, err := gr.Send(ctx, []byte("let me in")); !errors.Is(err, client.ErrNotMember) {
			t.Fatalf("%s: the refused joiner's send: %v, want not a member", when, err)
		}
		if _, err := gs.Send(ctx, []byte("still here")); err != nil {
			t.Fatalf("%s: the refused leaver's send: %v, want it stored", when, err)
		}
	}
	check("on the full disk")

	groups.kill(syscall.SIGKILL)
	startGroups(t, regAddr, dir) // on a new port, found through the registry
	eventually(t, "the groups listed again", func() bool {
		l := stayer.listed(regAddr)
		if e, ok := l["alpha"]; ok && e.Addrs[0] != listed["alpha"].Addrs[0] {
			listed = l
			return true
		}
		return false
	})
	gs, gr = group(stayer), group(refused)
	check("after a restart on the full disk")

	free()
	if _, err := gr.Join(ctx, "refused", nil); err != nil {
		t.Fatalf("join once there is room: %v", err)
	}
	if _, err := gr.Send(ctx, []byte("in at last")); err != nil {
		t.Fatalf("send after joining: %v", err)
	}
}

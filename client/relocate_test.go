package client_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// listedAtDeadAddr registers lobby, under the key of the daemon whose
// state is in stateDir, at a UDP address that reads datagrams and answers
// none (a daemon SIGKILLed, as a client's dial sees it), and returns that
// socket and a registry handle holding the daemon's key. The registration
// replaces the daemon's own, as a restarted daemon's does.
func listedAtDeadAddr(t *testing.T, reg string, regFP wire.Fingerprint, stateDir string, group wire.UUID) (net.PacketConn, *client.Registry) {
	t.Helper()
	key, err := identity.LoadOrCreate(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close() })
	r, err := owner.Registry(testCtx(t), reg, regFP)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	if _, err := r.Register(testCtx(t), client.Registration{Group: group, Name: "lobby", Addrs: []string{dead.LocalAddr().String()}}); err != nil {
		t.Fatal(err)
	}
	return dead, r
}

// TestGroupFollowsDaemonToNewAddress checks that a handle from a listing
// that names a daemon's old address (it was killed and started again
// elsewhere, under the same key, after the listing was read) finds the
// daemon where it registered since: it used to dial the old address until
// DialTimeout and fail. The new registration is made once the client's
// dial has reached the old address.
func TestGroupFollowsDaemonToNewAddress(t *testing.T) {
	stateDir := t.TempDir()
	r, d, _ := setup(t, groupd.Config{StateDir: stateDir})
	ctx := testCtx(t)
	group := d.Groups()[0].ID
	openGroup(t, newClient(t), r.Addr().String(), "lobby") // the daemon registered, so its registration comes before ours
	dead, owner := listedAtDeadAddr(t, r.Addr().String(), r.Fingerprint(), stateDir, group)

	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	moved := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		if _, _, err := dead.ReadFrom(buf); err != nil {
			moved <- err
			return
		}
		_, err := owner.Register(ctx, client.Registration{Group: group, Name: "lobby", Addrs: []string{d.Addr().String()}})
		moved <- err
	}()
	info, err := g.Info(ctx)
	if err != nil {
		t.Fatalf("info of a group whose daemon moved while the handle was made: %v", err)
	}
	select {
	case err := <-moved:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the handle never dialled the address listed")
	}
	if info.Name != "lobby" {
		t.Errorf("info %+v, want lobby's", info)
	}
}

// TestGroupUnlistedWhileDialled checks that a call to a daemon that does
// not answer, whose listing lapses while it is dialled, fails saying that
// no registry lists the group any more.
func TestGroupUnlistedWhileDialled(t *testing.T) {
	stateDir := t.TempDir()
	r, d, stop := setup(t, groupd.Config{StateDir: stateDir})
	group := d.Groups()[0].ID
	c := newClient(t)
	openGroup(t, c, r.Addr().String(), "lobby")
	stop() // deregisters lobby; nothing renews the listing below
	listedAtDeadAddr(t, r.Addr().String(), r.Fingerprint(), stateDir, group)

	g := openGroup(t, c, r.Addr().String(), "lobby")
	_, err := g.Info(testCtx(t))
	if !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), "group lobby of daemon "+d.Fingerprint().Short()+" is no longer listed by the registries that answered ("+r.Addr().String()+")") {
		t.Fatalf("info of a group whose listing lapsed while its dead daemon was dialled: %v, want unreachable, no registry lists it", err)
	}
	var nl *client.NotListedError
	if !errors.As(err, &nl) || nl.Group != "lobby" || nl.Daemon != d.Fingerprint() || len(nl.Registries) != 1 || nl.Registries[0] != r.Addr().String() {
		t.Fatalf("info of a group no registry lists: %#v, want a NotListedError naming lobby, daemon %s and registry %s", nl, d.Fingerprint().Short(), r.Addr())
	}
}

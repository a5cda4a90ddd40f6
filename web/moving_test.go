package web

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestHandleKeptWhileAddressesMove has a rogue registry list the user's
// group under its real key at a new address at every poll (where nothing
// answers), beside the real registry: merge opened a new handle on the
// group at every poll (a new connection to its daemon) and closed the one
// before, so that a call that had taken it failed (a send: 404 not_found,
// "no registry lists the group any more"). A handle whose daemon answers,
// at an address still listed, is kept.
func TestHandleKeptWhileAddressesMove(t *testing.T) {
	r := startRegistry(t)
	real, _ := startGroups(t, r, groupd.Config{})
	id := real.Groups()[0].ID
	var lists atomic.Int64
	listed := make(chan struct{}, 1)
	rid, err := identity.Generate()
	must(t, err)
	rogue := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "registry"}, func(ctx context.Context, c *server.Call) error {
		var l wire.List
		if err := c.Decode(&l); err != nil {
			return err
		}
		n := lists.Add(1)
		select {
		case listed <- struct{}{}:
		default:
		}
		e := wire.GroupEntry{Group: id, Name: "lobby", Addrs: []string{fmt.Sprintf("127.0.0.1:%d", 20000+n%20000)},
			Fingerprint: real.Fingerprint(), ExpiresMS: 60_000}
		return c.Result(wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{e}})
	})
	must(t, rogue.Listen(rid))
	must(t, rogue.Start())
	t.Cleanup(rogue.Close)
	s := startWeb(t, newClient(t), r.Addr().String(), rogue.Addr().String())
	a := newAPI(t, s)
	a.events("").waitGroups("lobby listed by both, reached", func(l listJSON) bool {
		return len(l.Groups) == 1 && len(l.Groups[0].Registries) == 2 && l.Groups[0].Reachable
	})
	if st := a.do("POST", "/api/groups/"+id.String()+"/join", map[string]string{"name": "me"}, nil); st != 200 {
		t.Fatalf("join: HTTP %d", st)
	}
	h := s.dir.handle(id)
	// Ten polls of the rogue, each listing a new address; a send between
	// each.
	for i := range 10 {
		<-listed
		<-listed // the first may have been answered before h was taken
		var e errorReply
		if st := a.do("POST", "/api/groups/"+id.String()+"/messages", map[string]string{"text": fmt.Sprint(i)}, e.reset()); st != 200 {
			t.Errorf("send %d: HTTP %d %+v", i, st, e.Error)
		}
	}
	if s.dir.handle(id) != h {
		t.Errorf("the handle on the group was replaced while its daemon answered at an address still listed (%d listings of the rogue)", lists.Load())
	}
}

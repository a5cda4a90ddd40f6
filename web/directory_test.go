package web

import (
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon"
)

// waitGroups reads groups events until ok holds for one's list.
func (s *sse) waitGroups(what string, ok func(listJSON) bool) listJSON {
	s.t.Helper()
	for {
		ev := s.next("groups")
		var l listJSON
		must(s.t, jsonDecodeString(ev.raw, &l))
		if ok(l) {
			return l
		}
		_ = what
	}
}

func names(l listJSON) map[string]groupJSON {
	m := map[string]groupJSON{}
	for _, g := range l.Groups {
		m[g.Name] = g
	}
	return m
}

// TestDirectoryEveryRegistry lists the groups of two registries as one
// list, live: a group registering later appears in an open stream, a
// registry that stops answering keeps its groups listed for a while (it
// may be restarting) and is reported, and a group whose daemon stopped
// leaves the list once its lease is gone.
func TestDirectoryEveryRegistry(t *testing.T) {
	r1, r2 := startRegistry(t), startRegistry(t)
	startGroups(t, r1, daemon.GroupConfig{Groups: []daemon.GroupSpec{{Name: "lobby"}}})
	startGroups(t, r2, daemon.GroupConfig{Groups: []daemon.GroupSpec{{Name: "ops", Secret: []byte("s3cret")}}})
	a := newAPI(t, startWeb(t, newClient(t), r1.Addr().String(), r2.Addr().String()))
	s := a.events("")
	l := s.waitGroups("lobby and ops", func(l listJSON) bool { n := names(l); return n["lobby"].Reachable && n["ops"].Reachable })
	n := names(l)
	if n["lobby"].Registries[0] != r1.Addr().String() || n["ops"].Registries[0] != r2.Addr().String() || !n["ops"].Private || n["lobby"].Private {
		t.Fatalf("list %+v", l)
	}
	if len(l.Registries) != 2 || !l.Registries[0].OK || !l.Registries[1].OK {
		t.Fatalf("registries %+v", l.Registries)
	}

	_, stopDev := startGroups(t, r2, daemon.GroupConfig{Groups: []daemon.GroupSpec{{Name: "dev"}}})
	t.Log("dev started", time.Now().Format("05.000"))
	s.waitGroups("dev to appear", func(l listJSON) bool { _, ok := names(l)["dev"]; return ok })

	// r1 stops: lobby stays listed (its last good listing), r1 is reported.
	r1Stop := time.Now()
	t.Log("stopping r1", time.Now().Format("05.000"))
	stopRegistry(t, r1)
	t.Log("stopped r1", time.Now().Format("05.000"))
	l = s.waitGroups("r1 reported down", func(l listJSON) bool { return !l.Registries[0].OK })
	if _, ok := names(l)["lobby"]; !ok && time.Since(r1Stop) < staleListing {
		t.Fatalf("lobby dropped as soon as its registry stopped answering: %+v", l)
	}

	// dev's daemon stops: it deregisters, and leaves the list.
	t.Log("r1 down seen", time.Now().Format("05.000"))
	stopDev()
	t.Log("dev stopped", time.Now().Format("05.000"))
	s.waitGroups("dev to go", func(l listJSON) bool { _, ok := names(l)["dev"]; return !ok })
}

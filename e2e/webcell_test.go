//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/wire"
)

// listedEntry returns the entry of group that `huddle groups --json`
// shows u once the registries name a leader of its cell.
func listedEntry(t *testing.T, u *user, group string) wire.GroupEntry {
	t.Helper()
	var e wire.GroupEntry
	if !eventually(t, waitTimeout, func() bool {
		for _, line := range strings.Split(strings.TrimSpace(u.ok(t, "groups", "--json")), "\n") {
			var g struct {
				UUID        string   `json:"uuid"`
				Name        string   `json:"name"`
				Addrs       []string `json:"addrs"`
				Fingerprint string   `json:"fingerprint"`
				Replicas    []struct {
					Addr        string `json:"addr"`
					Fingerprint string `json:"fingerprint"`
					Leader      bool   `json:"leader"`
				} `json:"replicas"`
			}
			if err := json.Unmarshal([]byte(line), &g); err != nil {
				t.Fatalf("huddle groups --json: %v: %s", err, line)
			}
			if g.UUID != group {
				continue
			}
			e = wire.GroupEntry{Group: uuid.MustParse(g.UUID), Name: g.Name, Addrs: g.Addrs, Fingerprint: mustFingerprint(t, g.Fingerprint)}
			led := false
			for _, r := range g.Replicas {
				e.Replicas = append(e.Replicas, wire.Replica{Addr: r.Addr, Fingerprint: mustFingerprint(t, r.Fingerprint), Leader: r.Leader})
				led = led || r.Leader
			}
			return led && len(e.Replicas) == 3
		}
		return false
	}) {
		t.Fatalf("no registry named a leader of %s's cell", group)
	}
	return e
}

func mustFingerprint(t *testing.T, s string) wire.Fingerprint {
	t.Helper()
	fp, err := wire.ParseFingerprint(s)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// TestWebCellGroup runs a real cell of three members and two registries
// that name different leaders of its group: the cell's own, and one that
// lists it as it was a moment before (a follower leading, its lease
// shorter), as registries do for a few seconds around a leader change,
// each renewed by another member. Until 0a039a5 huddle web filed the
// group by daemon key: the two looked like two daemons, the group was
// marked so, and a join not made under the key it used was refused (409
// clash). As client.Merge does, the group is one, led by the member of the
// latest lease, not marked; bob joins it from the page, and his sends
// reach the leader and the page's watch shows what others send, also
// after the leader is killed.
func TestWebCellGroup(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	members, peers := newCellMembers(t, 3, 3)
	startMembers(t, members, peers, reg.registry)
	group := cellGroupLine(t, members[0])
	ann := newUser(t, "ann", reg.registry)
	waitCellListed(t, ann, group)
	ann.join(t, "general")
	real := listedEntry(t, ann, group)

	// The other registry names a follower as the leader, at its own
	// address and key (one of the replicas', as every registry does).
	stale := real
	stale.Replicas = append([]wire.Replica(nil), real.Replicas...)
	for i := range stale.Replicas {
		r := &stale.Replicas[i]
		r.Leader = r.Fingerprint != real.Fingerprint && stale.Fingerprint == real.Fingerprint
		if r.Leader {
			stale.Fingerprint, stale.Addrs = r.Fingerprint, []string{r.Addr}
		}
	}
	stale.ExpiresMS = 1000
	other := rogueRegistry(t, stale)

	bob := newUser(t, "bob", reg.registry)
	b := newBrowser(t, 1000, 700)
	b.open(bob.web(t, "--registry", other+","+reg.registry))
	g := fmt.Sprintf(`window.huddle.state.groups.get(%s)`, jsString(group))
	b.waitFor("general listed by both registries", g+`?.registries.length === 2`)
	if clash := eval[bool](b, `!!`+g+`.clash`); clash {
		t.Errorf("general is marked as listed under two daemons; registries name two leaders of one cell")
	}
	// The page names the leader the latest lease names: the cell's own
	// registry's, whichever member that is now. (The cell may have
	// elected another since real was read: a loaded machine misses
	// heartbeats, and the page then rightly followed it.)
	var fp, leads string
	if !eventually(t, waitTimeout, func() bool {
		fp, leads = eval[string](b, g+`.fingerprint`), listedEntry(t, ann, group).Fingerprint.String()
		return fp == leads
	}) {
		t.Errorf("general's daemon is %s; want %s, the leader its latest lease names (the other registry names %s)", fp, leads, stale.Fingerprint.Short())
	}
	b.joinByClick(group, "bob")
	b.typeMessage("one, from the page")
	b.waitFor("bob's message", hasMessage("one, from the page"))
	ann.ok(t, "send", "general", "two, from ann")
	b.waitFor("ann's message, watched", hasMessage("two, from ann"))

	// The leader dies: the page's sends and watch follow the next one.
	// (The one the registry lists now: not real's, if the cell elected
	// another meanwhile.)
	leader := listedEntry(t, ann, group).Fingerprint
	for _, m := range members {
		if m.fp == leader {
			m.p.stop(t, syscall.SIGKILL)
		}
	}
	b.typeMessage("three, after the leader died")
	b.waitFor("bob's message after the kill", hasMessage("three, after the leader died"))
	ann.ok(t, "send", "general", "four, from ann")
	b.waitFor("ann's message after the kill, watched", hasMessage("four, from ann"))
	if out := ann.ok(t, "fetch", "general"); strings.Count(out, "one, from the page") != 1 || strings.Count(out, "three, after the leader died") != 1 {
		t.Errorf("the cell holds:\n%s\nwant each of bob's messages once", out)
	}
	if clash := eval[bool](b, `!!`+g+`.clash`); clash {
		t.Errorf("general is marked as listed under two daemons after the leader changed")
	}
}

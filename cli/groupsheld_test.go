package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestGroupsShowsHeldAndTrusted: huddle groups shows the groups as the
// other commands take them. A rogue registry listing the UUID of a cell's
// group the user joined, with one recorded member's key beside one of its
// own leading, was a row of its own under the joined name ("leads a cell
// of 2", at the rogue's key); it is the group's one row, of its recorded
// members. And a group the user joined listed only under another key (an
// impostor's while its daemon is down, or moved to a new key), which every
// command refuses with a key clash until the user runs huddle join
// --daemon, was a plain row under the registries' name: it is marked held,
// under the name joined, with the key clash's advice (stderr; --json:
// held, joined_daemon, advice).
func TestGroupsShowsHeldAndTrusted(t *testing.T) {
	a, b, c, x := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{0xee}
	cell := wire.UUID{7}
	// The members' address answers at once with a key none of theirs:
	// asked who the cell's members are (the rogue's listing names a key
	// the joined file does not record: followCell), they do not say.
	other := listingRegistry(t)
	real := wire.GroupEntry{Group: cell, Name: "general", Fingerprint: b, Addrs: []string{other}, ExpiresMS: 20000,
		Replicas: []wire.Replica{{Addr: other, Fingerprint: a}, {Addr: other, Fingerprint: b, Leader: true}, {Addr: other, Fingerprint: c}}}
	mixed := wire.GroupEntry{Group: cell, Name: "general", Fingerprint: x, Addrs: []string{"127.0.0.1:9"}, ExpiresMS: 3_600_000,
		Replicas: []wire.Replica{{Addr: other, Fingerprint: a}, {Addr: "127.0.0.1:9", Fingerprint: x, Leader: true}}}
	lobby, joinedAt, impostor := wire.UUID{4, 2}, wire.Fingerprint{1, 1}, wire.Fingerprint{6, 6}
	held := wire.GroupEntry{Group: lobby, Name: "not lobby", Addrs: []string{"127.0.0.1:9"}, Fingerprint: impostor, ExpiresMS: 20000}
	u := newTestUser(t, listingRegistry(t, real)+","+listingRegistry(t, mixed, held))
	writeJoined(t, u,
		cell.String()+" "+a.String()+" general",
		cellLine+" "+cell.String()+" "+a.String()+" "+a.String()+" "+b.String()+" "+c.String(),
		lobby.String()+" "+joinedAt.String()+" lobby")

	// A registry that answers more than 250 ms after the first is left
	// out of that command's listing (straggle; TestListingAcrossRegistries):
	// under -race on the loaded machine the real one was, once, and general
	// was a cell of a alone. Each run below is asked again until both
	// registries are heard: the real one lists b, the rogue's lobby.
	heard := func(out string) bool { return strings.Contains(out, b.Short()) && strings.Contains(out, "lobby") }
	code, out, errs := u.run(t, "groups")
	for deadline := time.Now().Add(waitTimeout); !heard(out) && time.Now().Before(deadline); {
		code, out, errs = u.run(t, "groups")
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(rows) != 3 {
		t.Fatalf("huddle groups: exit %d\n%s\nwant a head and two rows (the cell's group once, lobby)", code, out)
	}
	if strings.Contains(out, x.Short()) || !strings.Contains(rows[1], "general") || !strings.Contains(rows[1], b.Short()+" (leads a cell of 3)") {
		t.Errorf("huddle groups:\n%s\nwant general once, led by %s, a cell of 3, and never the rogue's key %s", out, b.Short(), x.Short())
	}
	if !strings.HasPrefix(rows[2], "lobby ") || !strings.Contains(rows[2], impostor.Short()+" (held: not the key you joined)") || !strings.Contains(rows[2], `"not lobby"`) {
		t.Errorf("huddle groups:\n%s\nwant lobby (the name joined) marked held at %s, also listed as \"not lobby\"", out, impostor.Short())
	}
	advice := "huddle join " + lobby.String() + " --daemon " + impostor.String()
	if !strings.Contains(errs, "held: group lobby") || !strings.Contains(errs, "key clash") || !strings.Contains(errs, joinedAt.Short()) || !strings.Contains(errs, advice) {
		t.Errorf("huddle groups' stderr:\n%s\nwant lobby said held, the key joined (%s), and the advice %q", errs, joinedAt.Short(), advice)
	}

	js := u.ok(t, "groups", "--json")
	for deadline := time.Now().Add(waitTimeout); !heard(strings.ReplaceAll(js, b.String(), b.Short())) && time.Now().Before(deadline); {
		js = u.ok(t, "groups", "--json")
	}
	var got []groupJSON
	for line := range strings.Lines(js) {
		var g groupJSON
		if err := json.Unmarshal([]byte(line), &g); err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	if len(got) != 2 {
		t.Fatalf("--json: %+v; want two groups", got)
	}
	if g := got[0]; g.Name != "general" || g.Held || g.Fingerprint != b.String() || len(g.Replicas) != 3 {
		t.Errorf("--json, general: %+v; want led by b, a cell of 3", g)
	}
	if g := got[1]; g.Name != "lobby" || !g.Held || g.JoinedDaemon != joinedAt.String() || !strings.Contains(g.Advice, advice) {
		t.Errorf("--json, lobby: %+v; want held, joined at %s, with the advice %q", g, joinedAt, advice)
	}
}

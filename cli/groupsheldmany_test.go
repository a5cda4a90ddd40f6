package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestGroupsHeldManyKeys: a rogue registry listing a group the user
// joined under a thousand other keys (one entry a name: lobby-0000, ...)
// makes each a held row, and huddle groups says the key clash once,
// naming a few keys and how many more: the advice of each row named every
// key (14 MB of stderr for 1,000 keys, quadratic in the listing).
func TestGroupsHeldManyKeys(t *testing.T) {
	const n = 1000
	lobby, joinedAt := wire.UUID{4, 2}, wire.Fingerprint{1, 1}
	var entries []wire.GroupEntry
	for i := range n {
		fp := wire.Fingerprint{6, byte(i >> 8), byte(i)}
		entries = append(entries, wire.GroupEntry{Group: lobby, Name: fmt.Sprintf("lobby-%04d", i), Addrs: []string{"127.0.0.1:9"}, Fingerprint: fp, ExpiresMS: 20000})
	}
	u := newTestUser(t, listingRegistry(t, entries...))
	writeJoined(t, u, lobby.String()+" "+joinedAt.String()+" lobby")
	code, out, errs := u.run(t, "groups")
	if code != ExitOK || strings.Count(out, "(held: not the key you joined)") != n {
		t.Fatalf("huddle groups: exit %d, %d bytes; want %d rows held", code, len(out), n)
	}
	if c := strings.Count(errs, "held: group lobby"); c != 1 || len(errs) > 2000 || !strings.Contains(errs, fmt.Sprintf("%d other keys", n-maxKeysShown)) {
		t.Errorf("huddle groups' stderr: %d bytes, the clash said %d times:\n%.2000s\nwant it said once, naming %d keys and %d other keys", len(errs), c, errs, maxKeysShown, n-maxKeysShown)
	}
	_, js, _ := u.run(t, "groups", "--json")
	if per := len(js) / n; per > 2000 {
		t.Errorf("huddle groups --json: %d bytes a row; want each row's advice bounded", per)
	}
}

// TestHeldResolvesOnce: huddle groups resolves a held UUID once for all
// its rows, not once a row over every entry: a rogue registry listing a
// joined UUID under 3,000 keys took 80 s of CPU (cubic).
func TestHeldResolvesOnce(t *testing.T) {
	const n = 20000
	lobby, joinedAt := wire.UUID{4, 2}, wire.Fingerprint{1, 1}
	groups := make([]client.ListedGroup, n)
	for i := range groups {
		groups[i].GroupEntry = wire.GroupEntry{Group: lobby, Name: fmt.Sprintf("lobby-%05d", i), Fingerprint: wire.Fingerprint{6, byte(i >> 8), byte(i)}}
	}
	j := joinedSet{joinedGroup{lobby, joinedAt}: {name: "lobby"}}
	done := make(chan map[joinedGroup]*joinedKeyError, 1)
	go func() { done <- j.held(groups) }()
	select {
	case held := <-done:
		if len(held) != n {
			t.Fatalf("%d held; want %d", len(held), n)
		}
	case <-time.After(20 * time.Second):
		// A bound on the work, not a speed: once per UUID takes
		// milliseconds, once a row (n resolves of n entries, each
		// gathering keys by a list) hours.
		t.Fatal("held of 20,000 keys of one UUID still running after 20 s")
	}
}

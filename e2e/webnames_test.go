//go:build linux

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// rogueRegistry runs a registry of the test's own making that lists
// entries (in a registry's order, by name then UUID), and nothing else;
// it returns its address.
func rogueRegistry(t *testing.T, entries ...wire.GroupEntry) string {
	t.Helper()
	slices.SortFunc(entries, func(a, b wire.GroupEntry) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), bytes.Compare(a.Group[:], b.Group[:]))
	})
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "registry"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() == wire.OpList {
			return c.Result(wire.Groups{Epoch: 1, Groups: entries})
		}
		return &wire.Error{Code: wire.CodeUnauthorized, Message: "a listing only"}
	})
	if err := s.Listen(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Addr().String()
}

// TestWebGroupOtherNames has a rogue registry rename bob's lobby (listed
// at its real daemon, its lease the longest) to a name holding a
// right-to-left override, and list a group of its own as lobby. The page
// showed and matched one registry's name for a group: the two rows read
// "lobby" and a stranger's name, nothing telling which was bob's. As the
// CLI resolves and shows them (huddle groups' ALSO LISTED AS): bob's
// lobby, joined as lobby, is shown so with its other name (each through
// the CLI's rules: the override as U+FFFD, quoted), both rows named lobby
// wear their UUID and daemon, and a filter matches every name. The join
// form offers the name huddle join would take ($USER).
func TestWebGroupOtherNames(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby")
	lobby := up.groups["lobby"]
	bob := newUser(t, "bob", up.registry)
	bob.login = "bobby"
	waitListed(t, bob, lobby)
	bob.join(t, "lobby")
	daemon, err := wire.ParseFingerprint(up.fp)
	if err != nil {
		t.Fatal(err)
	}
	const rename = "our lounge\u202e"
	fake := uuid.MustParse("0193a4f2-1111-7000-8000-00000000000f")
	rogue := rogueRegistry(t,
		wire.GroupEntry{Group: uuid.MustParse(lobby), Name: rename, Addrs: []string{up.addr}, Fingerprint: daemon, ExpiresMS: 3_600_000},
		wire.GroupEntry{Group: fake, Name: "lobby", Addrs: []string{"127.0.0.1:9"}, Fingerprint: wire.Fingerprint{6}, ExpiresMS: 3_600_000})

	b := newBrowser(t, 1000, 700)
	b.open(bob.web(t, "--registry", up.registry+","+rogue))
	real, stranger := jsString(`#joined button[data-group="`+lobby+`"]`), jsString(`#others button[data-group="`+fake.String()+`"]`)
	b.waitFor("bob's lobby listed by both registries, the stranger's beside it", fmt.Sprintf(`
		window.huddle.state.groups.get(%s)?.registries.length === 2 && !!document.querySelector(%s) && !!document.querySelector(%s)`,
		jsString(lobby), real, stranger))
	row := func(sel string) (name, also string, tags []string) {
		t.Helper()
		name = eval[string](b, fmt.Sprintf(`document.querySelector(%s).querySelector('.gname').textContent`, sel))
		also = eval[string](b, fmt.Sprintf(`document.querySelector(%s).querySelector('.also')?.textContent || ''`, sel))
		tags = eval[[]string](b, fmt.Sprintf(`[...document.querySelector(%s).querySelectorAll('.tag')].map(e => e.textContent)`, sel))
		return name, also, tags
	}
	twin := func(tags []string, id string) bool {
		return slices.ContainsFunc(tags, func(s string) bool { return strings.HasPrefix(s, id[:8]+" · ") })
	}
	if name, also, tags := row(real); name != "lobby" || also != `also listed as "our lounge`+"\uFFFD"+`"` || !twin(tags, lobby) {
		t.Errorf("bob's lobby shows %q, %q, tags %q; want lobby (the name he joined it under), also listed as \"our lounge\uFFFD\", with its UUID and daemon", name, also, tags)
	}
	if name, also, tags := row(stranger); name != "lobby" || also != "" || !twin(tags, fake.String()) {
		t.Errorf("the stranger's lobby shows %q, %q, tags %q; want lobby, with its UUID and daemon", name, also, tags)
	}

	// A filter on the other name finds bob's lobby alone.
	b.do("filter on lounge", chromedp.SendKeys(chromedp.ID("filter"), "lounge"))
	b.waitFor("bob's lobby alone", fmt.Sprintf(`!!document.querySelector(%s) && !document.querySelector(%s)`, real, stranger))
	eval[bool](b, `(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`)

	// The stranger's lobby, not joined: the form offers bob's login name.
	b.waitFor("the stranger's lobby, clicked", fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (e) e.click(); return !!e; })()`, stranger))
	b.waitFor("the join form", `!document.getElementById('join-form').hidden`)
	if name := eval[string](b, `document.getElementById('join-name').value`); name != "bobby" {
		t.Errorf("the join form offers the name %q, want bobby ($USER, as huddle join)", name)
	}
	b.screenshot("other-names")
}

// TestWebLookalikeFillersShowDaemons has a rogue registry list, beside a
// "lobby" and a "lounge", groups named "lobby" with a filler in them (the
// Hangul fillers U+3164 and U+115F, the combining grapheme joiner U+034F:
// shown as nothing; the Braille blank U+2800: as a blank), which daemons
// and registries refuse since session 20 but a rogue registry, or one of
// before, may still list, and with a format character that is not
// default-ignorable (U+0600, U+FFF9: the page shows it as U+FFFD). The
// page's look-alike rule drops them, as the CLI's does
// (TestLookalikeDropsFillers): every lobby row wears its UUID and daemon,
// lounge none. Since real daemons refuse fillers (session 20) no test
// showed the page a filler, and the page kept the format characters the
// CLI drops (until session 21).
func TestWebLookalikeFillersShowDaemons(t *testing.T) {
	t.Parallel()
	names := []string{"lobby", "lounge", "lobby\u3164", "\u115Flobby", "lob\u034Fby", "lobby\u2800", "lobby\u0600", "lobby\uFFF9"}
	entries := make([]wire.GroupEntry, len(names))
	for i, name := range names {
		entries[i] = wire.GroupEntry{Group: uuid.MustParse(fmt.Sprintf("0193a4f2-2222-7000-8000-%012x", i)), Name: name,
			Addrs: []string{"127.0.0.1:9"}, Fingerprint: wire.Fingerprint{7, byte(i)}, ExpiresMS: 3_600_000}
	}
	bob := newUser(t, "bob", rogueRegistry(t, entries...))
	b := newBrowser(t, 1000, 700)
	b.open(bob.web(t))
	b.waitFor("every group listed", fmt.Sprintf(`document.querySelectorAll('button[data-group]').length === %d`, len(names)))
	tagged := eval[map[string]bool](b, `Object.fromEntries([...document.querySelectorAll('button[data-group]')].map(r =>
		[r.dataset.group, [...r.querySelectorAll('.tag')].some(e => e.textContent.includes(' · '))]))`)
	for _, e := range entries {
		if want := e.Name != "lounge"; tagged[e.Group.String()] != want {
			t.Errorf("the group named %+q shown with its UUID and daemon: %v, want %v", e.Name, tagged[e.Group.String()], want)
		}
	}
}

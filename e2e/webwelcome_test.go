//go:build linux

package e2e

import (
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/internal/testport"
)

// TestWebWelcomeSaysWhatToStart: the page shown before a group is open
// tells a newcomer with nothing to pick what to start: with no registry
// answering, huddle up (or --registry); with a registry that lists no
// group, a group daemon; once a group is listed, to pick one. Until
// session 21 it said "Pick a group on the left, or join one." over an
// empty list, and only the sidebar's small print said "(not answering)".
// The header says what it is connected to (huddle web: it said
// "connected", in green, while no registry answered) and, beside it, that
// no registry answers, until one does.
func TestWebWelcomeSaysWhatToStart(t *testing.T) {
	t.Parallel()
	addr := testport.Cell(t) // the registry's, started later: reserved, free till then
	alice := newUser(t, "alice", addr)
	ws := alice.web(t, "--no-mdns")
	b := newBrowser(t, 1100, 620)
	b.open(ws)
	why := `document.getElementById('welcome-why')`
	b.waitFor("the welcome to say no registry answers", why+`.textContent.startsWith('No registry answers (`+addr+`)') && !`+why+`.hidden && document.getElementById('welcome-pick').hidden`)
	if got := eval[string](b, why+`.textContent`); !strings.Contains(got, "huddle up") || !strings.Contains(got, "--registry HOST:PORT") {
		t.Errorf("the welcome with no registry: %q; want it to name huddle up and --registry", got)
	}
	reach := `document.getElementById('reach')`
	if got := eval[string](b, `document.getElementById('conn').textContent + ' | ' + (`+reach+`.hidden ? '(hidden)' : `+reach+`.textContent)`); got != "connected to huddle web | its registry does not answer" {
		t.Errorf("the header with no registry answering says %q, want the link to huddle web and that its registry does not answer", got)
	}
	b.screenshot("welcome")

	reg := startDaemon(t, "registry", "--listen", addr, "--state-dir", t.TempDir(), "--lease", "10m")
	b.waitFor("the welcome to say no group is listed", why+`.textContent.startsWith('No group is listed yet (registries: `+addr+`)')`)
	if !eval[bool](b, reach+`.hidden`) {
		t.Errorf("the registry answers; the header still says %q", eval[string](b, reach+`.textContent`))
	}
	if got := eval[string](b, why+`.textContent`); !strings.Contains(got, "huddle serve --group NAME") {
		t.Errorf("the welcome with no group: %q; want it to name huddle serve --group", got)
	}

	startDaemon(t, "serve", "--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	b.waitFor("the welcome to say pick a group", why+`.hidden && !document.getElementById('welcome-pick').hidden && document.querySelector('#others button[data-group]') !== null`)

	// The form to join it keeps "daemon" and the daemon's key on one line.
	b.waitFor("the form to join lobby", `(() => { const e = document.querySelector('#others button[data-group]'); if (e) e.click(); return !document.getElementById('join-form').hidden; })()`)
	keptWhole := `[...document.querySelectorAll('#join-about span')].some(s => s.textContent.startsWith('daemon ') && getComputedStyle(s).whiteSpace === 'nowrap')`
	if about := eval[string](b, `document.getElementById('join-about').textContent`); !eval[bool](b, keptWhole) {
		t.Errorf("the join form says %q, its daemon's key not kept on one line with the word daemon", about)
	}
}

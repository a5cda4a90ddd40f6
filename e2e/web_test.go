//go:build linux

package e2e

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// TestWebLook is a first look: alice's page with lobby open.
func TestWebLook(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--group", "dev")
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"], up.groups["dev"])
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	alice.okInput(t, "good morning\nanyone up for lunch?\n", "send", "lobby")
	bob.ok(t, "send", "lobby", "yes! 12:30 at the usual place")
	ws := alice.web(t)
	b := newBrowser(t, 1200, 760)
	b.open(ws)
	b.waitFor("lobby listed", `[...document.querySelectorAll('#joined button')].some(b => b.textContent.includes('lobby'))`)
	b.do("open lobby", chromedp.Click(chromedp.CSS(`#joined button[data-group="`+up.groups["lobby"]+`"]`)))
	b.waitFor("the messages", `document.querySelectorAll('.msg').length >= 3`)
	b.screenshot("look")
	t.Log(b.text())
}

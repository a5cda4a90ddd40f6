//go:build linux

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestWebSendsInOrder types six messages faster than the group lets a
// member send (one a second, no burst). The page used to send each on its
// own and retry each after the wait the daemon named: the held-back ones
// raced each other, and the group stored them out of the order typed
// ("rate 5", "rate 6", "rate 4"). They are sent one after another, each
// waiting for the one before it, and stored as typed.
func TestWebSendsInOrder(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby",
		"--max-batch", "1", "--send-burst", "1", "--send-rate", "1")
	lobby := up.groups["lobby"]
	alice := newUser(t, "alice", up.registry)
	waitListed(t, alice, lobby)
	alice.join(t, "lobby")
	b := newBrowser(t, 1000, 800)
	b.open(alice.web(t))
	b.openJoined(lobby)
	var want []string
	for i := 1; i <= 6; i++ {
		want = append(want, fmt.Sprintf("in order %d", i))
		b.typeMessage(want[i-1])
	}
	b.waitFor("a message held back by the rate limit, in words", `[...document.querySelectorAll('.msg.pending .state')].some(e => e.textContent.includes('Slow down: lobby limits how fast each member sends'))`)
	for _, text := range want {
		b.waitForWithin("each message stored", hasMessage(text), 2*waitTimeout)
	}
	var stored []string
	for _, m := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json")) {
		stored = append(stored, m.Text)
	}
	if !slices.Equal(stored, want) {
		t.Errorf("stored in the order %q, want the order typed %q", stored, want)
	}
	if shown := eval[[]string](b, msgTexts); !slices.Equal(shown, want) {
		t.Errorf("the page shows %q, want %q", shown, want)
	}
	if pending := eval[int](b, `document.querySelectorAll('.msg.pending').length`); pending != 0 {
		t.Errorf("%d messages still pending, want none\npage:\n%s", pending, strings.Join(eval[[]string](b, msgTexts), "\n"))
	}
}

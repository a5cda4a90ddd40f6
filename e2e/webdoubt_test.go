//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// doubtShim wraps the page's fetch: a send (POST .../messages) is answered
// as the page's window.doubtMode says, "doubt" (the outcome unknown, as
// huddle web says of a send cut short: in_doubt with its id),
// "doubtOnce" (in doubt once, then passed on to huddle web),
// "doubtThenRefuse" (in doubt once, then a final refusal, as after the
// group's handle was replaced and forgot the ID in doubt), "doubtThenWindow"
// (in doubt once, then window_passed, as a daemon whose dedup window no
// longer reaches back to the first try answers), "pass" (passed on to
// huddle web, counted), "held" or "heldDoubt" (held until window.release()
// is called, a try under way, then passed on, or answered in doubt), or
// passed on to huddle web (empty). window.sends counts the sends answered,
// and window.bodies holds their requests' bodies.
const doubtShim = `(() => {
  const real = window.fetch.bind(window);
  window.sends = 0;
  window.bodies = [];
  window.doubtMode = '';
  window.fetch = async (path, init) => {
    if (!(init && init.method === 'POST' && String(path).endsWith('/messages')) || !window.doubtMode) return real(path, init);
    window.sends++;
    const mode = window.doubtMode;
    if (mode === 'held' || mode === 'heldDoubt') {
      await new Promise(release => { window.release = release; });
      window.release = null;
    }
    if (mode === 'pass' || mode === 'held' || mode === 'doubtOnce' && window.sends > 1) return real(path, init);
    window.bodies.push(JSON.parse(init.body));
    const id = JSON.parse(init.body).id;
    let body = {error: {code: 'unavailable', message: 'connection lost under the send', in_doubt: true, id}};
    if (window.doubtMode === 'doubtThenRefuse' && window.sends > 1) body = {error: {code: 'not_member', message: 'not a member'}};
    if (window.doubtMode === 'doubtThenWindow' && window.sends > 1) body = {error: {code: 'window_passed', message: 'past the dedup window', in_doubt: true, id}};
    return new Response(JSON.stringify(body), {status: 503, headers: {'Content-Type': 'application/json'}});
  };
  return true;
})()`

// oldDaemonShim makes the page see its groups' daemons as older than
// session 21's, whose info does not say send_after: they do not check a
// retry's position, and the page bounds its retries in doubt against
// them. Every groups list the page takes from now on is stripped of it.
const oldDaemonShim = `(() => {
  const st = window.huddle.state;
  const set = st.groups.set.bind(st.groups);
  st.groups.set = (k, g) => { delete g.send_after; return set(k, g); };
  for (const g of st.groups.values()) delete g.send_after;
  for (const c of st.convs.values()) c.sendAfter = false;
  return true;
})()`

// TestWebSendInDoubtStaysInDoubt: a message whose send was in doubt (the
// daemon may have stored it) is retried under its ID a bounded number of
// times against a daemon that does not check a retry's position (one older
// than session 21: oldDaemonShim), as its ID dedups only within the
// group's window, then shown as
// "may have been sent" with Retry (same ID) and Discard, never "not sent"
// with Edit (which resends under a new ID: stored twice if the first try
// was stored). A later final refusal does not make it "not sent" either.
// The page used to retry it forever, and, told a final refusal on a later
// try, said "not sent" and offered Edit.
func TestWebSendInDoubtStaysInDoubt(t *testing.T) {
	t.Parallel()
	b, alice, conv := doubtPage(t, false)
	if !eval[bool](b, oldDaemonShim) {
		t.Fatal("the old daemon shim did not install")
	}
	fastRetries(b)

	// Always in doubt: the page gives up after its bound, keeping the doubt.
	eval[bool](b, `window.doubtMode = 'doubt', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText("in doubt always"), pressEnter())
	b.waitFor("retries of the message in doubt to stop", failedState("in doubt always")+` !== ''`)
	if got := eval[string](b, failedState("in doubt always")); !strings.HasPrefix(got, "may have been sent") || !strings.HasSuffix(got, "RetryDiscard") {
		t.Errorf("after its retries, the message in doubt says %q, want 'may have been sent ...' with Retry and Discard", got)
	}
	if n := triesWhenOver(b, conv); n != 8 {
		t.Errorf("the page tried the message in doubt %d times, want 8 (its bound)", n)
	}
	b.screenshot("web-send-in-doubt")

	// In doubt once, then refused for good: still in doubt.
	eval[bool](b, `window.sends = 0, window.doubtMode = 'doubtThenRefuse', true`)
	b.do("paste, Enter", insertText("in doubt then refused"), pressEnter())
	b.waitFor("the refused message in doubt to fail", failedState("in doubt then refused")+` !== ''`)
	if got := eval[string](b, failedState("in doubt then refused")); !strings.HasPrefix(got, "may have been sent") || strings.Contains(got, "Edit") {
		t.Errorf("a message in doubt then refused says %q, want 'may have been sent ...' without Edit", got)
	}

	// Retry (same ID) through huddle web: stored once.
	resentOnce(t, b, alice, "in doubt always")
}

// TestWebSendInDoubtUnplacedStaysBounded: a message in doubt whose retries
// cannot name where the log stood before its first try (the page did not
// know: its conversation not loaded by then) is checked by no daemon, even
// one that says send_after, so its retries keep the bound of 8. The page
// is made not to know by forgetting its cursor; the group's daemon is
// today's (send_after).
func TestWebSendInDoubtUnplacedStaysBounded(t *testing.T) {
	t.Parallel()
	b, _, conv := doubtPage(t, false)
	fastRetries(b)
	b.waitFor("lobby listed with send_after", conv+`.sendAfter === true`)
	// Forgotten once lobby's first page is in: its arrival sets the
	// cursor it brings when none is known (in the lead's CI a page that
	// arrived after the cursor was forgotten made the first try placed,
	// and the page retried it past the bound, rightly).
	b.waitFor("lobby's first page loaded", conv+`.loaded === true && !`+conv+`.loading`)
	eval[bool](b, conv+`.cursorKnown = false, window.doubtMode = 'doubt', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText("in doubt, unplaced"), pressEnter())
	b.waitFor("retries of the message in doubt to stop", failedState("in doubt, unplaced")+` !== ''`)
	if n := triesWhenOver(b, conv); n != 8 {
		t.Errorf("the page tried the message in doubt %d times, want 8 (its bound: no retry named a position)", n)
	}
	if named := eval[bool](b, `window.bodies.some(x => 'after_seq' in x || 'after_epoch' in x)`); named {
		t.Errorf("a retry named a position the page did not know: %s", eval[string](b, `JSON.stringify(window.bodies)`))
	}
}

// TestWebSendInDoubtGoesOnWithSendAfter: against a daemon that checks a
// retry's position (send_after, info key 15: today's), every retry of a
// message in doubt is safe (refused window_passed rather than stored a
// second time), so the page goes on retrying past its bound of 8 tries,
// and settles the message, stored once, when the daemon is back from a
// stop (unlisted meanwhile). Until session 22 it stopped after 8 tries
// (~40 s) whatever the daemon, leaving a message the daemon would have
// settled "may have been sent" with Retry. While the group is away, no
// daemon has said it checks retries (the one back may be an older one:
// TestWebSendInDoubtHeldForOlderDaemon), so the ninth try waits for the
// daemon's word, and goes once it is back. A user may still stop the
// retries: Stop turns the message to Retry and Discard.
func TestWebSendInDoubtGoesOnWithSendAfter(t *testing.T) {
	t.Parallel()
	const text = "in doubt while the daemon was away"
	w := heldPastBound(t, text)
	b, lobby := w.b, w.lobby
	b.screenshot("web-send-in-doubt-goes-on")

	// The daemon comes back where it was, with its log: the next retry
	// settles the message, stored once.
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", w.reg.registry, "--listen", w.gd.addr, "--state-dir", w.state)
	defer gd.stop(t)
	b.waitForWithin("the message in doubt stored", hasMessage(text), 60*time.Second)
	if n := eval[int](b, `document.querySelectorAll('.msg.pending').length`); n != 0 {
		t.Errorf("%d messages still pending once the message in doubt was stored", n)
	}
	if out := w.bob.ok(t, "fetch", "lobby"); strings.Count(out, text) != 1 {
		t.Errorf("the daemon holds:\n%s\nwant the message in doubt once", out)
	}

	// Stop: a message in doubt retried is turned to Retry and Discard,
	// and tried no more.
	const stopped = "in doubt, stopped"
	eval[bool](b, `window.sends = 0, window.doubtMode = 'doubt', true`)
	b.do("paste, Enter", insertText(stopped), pressEnter())
	stop := `[...document.querySelectorAll('.msg.pending')].find(m => m.querySelector('.text').textContent === ` + jsString(stopped) +
		`)?.querySelector('.state button')`
	b.waitFor("Stop on the message in doubt", stop+`?.textContent === 'Stop'`)
	eval[bool](b, stop+`.click(), true`)
	b.waitFor("the retries stopped", failedState(stopped)+` !== ''`)
	if got := eval[string](b, failedState(stopped)); !strings.HasPrefix(got, "may have been sent") || !strings.HasSuffix(got, "RetryDiscard") {
		t.Errorf("a message in doubt stopped says %q, want 'may have been sent ...' with Retry and Discard", got)
	}
	// Its sending over (the page's outbox empty, nothing being sent),
	// no try can follow.
	n := eval[int](b, `window.sends`)
	if m := triesWhenOver(b, `window.huddle.state.convs.get(`+jsString(lobby)+`)`); m != n {
		t.Errorf("the page tried the stopped message %d more times", m-n)
	}
}

// TestWebSendInDoubtHeldForOlderDaemon: a message in doubt retried while
// its group is away (its daemon stopped, unlisted) past its bound of 8
// tries is held for the word of the daemon that comes back; one that does
// not check a retry's position (older than session 21: its groups listed
// without send_after from then on) stops it: "may have been sent", with
// Retry and Discard, after its 8 tries. Session 22's page kept the word of
// the daemon gone (send_after) while the group was away, and went on
// retrying past its bound into an older daemon back in its place, until
// huddle web had asked that one.
func TestWebSendInDoubtHeldForOlderDaemon(t *testing.T) {
	t.Parallel()
	const text = "in doubt, an older daemon back"
	w := heldPastBound(t, text)
	b, lobby := w.b, w.lobby

	// An older daemon comes back in its place: the page's lists say
	// nothing of send_after from now on (what the page knew of the
	// daemon gone is left alone: oldDaemonShim would reset it).
	if !eval[bool](b, `(() => {
		const st = window.huddle.state;
		const set = st.groups.set.bind(st.groups);
		st.groups.set = (k, g) => { delete g.send_after; return set(k, g); };
		return true;
	})()`) {
		t.Fatal("the older daemon shim did not install")
	}
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", w.reg.registry, "--listen", w.gd.addr, "--state-dir", w.state)
	defer gd.stop(t)
	failed := failedState(text)
	b.waitFor("the retries stopped", failed+` !== ''`)
	if got := eval[string](b, failed); !strings.HasPrefix(got, "may have been sent") || !strings.HasSuffix(got, "RetryDiscard") {
		t.Errorf("a message in doubt, an older daemon back, says %q, want 'may have been sent ...' with Retry and Discard", got)
	}
	if n := triesWhenOver(b, `window.huddle.state.convs.get(`+jsString(lobby)+`)`); n != 8 {
		t.Errorf("the page tried the message in doubt %d times, want 8 (its bound: the daemon back does not check retries)", n)
	}
	if out := w.bob.ok(t, "fetch", "lobby"); strings.Contains(out, text) {
		t.Errorf("the daemon holds:\n%s\nwant no copy of the message (its one try in doubt was the shim's)", out)
	}
}

// heldPastBound starts lobby's page, its daemon listed with send_after
// (huddle web's list, as its stream carries it, says the daemon checks a
// retry's position), installs doubtShim at fastRetries, then stops the
// daemon (lobby unlisted: no daemon then says whether it checks retries),
// sends text with its first try in doubt (the shim's) and its retries
// refused for want of a listed daemon, and waits for the page to hold its
// ninth try for the daemon's word. It fails the test if the page tried a
// ninth time, or stopped.
func heldPastBound(t *testing.T, text string) lobbyPage {
	t.Helper()
	w := startLobbyPage(t)
	b := w.b
	b.waitFor("lobby listed with send_after", `window.huddle.state.groups.get(`+jsString(w.lobby)+`)?.send_after === true`)
	if !eval[bool](b, doubtShim) {
		t.Fatal("the fetch shim did not install")
	}
	fastRetries(b)
	w.gd.stop(t)
	b.waitFor("lobby unlisted", `window.huddle.state.groups.get(`+jsString(w.lobby)+`)?.listed === false`)
	eval[bool](b, `window.sends = 0, window.doubtMode = 'doubtOnce', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText(text), pressEnter())
	failed, held := failedState(text), pendingState(text)+`.includes("Retrying under its ID once lobby's daemon answers")`
	b.waitFor("the ninth try held for the daemon's word (or a ninth try, or the retries stopped)", `window.sends >= 9 || `+failed+` !== '' || `+held)
	if got := eval[string](b, failed); got != "" {
		t.Fatalf("the page stopped retrying the message in doubt after %d tries, while no daemon had said whether it checks retries: %q", eval[int](b, `window.sends`), got)
	}
	if n := eval[int](b, `window.sends`); n != 8 {
		t.Fatalf("the page tried the message in doubt %d times while lobby was away, want 8 (its bound), the ninth held for its daemon's word", n)
	}
	return w
}

// TestWebSendInDoubtPastWindow: a message in doubt is retried under its
// ID only while the group's dedup window may still hold it: once the
// page has seen the group store 65,536 messages (the window's floor)
// after the last it had seen before the try, a retry may store it a
// second time, and the page stops at once, whatever its time bound, and
// says so, offering Send again and Discard. It went on for its 8 tries
// (some 40 s) whatever the group stored meanwhile (until session 20). The
// test moves the page's view of the group's log (what its watch shows)
// on by 65,536, as a group storing some 1,600 messages a second would
// within those 40 s.
func TestWebSendInDoubtPastWindow(t *testing.T) {
	t.Parallel()
	b, alice, conv := doubtPage(t, true)
	failed := failedState("past the window")

	eval[bool](b, `window.doubtMode = 'doubt', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText("past the window"), pressEnter())
	b.waitFor("the first try in doubt", `window.sends >= 1`)
	// The group stores 65,536 messages, as the page's watch shows them.
	sent := eval[int](b, `(() => { const c = `+conv+`; c.cursor += 65536; return window.sends; })()`)
	b.waitFor("the page to stop retrying", failed+` !== ''`)
	got := eval[string](b, failed)
	if !strings.HasPrefix(got, "may have been sent") || !strings.Contains(got, "more than its dedup window is sure to hold") || !strings.HasSuffix(got, "Send againDiscard") {
		t.Errorf("a message in doubt past the window says %q, want 'may have been sent ...' past the window, with Send again and Discard", got)
	}
	if n := eval[int](b, `window.sends`); n != sent || n >= 8 {
		t.Errorf("the page tried it %d times, %d once its view had passed the window; want no try after (and fewer than its bound of 8)", n, n-sent)
	}
	b.screenshot("web-send-in-doubt-past-window")

	// Send again, through huddle web: stored, once.
	resentOnce(t, b, alice, "past the window")
}

// TestWebSendInDoubtWindowPassed: a retry of a message in doubt tells
// huddle web where the page saw the group's log stand before the first try
// (after_epoch, after_seq: PROTOCOL.md §8.5), and the page takes a
// window_passed answer (the daemon's dedup window no longer reaches back
// there) as final: it tries no more, says the daemon's window passed, and
// offers Send again and Discard. Send again goes through huddle web with
// the page's position now, to the daemon, and is stored once. Before
// session 21 the page named nothing, and stopped only by its own clock or
// by what its watch showed.
func TestWebSendInDoubtWindowPassed(t *testing.T) {
	t.Parallel()
	b, alice, conv := doubtPage(t, true)
	failed := failedState("window passed")

	eval[bool](b, `window.doubtMode = 'doubtThenWindow', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText("window passed"), pressEnter())
	b.waitFor("the page to stop retrying", failed+` !== ''`)
	got := eval[string](b, failed)
	if !strings.HasPrefix(got, "may have been sent") || !strings.Contains(got, "dedup window no longer reaches back") || !strings.HasSuffix(got, "Send againDiscard") {
		t.Errorf("a message in doubt refused window_passed says %q, want 'may have been sent ...', the daemon's window passed, with Send again and Discard", got)
	}
	if n := eval[int](b, `window.sends`); n != 2 {
		t.Errorf("the page tried it %d times, want 2 (the try in doubt, the retry refused window_passed)", n)
	}
	if first := eval[string](b, `JSON.stringify(window.bodies[0])`); strings.Contains(first, "after_") {
		t.Errorf("the first try named a position: %s", first)
	}
	want := eval[string](b, `JSON.stringify({epoch: `+conv+`.epoch, seq: 1})`)
	if retry := eval[string](b, `JSON.stringify({epoch: window.bodies[1].after_epoch, seq: window.bodies[1].after_seq})`); retry != want {
		t.Errorf("the retry named %s, want where the page saw the log before the first try, %s", retry, want)
	}

	// Send again, through huddle web: stored, once.
	resentOnce(t, b, alice, "window passed")
}

// doubtPage starts a group daemon with the group lobby, opens alice's page
// on it (after alice sent it "before" and the page showed it, if before),
// and installs doubtShim. conv is a script giving the page's state of
// lobby.
func doubtPage(t *testing.T, before bool) (b *browser, alice *user, conv string) {
	t.Helper()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby")
	lobby := up.groups["lobby"]
	alice = aliceInLobbyOf(t, up)
	b = newBrowser(t, 1000, 800)
	b.open(alice.web(t))
	b.openJoined(lobby)
	if before {
		alice.ok(t, "send", "lobby", "before")
		b.waitFor("the message before", hasMessage("before"))
	}
	if !eval[bool](b, doubtShim) {
		t.Fatal("the fetch shim did not install")
	}
	return b, alice, `window.huddle.state.convs.get(` + jsString(lobby) + `)`
}

// pendingState is a script giving the state line of the pending message
// whose text is text (empty if there is none), its buttons' labels
// included.
func pendingState(text string) string {
	return `([...document.querySelectorAll('.msg.pending')].filter(m => m.querySelector('.text').textContent === ` + jsString(text) +
		`).map(m => m.querySelector('.state')?.textContent)[0] || '')`
}

// failedState is a script giving the failure shown on the pending
// message whose text is text (empty while it is not failed): its words and
// the labels of its buttons.
func failedState(text string) string {
	return `([...document.querySelectorAll('.msg.pending')].filter(m => m.querySelector('.text').textContent === ` + jsString(text) +
		`).map(m => m.querySelector('.state.bad')).filter(Boolean).map(s => s.textContent)[0] || '')`
}

// resentOnce lets sends through to huddle web again, clicks the first
// button (Retry or Send again) on the failed message whose text is text,
// and checks that lobby then stores it exactly once.
func resentOnce(t *testing.T, b *browser, alice *user, text string) {
	t.Helper()
	eval[bool](b, `window.doubtMode = '', true`)
	eval[bool](b, `[...document.querySelectorAll('.msg.pending')].find(m => m.querySelector('.text').textContent === `+jsString(text)+`).querySelector('.state.bad button').click(), true`)
	b.waitFor("the message sent again stored", hasMessage(text))
	n := 0
	for _, m := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json")) {
		if m.Text == text {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the message sent again (%q) is stored %d times, want once", text, n)
	}
}

// fastRetries has the page retry its pending messages 20 times sooner
// than it does for a user (window.huddle.retryUnit, 1 s, made 50 ms): the
// same tries in the same order, each answered the same, under the same
// bounds (counted in tries), waiting 50, 100, 200, then 400 ms instead of
// 1, 2, 4, then 8 s. The bound of 8 tries in doubt took some 40 s to run
// out; it takes 2 s.
func fastRetries(b *browser) {
	b.t.Helper()
	if !eval[bool](b, `window.huddle.retryUnit = 50, true`) {
		b.t.Fatal("the page's retry pace was not set")
	}
}

// triesWhenOver waits until the page's sending in the conversation conv
// (a script giving its state) is over, its outbox empty and nothing being
// sent, so that no further try can follow, and returns the sends the fetch
// shim counted: the page's tries, all of them.
func triesWhenOver(b *browser, conv string) int {
	b.t.Helper()
	b.waitFor("the page's sending over", `!`+conv+`.sending && `+conv+`.outbox.length === 0`)
	return eval[int](b, `window.sends`)
}

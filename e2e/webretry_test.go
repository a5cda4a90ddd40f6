//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestWebSendNotSentStopsAndDiscards: a message not sent yet (its group's
// daemon stopped, no registry listing the group) is retried with Stop and
// Discard beside it. Stop ends the retries and offers Retry, Edit and
// Discard; Discard drops it at once between tries, or, when a try is under
// way, once that try answers: dropped if it was refused, kept as "may have
// been sent" (Retry, Discard) if it ended in doubt, for that try may have
// stored it. A message typed after it waits for it ("waiting for the
// message above"), with Discard. None of them reaches the daemon once it
// is back. Until session 23 such a message was retried for ever, with no
// button on it nor on those waiting after it.
func TestWebSendNotSentStopsAndDiscards(t *testing.T) {
	t.Parallel()
	w := startLobbyPage(t)
	b, lobby := w.b, w.lobby
	conv := `window.huddle.state.convs.get(` + jsString(lobby) + `)`
	if !eval[bool](b, doubtShim) {
		t.Fatal("the fetch shim did not install")
	}
	fastRetries(b)
	w.gd.stop(t) // it deregisters lobby
	b.waitFor("lobby unlisted", `window.huddle.state.groups.get(`+jsString(lobby)+`)?.listed === false`)
	eval[bool](b, `window.doubtMode = 'pass', true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	button := func(text, label string) { t.Helper(); pendingButton(b, text, label) }
	retrying := func(text string) string {
		return pendingState(text) + `.startsWith('not sent yet') && ` + pendingState(text) + `.endsWith('Retrying… StopDiscard')`
	}

	// underTry sends text, and once it is retried, holds its next try
	// under way (the shim's mode), presses Discard, checks the page
	// waits for the try, and lets the try end (passed on to huddle web,
	// which refuses it, or answered in doubt).
	underTry := func(text, mode string) {
		t.Helper()
		b.do("paste, Enter", insertText(text), pressEnter())
		b.waitFor("the message retried", retrying(text))
		eval[bool](b, `window.doubtMode = `+jsString(mode)+`, true`)
		b.waitFor("a try under way", `typeof window.release === 'function'`)
		button(text, "Discard")
		discarding := pendingState(text) + `.endsWith('Discarding it once the try under way answers…')`
		b.waitFor("the discard waiting for the try (or the message dropped)", discarding+` || `+pendingGone(text))
		if !eval[bool](b, discarding) {
			t.Errorf("discarded while a try is under way, the message %q says %q, want it waiting for the try", text, eval[string](b, pendingState(text)))
		}
		eval[bool](b, `window.doubtMode = 'pass', window.release(), true`)
	}

	// Stop: retried no more, Retry, Edit and Discard offered.
	const stopped = "stopped while lobby was away"
	b.do("paste, Enter", insertText(stopped), pressEnter())
	b.waitFor("the message retried, with Stop and Discard", `window.sends >= 2 && `+retrying(stopped))
	// A message typed after it waits for it, and may be discarded (it
	// was never tried).
	const queued = "typed after it"
	b.do("paste, Enter", insertText(queued), pressEnter())
	b.waitFor("the message after it waiting", pendingState(queued)+` === 'waiting for the message above… Discard'`)
	b.screenshot("web-send-not-sent-retrying")
	button(queued, "Discard")
	b.waitFor("the message after it discarded", pendingGone(queued))
	button(stopped, "Stop")
	b.waitFor("the retries stopped", failedState(stopped)+` !== ''`)
	if got := eval[string](b, failedState(stopped)); !strings.HasPrefix(got, "not sent (retries stopped): ") || !strings.HasSuffix(got, "RetryEditDiscard") {
		t.Errorf("the message stopped says %q, want 'not sent (retries stopped): ...' with Retry, Edit and Discard", got)
	}
	n := eval[int](b, `window.sends`)
	if m := triesWhenOver(b, conv); m != n {
		t.Errorf("the page tried the stopped message %d more times", m-n)
	}
	b.screenshot("web-send-not-sent-stopped")
	button(stopped, "Discard")
	b.waitFor("the stopped message discarded", pendingGone(stopped))

	// Discard between tries: dropped at once. The page's retries are
	// paced to wait ten minutes, so that the click lands between tries.
	const between = "discarded between tries"
	eval[bool](b, `window.huddle.retryUnit = 600000, true`)
	b.do("paste, Enter", insertText(between), pressEnter())
	b.waitFor("the message waiting between tries", retrying(between)+` && !!`+conv+`.outbox[0]?.wake`)
	button(between, "Discard")
	if !eval[bool](b, pendingGone(between)) {
		t.Errorf("a message discarded between tries is still shown: %q", eval[string](b, pendingState(between)))
	}
	fastRetries(b)

	// Discard while a try is under way: waits for the try's answer. A
	// refusal (never sent): dropped.
	const refused = "discarded under a refused try"
	underTry(refused, "held")
	b.waitFor("the message dropped once its try was refused", pendingGone(refused))

	// A try that ends in doubt: kept, said to be maybe sent.
	const doubted = "discarded under a try in doubt"
	underTry(doubted, "heldDoubt")
	b.waitFor("the message in doubt kept", failedState(doubted)+` !== '' || `+pendingGone(doubted))
	if got := eval[string](b, failedState(doubted)); !strings.HasPrefix(got, "may have been sent") || !strings.HasSuffix(got, "RetryDiscard") {
		t.Errorf("a message discarded under a try that ended in doubt says %q, want it kept: 'may have been sent ...' with Retry and Discard", got)
	}
	button(doubted, "Discard") // the user's choice, told it may have been sent
	b.waitFor("the message in doubt discarded", pendingGone(doubted))

	// lobby back: none of them reaches it.
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", w.reg.registry, "--listen", w.gd.addr, "--state-dir", w.state)
	defer gd.stop(t)
	waitListed(t, w.bob, lobby) // registered again
	w.bob.ok(t, "send", "lobby", "back")
	b.waitFor("lobby back", hasMessage("back"))
	if out := w.bob.ok(t, "fetch", "lobby"); strings.Contains(out, "stopped while") || strings.Contains(out, "discarded") || strings.Contains(out, queued) {
		t.Errorf("the daemon holds:\n%s\nwant none of the messages stopped or discarded", out)
	}
	if n := eval[int](b, `document.querySelectorAll('.msg.pending').length`); n != 0 {
		t.Errorf("%d messages still pending: %s", n, b.text())
	}
}

// pendingButton clicks the button labelled label on the pending message
// whose text is text, failing the test if it has none.
func pendingButton(b *browser, text, label string) {
	b.t.Helper()
	if !eval[bool](b, `(() => { const m = [...document.querySelectorAll('.msg.pending')].find(m => m.querySelector('.text').textContent === `+jsString(text)+`);
		const b = m && [...m.querySelectorAll('.state button')].find(b => b.textContent === `+jsString(label)+`);
		if (b) b.click();
		return !!b; })()`) {
		b.t.Fatalf("no %s on the message %q; the page shows:\n%s", label, text, b.text())
	}
}

// pendingGone is a script telling whether no pending message's text is
// text.
func pendingGone(text string) string {
	return `![...document.querySelectorAll('.msg.pending')].some(m => m.querySelector('.text').textContent === ` + jsString(text) + `)`
}

// TestWebSendingStopsAndDiscards: a message whose first try (or a
// Retry's) is under way ("sending…": to a daemon listed but dead it
// answers after up to 15 s) has Stop and Discard, as one retrying has.
// Both wait for the try's answer, for it may store the message: stopped,
// a try refused leaves it "not sent (retries stopped)" (Retry, Edit,
// Discard), with no further try; discarded, a try refused drops it, one
// ended in doubt keeps it as "may have been sent" (Retry, Discard). A
// Retry of a message in doubt says it may have been sent, has Stop alone,
// and stopped stays "may have been sent". None reaches the daemon once it is back. Until session 23
// "sending…" had no button.
func TestWebSendingStopsAndDiscards(t *testing.T) {
	t.Parallel()
	w := startLobbyPage(t)
	b, lobby := w.b, w.lobby
	conv := `window.huddle.state.convs.get(` + jsString(lobby) + `)`
	if !eval[bool](b, doubtShim) {
		t.Fatal("the fetch shim did not install")
	}
	fastRetries(b)
	// lobby's daemon away (it deregisters lobby): a try let through is
	// refused (not_found), never stored.
	w.gd.stop(t)
	b.waitFor("lobby unlisted", `window.huddle.state.groups.get(`+jsString(lobby)+`)?.listed === false`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	state := func(text, want string) {
		t.Helper()
		b.waitFor(fmt.Sprintf("%q saying %q", text, want), pendingState(text)+` === `+jsString(want))
	}
	failed := func(text, prefix, buttons string) {
		t.Helper()
		b.waitFor("the try answered", failedState(text)+` !== '' || `+pendingGone(text))
		if got := eval[string](b, failedState(text)); !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, buttons) {
			t.Errorf("%q says %q, want %q... with %s", text, got, prefix, buttons)
		}
	}
	// underTry holds the next try (the shim's mode) that start begins
	// (Enter, or Retry) for the message text, wants the page to show it
	// as shown, presses label, wants it then to say waiting, and lets
	// the try end.
	underTry := func(mode, text string, start func(), shown, label, waiting string) {
		t.Helper()
		eval[bool](b, `window.doubtMode = `+jsString(mode)+`, true`)
		start()
		b.waitFor("a try under way", `typeof window.release === 'function'`)
		state(text, shown)
		b.screenshot("web-sending-" + strings.ReplaceAll(text, " ", "-"))
		pendingButton(b, text, label)
		state(text, waiting)
		eval[bool](b, `window.doubtMode = 'pass', window.release(), true`)
	}
	enter := func(text string) func() {
		return func() { b.do("paste, Enter", insertText(text), pressEnter()) }
	}
	retry := func(text string) func() { return func() { pendingButton(b, text, "Retry") } }
	tries := func(want int, what string) {
		t.Helper()
		if n := triesWhenOver(b, conv); n != want {
			t.Errorf("the page made %d tries in all, want %d (%s)", n, want, what)
		}
	}
	const stopping, discarding = "sending… Stopping once the try under way answers…", "sending… Discarding it once the try under way answers…"

	// Stop under the first try, refused: not sent, no further try.
	const stopped = "stopped while sending"
	underTry("held", stopped, enter(stopped), "sending… StopDiscard", "Stop", stopping)
	failed(stopped, "not sent (retries stopped): ", "RetryEditDiscard")
	tries(1, "the first, stopped under it")

	// Discard under a Retry's try, ended in doubt: kept, may have been sent.
	underTry("heldDoubt", stopped, retry(stopped), "sending… StopDiscard", "Discard", discarding)
	failed(stopped, "may have been sent (no answer settled it; retries stopped)", "RetryDiscard")
	tries(2, "the Retry's, then none")

	// A Retry of it, in doubt: Stop alone; stopped, still in doubt.
	const again = "may have been sent (no answer settled it): sending it again under its ID… "
	underTry("held", stopped, retry(stopped), again+"Stop", "Stop", again+"Stopping once the try under way answers…")
	failed(stopped, "may have been sent (no answer settled it; retries stopped)", "RetryDiscard")
	tries(3, "the second Retry's, then none")
	pendingButton(b, stopped, "Discard") // the user's choice, told it may have been sent
	b.waitFor("the message in doubt discarded", pendingGone(stopped))

	// Discard under the first try, refused: dropped once it answers.
	const dropped = "discarded while sending"
	underTry("held", dropped, enter(dropped), "sending… StopDiscard", "Discard", discarding)
	b.waitFor("the message dropped once its try was refused", pendingGone(dropped))
	tries(4, "one for the message discarded")

	// lobby back: neither reaches it.
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", w.reg.registry, "--listen", w.gd.addr, "--state-dir", w.state)
	defer gd.stop(t)
	waitListed(t, w.bob, lobby)
	w.bob.ok(t, "send", "lobby", "back")
	b.waitFor("lobby back", hasMessage("back"))
	if out := w.bob.ok(t, "fetch", "lobby"); strings.Contains(out, stopped) || strings.Contains(out, dropped) {
		t.Errorf("the daemon holds:\n%s\nwant neither message", out)
	}
	if n := eval[int](b, `document.querySelectorAll('.msg.pending').length`); n != 0 {
		t.Errorf("%d messages still pending: %s", n, b.text())
	}
}

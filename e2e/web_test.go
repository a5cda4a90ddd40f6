//go:build linux

package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// The page's elements the tests read. A message row is a .msg with
// data-seq, data-from, a .name (unless it continues the previous one from
// the same sender) and a .text.
const (
	// msgTexts lists the texts of the message rows in the document, in order.
	msgTexts = `[...document.querySelectorAll('#messages .msg')].map(m => m.querySelector('.text').textContent)`
)

// hasMessage is a JavaScript condition: a message row with this text.
func hasMessage(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg[data-seq] .text')].some(e => e.textContent === %s)`, jsString(text))
}

// groupButton selects the sidebar button of a group.
func groupButton(uuid string) string { return `.group-list button[data-group="` + uuid + `"]` }

// openJoined waits until the page lists uuid among the groups the user
// joined (the list moves a group there once its daemon confirms the
// membership) and clicks it. The click is the page's own, in the same
// script that finds the button: the sidebar is drawn again whenever the
// list changes, and a click dispatched by node or by position after the
// button was found could miss it ("Could not find node with given id").
func (b *browser) openJoined(uuid string) {
	b.t.Helper()
	sel := `#joined button[data-group="` + uuid + `"]`
	b.waitFor("the group among the joined, clicked", fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (e) e.click(); return !!e; })()`, jsString(sel)))
	b.waitFor("the group open", fmt.Sprintf(`window.huddle.state.active === %s && !document.getElementById('messages').hidden`, jsString(uuid)))
}

// badge is a JavaScript expression: a group's unread badge ("" if none).
func badge(uuid string) string {
	return fmt.Sprintf(`(document.querySelector(%s)?.querySelector('.badge')?.textContent || '')`, jsString(groupButton(uuid)))
}

// typeMessage types text into the message box and presses Enter; newlines
// in text are typed as Shift+Enter.
func (b *browser) typeMessage(text string) {
	b.t.Helper()
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	for i, line := range strings.Split(text, "\n") {
		if i > 0 {
			b.do("Shift+Enter", chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierShift)))
		}
		b.do("type", chromedp.KeyEvent(line))
	}
	b.do("Enter", pressEnter())
}

// pressEnter presses Enter as a keyboard does, with no separate character
// event: chromedp.KeyEvent("\r") also sends one, which a real browser does
// not after the page handled the keydown, and which would type a newline
// into the emptied message box.
func pressEnter() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
				Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// insertText puts text where the focus is in one insertion, as a paste or
// an input method does: one call to the browser, where typing it is three
// a character.
func insertText(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: text})
		return err
	})
}

// joinByClick opens a group of the "other groups" list and joins it as
// name, with the mouse.
func (b *browser) joinByClick(uuid, name string) {
	b.t.Helper()
	sel := `#others button[data-group="` + uuid + `"]`
	b.waitFor("the group listed", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(sel)))
	b.clickUntil("open the group", sel, fmt.Sprintf(`window.huddle.state.active === %s`, jsString(uuid)))
	b.waitFor("the join form", `!document.getElementById('join-form').hidden`)
	eval[bool](b, `(() => {
		document.getElementById('join-name').value = '';
		window.joinSubmits = 0;
		document.getElementById('join-form').addEventListener('submit', () => window.joinSubmits++, {capture: true, once: true});
		return true;
	})()`)
	b.do("type a name", chromedp.SendKeys(chromedp.ID("join-name"), name))
	b.clickUntil("click Join", "#join-form button", `window.joinSubmits > 0`)
	b.waitFor("the conversation", `!document.getElementById('composer').hidden && document.activeElement.id === 'input'`)
}

// clickUntil clicks the element sel with the mouse until the JavaScript
// condition done holds, which the click is to make true at once. The
// mouse clicks where the element was when chromedp measured it, and the
// page may move or draw it again in between (the sidebar whenever the
// list changes, the head's state as a daemon answers or not: under load
// the join form's button moved, the click landed beside it, and the join
// was never sent; make test at load ~60, session 18). done says whether
// it landed: chromedp's call returns once the page has handled the click.
// One that missed is made again, where the element is now.
func (b *browser) clickUntil(what, sel, done string) {
	b.t.Helper()
	for i := 0; !eval[bool](b, done); i++ {
		if i == 10 {
			b.t.Fatalf("browser: %s: 10 clicks on %s did not make %s\npage text:\n%s", what, sel, done, b.text())
		}
		ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
		err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
		cancel()
		// Drawn again between chromedp finding it and clicking: clicked
		// again, as found anew.
		if err != nil && !strings.Contains(err.Error(), "Could not find node with given id") {
			b.t.Fatalf("browser: %s: %v", what, err)
		}
	}
}

// TestWebTwoUsers runs the page as two people would, in two browsers:
// alice joins with the keyboard alone, bob with the mouse; each sees the
// other's messages live, own messages marked; a message sent with the CLI
// appears; unread counts rise and clear; the members panel shows who is
// online; two keys with one name are told apart; a mention notifies a
// hidden page; and a refused message is explained in words.
func TestWebTwoUsers(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--group", "dev")
	lobby, dev := up.groups["lobby"], up.groups["dev"]
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	carol := newUser(t, "carol", up.registry)
	waitListed(t, alice, lobby, dev)
	aliceWeb, bobWeb := alice.web(t), bob.web(t)
	ab, bb := newBrowser(t, 1200, 800), newBrowser(t, 1200, 800)
	ab.open(aliceWeb)
	bb.open(bobWeb)

	// alice, keyboard only: Ctrl+K, the group's name, Enter; her name, Enter.
	ab.waitFor("lobby listed", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(groupButton(lobby))))
	ab.do("Ctrl+K", chromedp.KeyEvent("k", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	ab.waitFor("the filter focused", `document.activeElement.id === 'filter'`)
	ab.do("type lobby, Enter", chromedp.KeyEvent("lobby"), pressEnter())
	ab.waitFor("the join form, name focused", `document.activeElement.id === 'join-name'`)
	ab.screenshot("join")
	ab.do("type alice, Enter", chromedp.KeyEvent("alice\r"))
	ab.waitFor("the message box focused", `document.activeElement.id === 'input'`)

	bb.joinByClick(lobby, "bob")

	ab.typeMessage("hi bob")
	bb.waitFor("alice's message at bob's", hasMessage("hi bob"))
	ab.waitFor("alice's own message, marked", `[...document.querySelectorAll('.msg.own .text')].some(e => e.textContent === 'hi bob')`)
	if own := eval[bool](bb, `[...document.querySelectorAll('.msg.own .text')].some(e => e.textContent === 'hi bob')`); own {
		t.Error("bob's page marks alice's message as his own")
	}
	bb.typeMessage("hello alice\nlunch at noon?")
	ab.waitFor("bob's two-line message at alice's", hasMessage("hello alice\nlunch at noon?"))

	carol.join(t, "lobby")
	carol.join(t, "dev")
	carol.ok(t, "send", "lobby", "carol here, from the terminal")
	ab.waitFor("carol's CLI message at alice's", hasMessage("carol here, from the terminal"))
	bb.waitFor("carol's CLI message at bob's", hasMessage("carol here, from the terminal"))

	// Unread counts: bob joins dev, goes back to lobby; carol writes in dev.
	bb.joinByClick(dev, "bob")
	bb.openJoined(lobby)
	bb.waitFor("lobby open", `document.getElementById('title').textContent === 'lobby'`)
	for i := 1; i <= 3; i++ {
		carol.ok(t, "send", "dev", fmt.Sprintf("dev news %d", i))
		bb.waitFor(fmt.Sprintf("dev's unread count at %d", i), badge(dev)+fmt.Sprintf(` === '%d'`, i))
	}
	if got := eval[string](bb, `document.title`); got != "(3) dev · huddle" {
		t.Errorf("page title %q, want the unread total and the group that has it", got)
	}
	bb.screenshot("unread")
	bb.openJoined(dev)
	bb.waitFor("dev's messages", hasMessage("dev news 3"))
	bb.waitFor("dev's unread count cleared", badge(dev)+` === ''`)

	// Members: alice and bob have pages open (watches): online; carol not.
	ab.clickUntil("open the members", "#members-toggle", `!document.getElementById('members').hidden`)
	ab.waitFor("three members, two online", `document.getElementById('members-heading').textContent === 'Members (2 online of 3)'`)
	online := eval[[]string](ab, `[...document.querySelectorAll('#member-list li.online .mname')].map(e => e.textContent)`)
	if strings.Join(online, ",") != "alice (you),bob" {
		t.Errorf("online members %v, want alice (you) and bob", online)
	}

	// Another key takes the name alice: both alices show their key.
	dave := newUser(t, "dave", up.registry)
	dave.ok(t, "join", "lobby", "--as", "alice")
	dave.ok(t, "send", "lobby", "i am alice too")
	ab.waitFor("dave's message", hasMessage("i am alice too"))
	ab.waitFor("both alices told apart by key", `(() => {
		const names = [...document.querySelectorAll('#messages .msg .meta')].filter(m => m.querySelector('.name').textContent === 'alice');
		return names.length >= 2 && names.every(m => m.querySelector('.fp') && /^[a-z2-7]{4}-[a-z2-7]{4}$/.test(m.querySelector('.fp').textContent));
	})()`)
	fps := eval[[]string](ab, `[...new Set([...document.querySelectorAll('#messages .msg .fp')].map(e => e.textContent))]`)
	if len(fps) != 2 || !strings.HasPrefix(alice.fingerprint(t), fps[0]) && !strings.HasPrefix(alice.fingerprint(t), fps[1]) {
		t.Errorf("short fingerprints shown %v, want alice's and dave's", fps)
	}
	// One day, one separator, above its first message.
	if days := eval[[]string](ab, `[...document.querySelectorAll('#messages .day')].map(d => d.textContent)`); len(days) != 1 || days[0] != "Today" {
		t.Errorf("day separators %q, want one, Today", days)
	}
	ab.screenshot("conversation")
	ab.do("close the members", chromedp.KeyEvent("\x1b"))
	ab.waitFor("the members closed", `document.getElementById('members').hidden`)

	// A mention notifies bob while his page is hidden. Headless chromium
	// shows no notifications, so the page's Notification is a recorder.
	bb.openJoined(lobby)
	bb.recordNotifications()
	carol.ok(t, "send", "lobby", "no mention in this one")
	carol.ok(t, "send", "lobby", "@bob lunch is ready")
	bb.waitFor("a notification", `notes.length > 0`)
	if notes := eval[[]map[string]string](bb, `notes`); len(notes) != 1 || notes[0]["title"] != "carol in lobby" || notes[0]["body"] != "@bob lunch is ready" {
		t.Errorf("notifications %v, want one for the mention", notes)
	}

	// A message over the group's limit is refused, in words.
	eval[bool](ab, `(() => { document.getElementById('input').value = 'x'.repeat(70000); return true; })()`)
	ab.do("Enter", chromedp.Focus(chromedp.ID("input")), pressEnter())
	ab.waitFor("the refusal in words", `[...document.querySelectorAll('.msg.pending .state.bad')].some(e => e.textContent.includes('Too large: messages in lobby may be at most 64 KiB'))`)
}

// recordNotifications makes the page's Notification a recorder of each
// one's title and body (window.notes), permission granted, and the page
// hidden, as it notifies only then: headless chromium shows no
// notifications.
func (b *browser) recordNotifications() {
	b.t.Helper()
	eval[bool](b, `(() => {
		window.notes = [];
		window.Notification = class { constructor(title, opts) { notes.push({title, body: opts.body}); } static get permission() { return 'granted'; } };
		Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
		return true;
	})()`)
}

// TestWebNotificationIsPlainText: a mention's native notification carries
// no markup of the peer's, in its body (the message) or its title (the
// author's name). The desktop's notification daemon may read a body as
// markup (the freedesktop spec's body-markup), and some read the title so
// too: a peer's <a href> or <img src> became a link or an image of its
// choosing, "1 < 2" no valid markup. '<', '>' and '&' reach the
// notification as their small forms, which read alike; the page shows the
// message as it is.
func TestWebNotificationIsPlainText(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby")
	lobby := up.groups["lobby"]
	alice := aliceInLobbyOf(t, up)
	mallory := newUser(t, "<b>mallory</b> & co", up.registry)
	mallory.join(t, "lobby")
	b := newBrowser(t, 1000, 700)
	b.open(alice.web(t))
	b.openJoined(lobby)
	b.recordNotifications()
	// The page notifies of messages its stream delivers: live before the
	// send, or the send could come in the first page, or a watch start
	// past it, and notify nobody.
	b.waitFor("the stream live", fmt.Sprintf(`window.huddle.state.convs.get(%s)?.status === 'live'`, jsString(lobby)))
	const body = `@alice <a href="https://example.invalid/">menu</a> &amp; <img src="file:///etc/hostname"/> 1 < 2`
	mallory.ok(t, "send", "lobby", body)
	b.waitFor("a notification", `notes.length > 0`)
	notes := eval[[]map[string]string](b, `notes`)
	want := map[string]string{
		"title": "\ufe64b\ufe65mallory\ufe64/b\ufe65 \ufe60 co in lobby",
		"body":  "@alice \ufe64a href=\"https://example.invalid/\"\ufe65menu\ufe64/a\ufe65 \ufe60amp; \ufe64img src=\"file:///etc/hostname\"/\ufe65 1 \ufe64 2",
	}
	if len(notes) != 1 || !maps.Equal(notes[0], want) {
		t.Errorf("notifications %q, want one: %q", notes, want)
	}
	if !eval[bool](b, hasMessage(body)) {
		t.Errorf("the page does not show the message as it is:\n%s", b.text())
	}
}

// TestWebNarrow uses the page in a phone-sized window, with the keyboard:
// the group list is a drawer that Ctrl+K opens and choosing a group
// closes, and the members panel is one too.
func TestWebNarrow(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--group", "dev")
	lobby := up.groups["lobby"]
	alice, bob := aliceAndBobInLobby(t, up)
	alice.okInput(t, "are we still on for friday?\n", "send", "lobby")
	bob.okInput(t, "yes, 7pm\nI'll bring the projector\n", "send", "lobby")
	b := newBrowser(t, 800, 760)
	b.do("a phone-sized viewport", chromedp.EmulateViewport(390, 760))
	b.open(alice.web(t))
	if eval[bool](b, `getComputedStyle(document.getElementById('sidebar')).display !== 'none'`) {
		t.Fatal("the group list takes the narrow window")
	}
	// The list is behind the menu button, not "on the left".
	if hint := eval[string](b, `document.querySelector('#empty p').innerText`); !strings.Contains(hint, "☰") || strings.Contains(hint, "on the left") {
		t.Errorf("the narrow page says %q, want where the groups are: behind ☰", hint)
	}
	b.do("Ctrl+K", chromedp.KeyEvent("k", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.waitFor("the group list open, filter focused", `getComputedStyle(document.getElementById('sidebar')).display !== 'none' && document.activeElement.id === 'filter'`)
	// As a person would, wait for lobby to show among the joined groups
	// before typing (under load the list can come after the page connects).
	b.waitFor("lobby among the joined", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(`#joined button[data-group="`+lobby+`"]`)))
	b.screenshot("narrow-groups")
	b.do("type lobby, Enter", chromedp.KeyEvent("lobby"), pressEnter())
	b.waitFor("the conversation, the list closed", hasMessage("I'll bring the projector")+` && getComputedStyle(document.getElementById('sidebar')).display === 'none'`)
	width := eval[int](b, `document.getElementById('messages').clientWidth`)
	if width < 300 {
		t.Errorf("the conversation is %d px wide in a 390 px window", width)
	}
	b.screenshot("narrow")

	// The members drawer covers the button that opened it, and a phone has
	// no Esc: it has a close button of its own, tapped where it shows.
	b.clickUntil("tap Members", "#members-toggle", `!document.getElementById('members').hidden`)
	b.waitFor("the members drawer", `!document.getElementById('members').hidden`)
	b.waitFor("a close button in the drawer", `!!document.querySelector('#members #members-close')`)
	b.clickUntil("tap the drawer's close button", "#members-close", `document.getElementById('members').hidden`)
	b.waitFor("the members drawer closed", `document.getElementById('members').hidden && document.getElementById('members-toggle').getAttribute('aria-expanded') === 'false'`)
	// One drawer at a time: the group list opened over the members one
	// was half hidden under it.
	b.clickUntil("tap Members again", "#members-toggle", `!document.getElementById('members').hidden`)
	b.waitFor("the members drawer", `!document.getElementById('members').hidden`)
	b.clickUntil("tap ☰", "#sidebar-toggle", `document.getElementById('sidebar').classList.contains('open')`)
	b.waitFor("the group list open", `getComputedStyle(document.getElementById('sidebar')).display !== 'none'`)
	if eval[bool](b, `!document.getElementById('members').hidden`) {
		t.Error("the group list opened over the members drawer, which stayed open")
	}
}

// TestWebOpensJoinedGroupFromLink opens the page at a link to a group the
// user joined (#UUID). The page opens it with the first group list, which
// comes before the group's daemon has said who is a member: it used to
// show the form to join the group, and keep it once the daemon said the
// user is a member (as it did for a group chosen from the list in that
// moment: TestWebNarrow failed so under load). It shows the conversation
// once membership is known.
func TestWebOpensJoinedGroupFromLink(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby")
	lobby := up.groups["lobby"]
	alice := aliceInLobbyOf(t, up)
	alice.ok(t, "send", "lobby", "linked")
	b := newBrowser(t, 1000, 700)
	ws := alice.web(t)
	b.do("open the link to lobby", chromedp.Navigate(ws.url+"#"+lobby))
	b.waitFor("the page to connect", `document.getElementById('conn').textContent === 'connected to huddle web'`)
	b.waitFor("the conversation, not the form to join", hasMessage("linked")+` && document.getElementById('join-form').hidden`)
}

// TestWebJoinStaysWhereTheUserWent: a join answered after the user opened
// another group leaves the page on that group. The join used to open the
// group it joined when its answer came, pulling the page away from where
// the user went: TestWebTwoUsers failed so in make test (bob opened lobby
// once dev showed as joined, then dev's join answered and the page went
// back to dev). The page's join request goes out, its answer is held in
// the page until the test has opened lobby.
func TestWebJoinStaysWhereTheUserWent(t *testing.T) {
	t.Parallel()
	bb, lobby, dev := bobOnTheWebWithLobbyAndDev(t)
	bb.joinByClick(lobby, "bob")

	holdJoins(bb)
	sel := `#others button[data-group="` + dev + `"]`
	bb.waitFor("dev listed, clicked", fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (e) e.click(); return !!e; })()`, jsString(sel)))
	bb.waitFor("dev's join form", `!document.getElementById('join-form').hidden`)
	// Joined with the page's own click, in the script that names the user:
	// this test is about where the page goes when the join is answered, not
	// the mouse, and a click by position missed the button as the page
	// drew the head again under load (make test at load ~60, session 18:
	// the join was never sent).
	// What the page knew as the click was made is logged: the join went
	// unsent once more with this click (load ~20, session 19), and the
	// page's submit handler says nothing when it returns early.
	t.Logf("clicking Join: %s", eval[string](bb, `(() => {
		const f = document.getElementById('join-form'), b = f.querySelector('button'), st = window.huddle.state;
		let submits = 0;
		f.addEventListener('submit', () => submits++, {capture: true, once: true});
		const before = {active: st.active, known: st.groups.has(st.active), member: !!st.groups.get(st.active)?.member,
			disabled: b.disabled, valid: f.checkValidity(), hidden: f.hidden};
		document.getElementById('join-name').value = 'bob';
		b.click();
		return JSON.stringify({...before, submits, held: window.heldJoins.length, after: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent});
	})()`))
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(bb.ctx, 5*time.Second)
		defer cancel()
		diag, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({heldJoins: window.heldJoins?.length, active: window.huddle.state.active,
			known: window.huddle.state.groups.has(window.huddle.state.active), disabled: document.querySelector('#join-form button').disabled})`))
		t.Logf("the page at the end: %s %v", diag, err)
	})
	bb.waitFor("dev's join sent, its answer held", `window.heldJoins.length === 1`)
	bb.openJoined(lobby)
	releaseJoins(bb)
	bb.waitFor("dev's join answered", `!document.querySelector('#join-form button').disabled`)
	bb.waitFor("dev among the joined", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(`#joined button[data-group="`+dev+`"]`)))
	if active := eval[string](bb, `window.huddle.state.active`); active != lobby {
		t.Errorf("after dev's join answered, the page shows %s, want lobby (%s), where the user went", active, lobby)
	}
}

// TestWebJoinWhileAnotherJoinUnanswered: the form to join a group works
// while the join of another group is still unanswered. The form is every
// group's, and its button stayed disabled by the first join: the list said
// the user was a member of the first group (huddle web had done the join)
// and the page opened its conversation before the join's answer came, the
// user opened the second group's form, and Join did nothing until the
// first answer came (TestWebJoinStaysWhereTheUserWent, load ~20-60). The
// first join's answer is held in the page throughout.
func TestWebJoinWhileAnotherJoinUnanswered(t *testing.T) {
	t.Parallel()
	bb, lobby, dev := bobOnTheWebWithLobbyAndDev(t)
	holdJoins(bb)
	join := func(uuid string) {
		t.Helper()
		sel := `#others button[data-group="` + uuid + `"]`
		bb.waitFor("the group listed, clicked", fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (e) e.click(); return !!e; })()`, jsString(sel)))
		bb.waitFor("its join form", fmt.Sprintf(`window.huddle.state.active === %s && !document.getElementById('join-form').hidden`, jsString(uuid)))
		eval[bool](bb, `(() => { document.getElementById('join-name').value = 'bob'; document.querySelector('#join-form button').click(); return true; })()`)
	}
	join(lobby)
	bb.waitFor("lobby's join sent, its answer held", `window.heldJoins.length === 1`)
	bb.waitFor("lobby listed as joined all the same", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(`#joined button[data-group="`+lobby+`"]`)))
	join(dev)
	bb.waitFor("dev's join sent too", `window.heldJoins.length === 2`)
	releaseJoins(bb)
	bb.waitFor("dev among the joined", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(`#joined button[data-group="`+dev+`"]`)))
}

// bobOnTheWebWithLobbyAndDev starts huddle up with groups lobby and dev,
// which bob, who has joined neither, has listed, and opens bob's huddle
// web in a browser: the two join tests' start.
func bobOnTheWebWithLobbyAndDev(t *testing.T) (bb *browser, lobby, dev string) {
	t.Helper()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--group", "dev")
	lobby, dev = up.groups["lobby"], up.groups["dev"]
	bob := newUser(t, "bob", up.registry)
	waitListed(t, bob, lobby, dev)
	bb = newBrowser(t, 1200, 800)
	bb.open(bob.web(t))
	return bb, lobby, dev
}

// holdJoins makes the page's join requests go out and their answers wait
// in the page (window.heldJoins) until releaseJoins.
func holdJoins(bb *browser) {
	eval[bool](bb, `(() => {
		const f = window.fetch;
		window.heldJoins = [];
		window.fetch = (u, o) => {
			const p = f(u, o);
			return String(u).endsWith('/join') ? new Promise(r => window.heldJoins.push(() => r(p))) : p;
		};
		return true;
	})()`)
}

// releaseJoins lets the page have every join answer holdJoins held.
func releaseJoins(bb *browser) {
	eval[bool](bb, `(() => { window.heldJoins.forEach(release => release()); return true; })()`)
}

// TestWebMessageDuringFirstPage: a message the live stream delivers while
// the group's first page is being fetched, stored after that page was
// read, is shown. The page used to drop it (the conversation was not
// loaded yet, and the page did not hold it): TestWebFollowsMovedGroup
// failed so under load, waiting for its first message. The page's fetch of
// the first page goes out, its answer is held in the page until the
// stream has delivered the message.
func TestWebMessageDuringFirstPage(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	lobby := up.groups["lobby"]
	alice, bob := aliceAndBobInLobby(t, up)
	b := newBrowser(t, 1000, 700)
	b.open(alice.web(t))
	eval[bool](b, `(() => {
		const f = window.fetch;
		window.heldPages = [];
		window.fetch = (u, o) => {
			const p = f(u, o);
			if (!/\/messages\?/.test(String(u))) return p;
			p.then(() => { window.pagesAnswered = (window.pagesAnswered || 0) + 1; });
			return new Promise(r => window.heldPages.push(() => r(p)));
		};
		return true;
	})()`)
	b.openJoined(lobby)
	b.waitFor("the first page answered (nothing yet), the answer held", `window.pagesAnswered === 1 && window.heldPages.length === 1`)
	b.waitFor("the stream live", fmt.Sprintf(`window.huddle.state.convs.get(%s)?.status === 'live'`, jsString(lobby)))
	bob.ok(t, "send", "lobby", "one")
	b.waitFor("the stream delivered it", fmt.Sprintf(`window.huddle.state.convs.get(%s).cursor === 1`, jsString(lobby)))
	eval[bool](b, `(() => { window.heldPages.forEach(release => release()); return true; })()`)
	b.waitFor("the first page loaded", fmt.Sprintf(`window.huddle.state.convs.get(%s).loaded === true`, jsString(lobby)))
	if !eval[bool](b, hasMessage("one")) {
		t.Errorf("the message the stream delivered during the first page's fetch is not shown:\n%s", b.text())
	}
}

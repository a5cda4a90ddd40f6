//go:build linux

package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// heldStreamShim, run before the page's own scripts, has the page's event
// stream hold the messages it delivers while window.streamHeld is set, and
// deliver them, in order, at window.releaseStream(): as when huddle web
// is gone, the page then learns nothing of what its daemon stored.
const heldStreamShim = `(() => {
  const Real = window.EventSource;
  window.streamHeld = false;
  const held = [];
  window.releaseStream = () => { window.streamHeld = false; for (const f of held.splice(0)) f(); };
  window.EventSource = class extends Real {
    addEventListener(name, fn, opts) {
      if (name !== 'message') return super.addEventListener(name, fn, opts);
      return super.addEventListener(name, ev => { if (window.streamHeld) held.push(() => fn(ev)); else fn(ev); }, opts);
    }
  };
})()`

// replyLostShim wraps the page's fetch: while window.lostReplies is above
// 0, a send (POST .../messages) is passed on to huddle web, which sends it
// to the group's daemon, and its reply read and thrown away, the page's
// fetch failing as it does when huddle web stops under a request
// (window.lostStatus: the lost reply's HTTP status); with window.holdNext
// set, the next send is held until window.release() is called (a try
// under way), then passed on.
const replyLostShim = `(() => {
  const inner = window.fetch;
  window.lostReplies = 0;
  window.holdNext = false;
  window.fetch = async (path, init) => {
    if (!(init && init.method === 'POST' && String(path).endsWith('/messages'))) return inner(path, init);
    if (window.lostReplies > 0) {
      window.lostReplies--;
      const res = await inner(path, init);
      await res.text();
      window.lostStatus = res.status;
      throw new TypeError('Failed to fetch');
    }
    if (window.holdNext) {
      window.holdNext = false;
      await new Promise(release => { window.release = release; });
      window.release = null;
    }
    return inner(path, init);
  };
  return true;
})()`

// TestWebSendReplyLostInDoubt: a send whose reply from huddle web never
// reached the page (huddle web stopped or restarted under it, after it had
// passed the message to the group's daemon) may be stored: the page says
// so ("may have been sent", Stop, no Discard nor Edit that would drop it
// or send it again under a new ID) and retries it under its ID, stored
// once. Until session 23's review the page took a fetch that failed for
// "not sent yet" (huddle web cannot be reached), offering Discard, which
// dropped it at once though the daemon held it, and after Stop an Edit
// that sent it again under a new ID, stored twice.
func TestWebSendReplyLostInDoubt(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby")
	lobby := up.groups["lobby"]
	alice := aliceInLobbyOf(t, up)
	b := newBrowser(t, 1000, 800)
	b.do("hold the stream's messages when told", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: heldStreamShim})
		return err
	}))
	b.open(alice.web(t))
	b.openJoined(lobby)
	conv := `window.huddle.state.convs.get(` + jsString(lobby) + `)`
	if !eval[bool](b, replyLostShim) || !eval[bool](b, `typeof window.releaseStream === 'function'`) {
		t.Fatal("the shims did not install")
	}
	const text = "its reply lost"
	// The first try reaches the daemon, its reply is lost, and the stream
	// holds the message stored (huddle web gone, the page learns nothing);
	// the second try is held under way, so the state the first left is
	// shown until the test has read it.
	eval[bool](b, `window.streamHeld = true, window.lostReplies = 1, window.holdNext = true, true`)
	b.do("focus the message box", chromedp.Focus(chromedp.ID("input")))
	b.do("paste, Enter", insertText(text), pressEnter())
	b.waitFor("the retry under way", `typeof window.release === 'function'`)
	if got := eval[int](b, `window.lostStatus`); got != 200 {
		t.Fatalf("huddle web answered the first try with HTTP %d, want 200 (stored)", got)
	}
	got := eval[string](b, pendingState(text))
	if !strings.HasPrefix(got, "may have been sent") || strings.Contains(got, "Discard") || strings.Contains(got, "Edit") {
		t.Errorf("a message whose try reached the daemon, its reply lost, says %q, want 'may have been sent ...' with Stop alone", got)
	}
	eval[bool](b, `window.releaseStream(), window.release(), true`)
	b.waitFor("the retry acknowledged and the message shown", hasMessage(text)+` && !`+conv+`.sending`)
	n := 0
	for _, m := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json")) {
		if m.Text == text {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the message is stored %d times, want once", n)
	}
}

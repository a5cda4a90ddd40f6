//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium (installed by .ci/run) through
// the DevTools protocol with chromedp, headless, against `huddle web`
// processes. Everything they load is on 127.0.0.1 inside the test's network
// namespace, and chromium's own background traffic is off.

// chromiumPath finds chromium, or skips t (fails it under CI=true, where
// .ci/run installs it).
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "browser tests need chromium on PATH (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure, not a skip)")
	}
	t.Skip(msg)
	return ""
}

// browser is one chromium with a profile of its own: a person's browser.
type browser struct {
	t   testing.TB
	ctx context.Context // the first tab's; actions run here
}

// newBrowser starts a headless chromium with a window of w x h pixels; it
// is stopped when the test ends.
func newBrowser(t testing.TB, w, h int) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // root, as in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("enable-precise-memory-info", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not have a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// HUDDLE_E2E_THROTTLE=N runs every page N times slower (chromium's
	// CPU throttling), to find the tests that assume a page keeps some
	// pace, as a loaded machine's may not, without loading the machine:
	// 20 found TestWebSendsInOrder's typing slower than the rate it tests.
	if r := os.Getenv("HUDDLE_E2E_THROTTLE"); r != "" {
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil || rate < 1 {
			t.Fatalf("HUDDLE_E2E_THROTTLE=%s: want a slowdown factor, 1 or more", r)
		}
		if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetCPUThrottlingRate, emulation.SetCPUThrottlingRateParams{Rate: rate})
			return err
		})); err != nil {
			t.Fatalf("throttle: %v", err)
		}
	}
	return &browser{t: t, ctx: ctx}
}

// do runs actions, failing the test on an error, within waitTimeout.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting it, if it is a
// promise) and decodes its value into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return evalWithin[T](b, expr, waitTimeout)
}

// evalWithin is eval with a deadline of its own, for long page scripts.
func evalWithin[T any](b *browser, expr string, timeout time.Duration) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is truthy in the page,
// failing the test after waitTimeout with what it waited for.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	b.waitForWithin(what, expr, waitTimeout)
}

func (b *browser) waitForWithin(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	// A daemon (or huddle web) of the test that ends unseen ends the wait
	// at once: the page would wait the whole timeout for what it never
	// gets, after the harness's report.
	unseen := make(chan error, 1)
	looked := make(chan struct{})
	go func() {
		defer close(looked)
		look := time.NewTicker(50 * time.Millisecond)
		defer look.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-look.C:
				if err := endedUnseen(b.t); err != nil {
					unseen <- err
					cancel()
					return
				}
			}
		}
	}()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if waited := time.Since(start); testing.Verbose() && waited >= time.Second {
		// Which waits a slow run spent its time on, as the harness logs
		// each client verb's time.
		b.t.Logf("%v: waited for %s", waited.Round(time.Millisecond), what)
	}
	cancel()
	<-looked
	select {
	case ue := <-unseen:
		b.t.Fatalf("browser: stopped waiting for %s (%s): %v", what, expr, ue)
	default:
	}
	if err != nil {
		b.t.Fatalf("browser: waiting for %s (%s): %v\npage text:\n%s", what, expr, err, b.text())
	}
}

// text returns the page's visible text, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return fmt.Sprintf("(cannot read the page: %v)", err)
	}
	return s
}

// screenshot saves a PNG of the window as NAME.png in $HUDDLE_SCREENSHOTS,
// when that is set (make screenshots: the pictures in docs/).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("HUDDLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// webServer is a user's running `huddle web`.
type webServer struct {
	*proc
	url    string // with the secret
	base   string // http://127.0.0.1:PORT
	secret string
}

var webLine = regexp.MustCompile(`^huddle web: (http://(127\.0\.0\.1:\d+)/\?k=(\S+))$`)

// web starts `huddle web` as u on a free loopback port and waits for its
// link. Its registry is u's.
func (u *user) web(t testing.TB, args ...string) *webServer {
	t.Helper()
	p := startProc(t, u.name+": huddle web", u.env(t), false, untilStopped, append([]string{"web", "--listen", "127.0.0.1:0", "--log-level", "info"}, args...)...)
	ws := &webServer{proc: p}
	ok := p.stdout.waitFor(waitTimeout, func(lines []string) bool {
		for _, l := range lines {
			if m := webLine.FindStringSubmatch(l); m != nil {
				ws.url, ws.base, ws.secret = m[1], "http://"+m[2], m[3]
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("huddle web did not print its link\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
	}
	t.Cleanup(func() {
		if code := p.stop(t, os.Interrupt); code != 0 {
			t.Errorf("huddle web exited with code %d after SIGINT, want 0", code)
		}
		p.noRaces(t)
	})
	return ws
}

// open loads the server's link in b and waits for the page to be connected.
func (b *browser) open(ws *webServer) {
	b.t.Helper()
	b.do("open "+ws.base, chromedp.Navigate(ws.url))
	b.waitFor("the page to connect", `document.getElementById('conn').textContent === 'connected to huddle web'`)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r < 0x20 || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&sb, "\\u%04x", r)
		default:
			sb.WriteRune(r)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

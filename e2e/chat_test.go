//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var chatLineRE = regexp.MustCompile(`^\d\d:\d\d:\d\d (.+?): (.*)$`)

// chatLines returns the message lines chat printed, as "NAME: TEXT".
func chatLines(lines []string) []string {
	var msgs []string
	for _, l := range lines {
		if m := chatLineRE.FindStringSubmatch(strings.TrimPrefix(l, "> ")); m != nil {
			msgs = append(msgs, m[1]+": "+m[2])
		}
	}
	return msgs
}

// TestChatPipe drives chat from a pipe: each line on standard input is
// sent, messages print with their time and sender's name as they arrive,
// one's own once (marked "(you)"), and end of input ends the chat.
func TestChatPipe(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	bob.join(t, "lobby")
	bob.ok(t, "send", "lobby", "earlier")

	// --as joins first; the last messages are shown on entry.
	chat := alice.start(t, "chat", "lobby", "--as", "alice")
	waitText(t, chat, "-- lobby: 2 members; /help for commands, /quit to exit --")
	waitText(t, chat, "bob: earlier")
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(chat.stdin, line+"\n"); err != nil {
			t.Fatalf("write to chat: %v", err)
		}
	}
	say("hello from alice")
	waitText(t, chat, "alice (you): hello from alice")
	bob.ok(t, "send", "lobby", "hi alice")
	waitText(t, chat, "bob: hi alice")
	say("/members")
	waitText(t, chat, "-- 2 members: alice (you), bob --")
	say("/nonsense")
	waitText(t, chat, "-- unknown command /nonsense; /help lists them")
	say("") // blank lines are not sent
	say("last words")
	waitText(t, chat, "alice (you): last words")
	chat.stdin.Close() // end of input ends the chat, as Ctrl-D does
	if code := chat.wait(t); code != 0 {
		t.Errorf("chat exited with code %d at end of input, want 0\nstderr:\n%s", code, chat.stderr)
	}
	chat.noRaces(t)

	want := []string{"bob: earlier", "alice (you): hello from alice", "bob: hi alice", "alice (you): last words"}
	if got := chatLines(chat.stdout.Lines()); !slices.Equal(got, want) {
		t.Errorf("chat printed messages %q, want %q\nstdout:\n%s", got, want, chat.stdout)
	}
	// What the group holds: each line sent once.
	wantStored := []fetchLine{{1, "bob", "earlier"}, {2, "alice", "hello from alice"}, {3, "bob", "hi alice"}, {4, "alice", "last words"}}
	if got := parseFetch(t, bob.ok(t, "fetch", "lobby")); !slices.Equal(got, wantStored) {
		t.Errorf("the group holds %+v, want %+v", got, wantStored)
	}

	// chat refuses someone who is not a member.
	if r := newUser(t, "carol", up.registry).run(t, "chat", "lobby"); r.code != 1 || !strings.Contains(r.stderr, "not a member") {
		t.Errorf("carol: chat should refuse a non-member with exit code 1: %s", r)
	}
}

// tmux is a tmux server of its own (its own socket), holding one session
// whose pane runs a command on a pseudo-terminal.
type tmux struct {
	t      *testing.T
	socket string
}

// chatTmux starts `huddle chat ARGS` as u in a new tmux pane (see newTmux),
// with u's environment alone and TERM=screen; once chat ends the pane
// prints "chat exited with code N" and stays.
func chatTmux(t *testing.T, u *user, args string) *tmux {
	t.Helper()
	var words []string
	for _, kv := range append(u.env(t), "TERM=screen") {
		words = append(words, shellQuote(kv))
	}
	return newTmux(t, fmt.Sprintf("env -i %s %s chat %s; echo \"chat exited with code $?\"; exec sleep 600",
		strings.Join(words, " "), shellQuote(huddleBin), args))
}

// newTmux starts a tmux server running command in a 120x30 pane. It skips
// the test if tmux is missing (and fails it under CI=true), and kills the
// server when the test ends.
func newTmux(t *testing.T, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tmux is not installed; the chat terminal test needs it (.ci/run installs it)")
		}
		t.Skip("tmux is not installed: skipping the chat terminal test (apt-get install tmux)")
	}
	// The socket lives in the test's temporary directory, removed with it:
	// a socket named with -L stayed in /tmp/tmux-UID after kill-server.
	tm := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { tm.run("kill-server") })
	if out, err := tm.cmd("-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "30", command).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	return tm
}

func (tm *tmux) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command("tmux", append([]string{"-S", tm.socket}, args...)...)
	cmd.Env = childEnv(tm.t.TempDir())
	return cmd
}

func (tm *tmux) run(args ...string) (string, error) {
	out, err := tm.cmd(args...).CombinedOutput()
	return string(out), err
}

// keys types text literally, then presses the named keys (Enter...).
func (tm *tmux) keys(text string, keys ...string) {
	tm.t.Helper()
	if text != "" {
		if out, err := tm.run("send-keys", "-l", text); err != nil {
			tm.t.Fatalf("tmux send-keys %q: %v: %s", text, err, out)
		}
	}
	if len(keys) > 0 {
		if out, err := tm.run(append([]string{"send-keys"}, keys...)...); err != nil {
			tm.t.Fatalf("tmux send-keys %v: %v: %s", keys, err, out)
		}
	}
}

// screen returns the pane's visible lines, trailing blanks trimmed.
func (tm *tmux) screen() []string {
	tm.t.Helper()
	out, err := tm.run("capture-pane", "-p")
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	lines := strings.Split(out, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// waitScreen polls the pane until ok holds for it.
func (tm *tmux) waitScreen(what string, ok func(lines []string) bool) []string {
	tm.t.Helper()
	var lines []string
	if !eventually(tm.t, waitTimeout, func() bool { lines = tm.screen(); return ok(lines) }) {
		tm.t.Fatalf("the terminal did not show %s within %v; it shows:\n%s", what, waitTimeout, strings.Join(lines, "\n"))
	}
	return lines
}

// TestChatTerminal drives chat on a terminal, as a person would: the typed
// line is sent once and shown once, with "(you)"; a message arriving while
// a line is half typed prints above it and leaves it intact; /members lists
// the members; /quit leaves.
func TestChatTerminal(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	bob.ok(t, "send", "lobby", "before the chat")

	tm := chatTmux(t, alice, "lobby")
	tm.waitScreen("the prompt after the history", func(lines []string) bool {
		return len(lines) >= 3 && lines[0] == "-- lobby: 2 members; /help for commands, /quit to exit --" &&
			chatLineRE.MatchString(lines[1]) && strings.HasSuffix(lines[1], " bob: before the chat") && lines[len(lines)-1] == ">"
	})

	tm.keys("hello from alice", "Enter")
	lines := tm.waitScreen("alice's line, sent", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, " alice (you): hello from alice") }) &&
			lines[len(lines)-1] == ">"
	})
	if n := countSuffix(lines, "hello from alice"); n != 1 {
		t.Errorf("the typed line shows %d times, want once (the message, not the echo):\n%s", n, strings.Join(lines, "\n"))
	}

	// A message arrives while alice is halfway through a line.
	tm.keys("half typ")
	tm.waitScreen("the half-typed line", func(lines []string) bool { return lines[len(lines)-1] == "> half typ" })
	bob.ok(t, "send", "lobby", "bob says hi")
	tm.waitScreen("bob's message above the half-typed line", func(lines []string) bool {
		n := len(lines)
		return n >= 2 && strings.HasSuffix(lines[n-2], " bob: bob says hi") && lines[n-1] == "> half typ"
	})
	tm.keys("ed", "Enter")
	lines = tm.waitScreen("the finished line, sent", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, " alice (you): half typed") }) &&
			lines[len(lines)-1] == ">"
	})
	if n := countSuffix(lines, "half typed"); n != 1 {
		t.Errorf("the line finished after bob's message shows %d times, want once (the message, not the echo):\n%s", n, strings.Join(lines, "\n"))
	}

	tm.keys("/members", "Enter")
	tm.waitScreen("the members", func(lines []string) bool {
		return slices.Contains(lines, "-- 2 members: alice (you), bob --")
	})
	tm.keys("/quit", "Enter")
	lines = tm.waitScreen("chat exiting", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "chat exited with code") })
	})
	// The prompt is cleared on the way out: what runs next starts on a
	// clean line.
	if last := lines[len(lines)-1]; last != "chat exited with code 0" {
		t.Errorf("after /quit the terminal's last line is %q, want \"chat exited with code 0\"", last)
	}

	want := []string{"bob: before the chat", "alice (you): hello from alice", "bob: bob says hi", "alice (you): half typed"}
	if got := chatLines(lines); !slices.Equal(got, want) {
		t.Errorf("the terminal shows messages %q, want %q:\n%s", got, want, strings.Join(lines, "\n"))
	}
	wantStored := []fetchLine{{1, "bob", "before the chat"}, {2, "alice", "hello from alice"}, {3, "bob", "bob says hi"}, {4, "alice", "half typed"}}
	if got := parseFetch(t, bob.ok(t, "fetch", "lobby")); !slices.Equal(got, wantStored) {
		t.Errorf("the group holds %+v, want %+v", got, wantStored)
	}
}

func countSuffix(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.HasSuffix(l, s) {
			n++
		}
	}
	return n
}

// shellQuote quotes s as one word for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestChatPipeEdges: chat from a pipe shows the history even when its
// input is already over (</dev/null used to exit first), waits for its own
// last line to come back before it exits, sends a line that starts with /
// when the slash is doubled, and under --json prints objects.
func TestChatPipeEdges(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	bob.ok(t, "send", "lobby", "earlier")

	r := alice.run(t, "chat", "lobby")
	if r.code != 0 || !strings.Contains(r.stdout, "bob: earlier") {
		t.Errorf("chat with no input: want the history and exit 0: %s", r)
	}
	r = alice.runInput(t, "//etc/hosts is yours\nlast line\n", "chat", "lobby")
	if r.code != 0 || !strings.Contains(r.stdout, "alice (you): /etc/hosts is yours") || !strings.Contains(r.stdout, "alice (you): last line") {
		t.Errorf("piped chat: want its own lines back, the first with one slash: %s", r)
	}
	r = alice.runInput(t, "in json\n", "chat", "lobby", "--json", "--history", "0")
	var sawStart, sawOwn bool
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("chat --json printed %q, not JSON", line)
		}
		sawStart = sawStart || obj["event"] == "start"
		sawOwn = sawOwn || obj["text"] == "in json" && obj["name"] == "alice" && obj["from"] == alice.fingerprint(t)
	}
	if r.code != 0 || !sawStart || !sawOwn {
		t.Errorf("chat --json: want a start event and the message as an object: %s", r)
	}
	want := []fetchLine{{1, "bob", "earlier"}, {2, "alice", "/etc/hosts is yours"}, {3, "alice", "last line"}, {4, "alice", "in json"}}
	if got := parseFetch(t, bob.ok(t, "fetch", "lobby")); !slices.Equal(got, want) {
		t.Errorf("the group holds %+v, want %+v", got, want)
	}
}

// TestChatReconnects: when the daemon goes away, chat says the connection
// is lost; a line typed meanwhile is kept, not lost, and sent when the
// daemon is back, with a notice each way.
func TestChatReconnects(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", state)
	alice := aliceInLobbyOf(t, up)
	// --timeout bounds the chat's start-up (listing, dial, info, members)
	// and each send, the one that resends the kept line once reconnected
	// included: the default 10 s, as every other verb here gets, not 2 s,
	// which a loaded machine's stall can take whole. The line typed while
	// the daemon is down is kept at once while the client takes the
	// daemon's shutdown at its word (1 s), or once its send gives up.
	chat := alice.start(t, "chat", "lobby")
	waitText(t, chat, "-- lobby: 1 member;")
	up.stop(t)
	waitText(t, chat, "-- connection lost")
	if _, err := io.WriteString(chat.stdin, "typed while down\n"); err != nil {
		t.Fatal(err)
	}
	waitText(t, chat, "kept to send again when the connection is back")
	up = startDaemon(t, "up", "--listen", up.registry, "--daemon-listen", up.addr, "--state-dir", state)
	defer up.stop(t)
	waitText(t, chat, "-- reconnected --")
	waitText(t, chat, "alice (you): typed while down")
	chat.stdin.Close()
	if code := chat.wait(t); code != 0 {
		t.Errorf("chat exited with %d, want 0\nstderr:\n%s", code, chat.stderr)
	}
	if got := parseFetch(t, alice.ok(t, "fetch", "lobby")); !slices.Equal(got, []fetchLine{{1, "alice", "typed while down"}}) {
		t.Errorf("the group holds %+v, want the kept line once", got)
	}
}

// TestChatTerminalCRLF: input with CRLF line ends (a paste from Windows, a
// terminal that sends both) used to freeze the chat: its count of Enters
// never came back to 0 and every message was held back for good. Ctrl-C
// then ends it with 130.
func TestChatTerminalCRLF(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	tm := chatTmux(t, alice, "lobby")
	tm.waitScreen("the prompt", func(lines []string) bool { return len(lines) > 0 && lines[len(lines)-1] == ">" })
	tm.keys("hi\r\nthere\r")
	tm.waitScreen("both lines sent", func(lines []string) bool {
		return countSuffix(lines, "alice (you): hi") == 1 && countSuffix(lines, "alice (you): there") == 1
	})
	bob.ok(t, "send", "lobby", "still flowing")
	tm.waitScreen("bob's message after the CRLF input", func(lines []string) bool {
		return countSuffix(lines, "bob: still flowing") == 1
	})
	// Ctrl-C is a key in raw mode, not a signal: it ends the chat as an
	// interrupt all the same (130), unlike /quit or Ctrl-D (0).
	tm.keys("", "C-c")
	tm.waitScreen("chat exiting on Ctrl-C", func(lines []string) bool {
		return slices.Contains(lines, "chat exited with code 130")
	})
}

// TestChatFollowsRestartedDaemon: a chat whose daemon is killed with
// SIGKILL and started again on another port (same key, same state) sends
// the next line typed at the daemon's new address: the send that finds
// the connection dead asks the registry where the group is while it dials
// again. It used to dial the old address alone, until its DialTimeout,
// and keep the line as not sent; only the call after it asked the
// registry.
func TestChatFollowsRestartedDaemon(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer reg.stop(t)
	state := t.TempDir()
	serve := []string{"--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", state}
	gd := startDaemon(t, "serve", serve...)
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, gd.groups["lobby"])
	alice.join(t, "lobby")
	chat := alice.start(t, "chat", "lobby")
	waitText(t, chat, "-- lobby: 1 member;")
	if _, err := io.WriteString(chat.stdin, "before\n"); err != nil {
		t.Fatal(err)
	}
	waitText(t, chat, "alice (you): before")

	gd.proc.stop(t, syscall.SIGKILL)
	// The old address reads what is sent to it and answers nothing, as a
	// host whose daemon died does (no port-unreachable to cut a dial short).
	old, err := net.ListenPacket("udp", gd.addr)
	if err != nil {
		t.Fatalf("the killed daemon's address %s: %v", gd.addr, err)
	}
	defer old.Close()
	gd = startDaemon(t, "serve", serve...)
	defer gd.stop(t)
	// The line is typed once the registry lists the new address: the
	// daemon registers a moment after it prints its groups, and a line
	// typed before could only be sent to the old address (CI, under load).
	if !eventually(t, waitTimeout, func() bool {
		return slices.ContainsFunc(waitListed(t, alice, gd.groups["lobby"]), func(g groupJSON) bool { return slices.Contains(g.Addrs, gd.addr) })
	}) {
		t.Fatalf("the registry did not list lobby at the restarted daemon's address %s", gd.addr)
	}
	if _, err := io.WriteString(chat.stdin, "after the move\n"); err != nil {
		t.Fatal(err)
	}
	waitText(t, chat, "alice (you): after the move")
	if out := chat.stdout.String(); strings.Contains(out, "not sent") {
		t.Errorf("the line typed after the daemon moved was not sent at once:\n%s", out)
	}
	chat.stdin.Close()
	if code := chat.wait(t); code != 0 {
		t.Errorf("chat exited with %d, want 0\nstderr:\n%s", code, chat.stderr)
	}
	if got := parseFetch(t, alice.ok(t, "fetch", "lobby")); !slices.Equal(got, []fetchLine{{1, "alice", "before"}, {2, "alice", "after the move"}}) {
		t.Errorf("the group holds %+v, want both lines once", got)
	}
}

// TestChatTerminalLongLineAndResize types a line longer than the terminal
// is wide, then resizes the terminal and edits a wrapped line. A sent line
// is erased from the screen (the message comes back from the group) on
// every row it wrapped onto: only the first used to be, leaving the others
// behind. The line editor follows the new width: it used to keep the
// width the chat started with, and Ctrl-A then a key drew the key at the
// start of the second row instead of after the prompt.
func TestChatTerminalLongLineAndResize(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)
	tm := chatTmux(t, alice, "lobby")
	tm.waitScreen("the prompt", func(lines []string) bool { return len(lines) >= 2 && lines[len(lines)-1] == ">" })

	long := strings.Repeat("long line ", 30) + "end" // 303 columns: three rows of 120
	tm.keys(long, "Enter")
	lines := tm.waitScreen("the long line, sent", func(lines []string) bool {
		return strings.HasSuffix(strings.Join(lines, ""), "end>") && slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, " alice (you): long line") })
	})
	if n := strings.Count(strings.Join(lines, ""), "end"); n != 1 || slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "> long") }) {
		t.Errorf("the long line shows %d times, want once (the message, not the echo's rows):\n%s", n, strings.Join(lines, "\n"))
	}

	// Wide characters: 160 columns, two rows, though the editor counts 82.
	wide := strings.Repeat("中文", 40)
	tm.keys(wide, "Enter")
	lines = tm.waitScreen("the wide line, sent", func(lines []string) bool {
		return strings.HasSuffix(strings.Join(lines, ""), "中文>") && slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, " alice (you): 中文") })
	})
	if slices.ContainsFunc(lines, func(l string) bool {
		return strings.HasPrefix(l, "> 中") || strings.HasPrefix(l, "中") && !strings.Contains(strings.Join(lines, ""), "(you): "+wide)
	}) {
		t.Errorf("the wide line's echo was not erased:\n%s", strings.Join(lines, "\n"))
	}
	if n := strings.Count(strings.Join(lines, ""), wide); n != 1 {
		t.Errorf("the wide line shows %d times, want once:\n%s", n, strings.Join(lines, "\n"))
	}

	if out, err := tm.run("resize-window", "-x", "40", "-y", "30"); err != nil {
		t.Fatalf("tmux resize-window: %v: %s", err, out)
	}
	if !eventually(t, waitTimeout, func() bool { w, _ := tm.run("display", "-p", "#{pane_width}"); return strings.TrimSpace(w) == "40" }) {
		t.Fatal("the pane did not become 40 columns wide")
	}
	tm.keys(strings.Repeat("abcdefghij", 7))
	tm.waitScreen("the wrapped line typed", func(lines []string) bool { return strings.HasSuffix(strings.Join(lines, ""), "abcdefghij") })
	tm.keys("", "C-a")
	tm.keys("XY")
	tm.waitScreen("XY typed after the prompt", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "> XYabcdefghij") })
	})
	tm.keys("", "Enter")
	tm.waitScreen("the edited line, sent and erased", func(lines []string) bool {
		all := strings.Join(lines, "")
		return strings.Contains(all, "alice (you): XYabcdefghij") && strings.Count(all, "XYabcdefghij") == 1 && lines[len(lines)-1] == ">"
	})
}

// TestChatPrivateGroup has bob chat in a private group he has not joined.
// chat joins with --as, but it had no way to give the group's secret, and
// its refusals pointed elsewhere: "vault: you are not a member: not a
// member", then "give the right --secret-file", a flag chat refused. Each
// refusal now says the chat command that works, and --secret-file joins.
func TestChatPrivateGroup(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "vault.secret")
	if err := os.WriteFile(secret, []byte("open sesame\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "vault", "--secret-file", "vault="+secret)
	defer up.stop(t)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, bob, up.groups["vault"])

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chat", "vault"}, "huddle chat: not a member of vault; join it first: huddle chat vault --as NAME --secret-file FILE\n"},
		{[]string{"chat", "vault", "--as", "bob"}, "; give its secret: huddle chat vault --as NAME --secret-file FILE\n"},
	} {
		r := bob.runInput(t, "", tc.args...)
		if r.code != 1 || !strings.HasSuffix(r.stderr, tc.want) {
			t.Errorf("%s\nwant exit code 1 and stderr ending %q", r, tc.want)
		}
	}
	r := bob.runInput(t, "hello vault\n", "chat", "vault", "--as", "bob", "--secret-file", secret)
	if r.code != 0 || !strings.Contains(r.stdout, "bob (you): hello vault") {
		t.Fatalf("%s\nwant the line sent and shown", r)
	}
	if got := parseFetch(t, bob.ok(t, "fetch", "vault")); !slices.Equal(got, []fetchLine{{1, "bob", "hello vault"}}) {
		t.Errorf("vault holds %+v, want bob's line", got)
	}
}

// TestChatInfoOfAnEmptyGroup asks /info of a group with no messages yet:
// it used to say "messages #0..#0".
func TestChatInfoOfAnEmptyGroup(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)
	out := alice.okInput(t, "/info\n", "chat", "lobby")
	if want := "-- lobby: 1 member, no messages yet, max message 64 KiB --"; !strings.Contains(out, want) {
		t.Errorf("chat's /info printed:\n%s\nwant %q", out, want)
	}
}

// TestChatLeftElsewhere has alice leave lobby from another terminal while
// she chats in it. chat ends (exit code 1) saying why on a line of its own
// and how to come back: the words used to follow the prompt ("> huddle
// chat: ...") and to say "huddle join GROUP".
func TestChatLeftElsewhere(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)
	tm := chatTmux(t, alice, "lobby")
	tm.waitScreen("the prompt", func(lines []string) bool { return len(lines) >= 2 && lines[len(lines)-1] == ">" })
	alice.ok(t, "leave", "lobby")
	lines := tm.waitScreen("chat exiting", func(lines []string) bool {
		return slices.Contains(lines, "chat exited with code 1")
	})
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "\nhuddle chat: watch group lobby: not a member") || strings.Contains(all, "> huddle chat") {
		t.Errorf("chat's last words are not on a line of their own:\n%s", all)
	}
	if !strings.Contains(strings.Join(lines, ""), "join it again to chat: huddle chat lobby --as NAME") {
		t.Errorf("chat does not say how to come back:\n%s", all)
	}
}

// TestChatTerminalTypesWhileDown kills the daemon (SIGKILL: no word of
// shutdown) under a chat on a terminal, and types a line once chat has said
// the connection is lost. chat used to try to send it anyway: the line was
// erased, no prompt came back, and only after the whole --timeout did it
// say the line was kept. It keeps the line at once, says so, gives the
// prompt back, and sends it once the daemon is back.
func TestChatTerminalTypesWhileDown(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", state)
	alice := aliceInLobbyOf(t, up)
	// A --timeout no test waits out: the line is kept because the
	// connection is known lost, not because its send gave up.
	tm := chatTmux(t, alice, "lobby --timeout 5m")
	tm.waitScreen("the prompt", func(lines []string) bool { return len(lines) >= 1 && lines[len(lines)-1] == ">" })
	up.proc.stop(t, syscall.SIGKILL)
	tm.waitScreen("the connection lost", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "-- connection lost") })
	})
	tm.keys("typed while down", "Enter")
	tm.waitScreen("the line kept, and the prompt back", func(lines []string) bool {
		n := len(lines)
		return n >= 2 && strings.HasPrefix(lines[n-2], "-- not sent (connection lost); kept to send again") && lines[n-1] == ">"
	})
	up = startDaemon(t, "up", "--listen", up.registry, "--daemon-listen", up.addr, "--state-dir", state)
	defer up.stop(t)
	tm.waitScreen("the kept line sent", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, " alice (you): typed while down") })
	})
	if got := parseFetch(t, alice.ok(t, "fetch", "lobby")); !slices.Equal(got, []fetchLine{{1, "alice", "typed while down"}}) {
		t.Errorf("the group holds %+v, want the kept line once", got)
	}
}

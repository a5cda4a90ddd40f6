//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// watchLine is one line of watch --json: a message, or an event (gap,
// reset) when Event is set. It decodes as a bot's typed decoder would, in
// one pass: no key has two types (a gap's sequence numbers are from_seq
// and to_seq, "from" being a message's sender).
type watchLine struct {
	messageJSON
	UUID    string `json:"uuid"`
	Event   string `json:"event"`
	Epoch   uint64 `json:"epoch"`
	FromSeq uint64 `json:"from_seq"` // gap
	ToSeq   uint64 `json:"to_seq"`   // gap
}

func (w watchLine) String() string {
	if w.Event != "" {
		return fmt.Sprintf("[%s event %s epoch %d]", w.Group, w.Event, w.Epoch)
	}
	return fmt.Sprintf("[%s #%d %s: %s]", w.Group, w.Seq, w.Name, w.Text)
}

// watchJSON parses what a watch --json printed so far. Messages must have
// the keys of fetch --json plus "group".
func watchJSON(t *testing.T, p *proc) []watchLine {
	t.Helper()
	var out []watchLine
	for _, l := range p.stdout.Lines() {
		var w watchLine
		if err := json.Unmarshal([]byte(l), &w); err != nil {
			t.Fatalf("watch --json printed %q: %v", l, err)
		}
		if w.Event == "" {
			checkKeys(t, l, append(slices.Clone(messageKeys), "group", "uuid")...)
		}
		out = append(out, w)
	}
	return out
}

// hasText returns a stream condition: some line contains text.
func hasText(text string) func([]string) bool {
	return func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, text) })
	}
}

// waitText waits until p printed a line containing text.
func waitText(t *testing.T, p *proc, text string) {
	t.Helper()
	if !p.stdout.waitFor(waitTimeout, hasText(text)) {
		t.Fatalf("%s did not print %q within %v\nstdout:\n%s\nstderr:\n%s", p.name, text, waitTimeout, p.stdout, p.stderr)
	}
}

// stopWatch ends a watch as Ctrl-C would and checks it exits 130, as an
// interrupted command does.
func stopWatch(t *testing.T, p *proc) {
	t.Helper()
	if code := p.stop(t, syscall.SIGINT); code != 130 {
		t.Errorf("%s exited with code %d after SIGINT, want 130\nstderr:\n%s", p.name, code, p.stderr)
	}
	p.noRaces(t)
}

// TestWatch follows one group from now on: earlier messages are not shown,
// and every message sent after the watch started is printed once, in
// order, as JSON.
func TestWatch(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	bob.ok(t, "send", "lobby", "before the watch")

	w := alice.start(t, "watch", "lobby", "--json")
	bobs := bob.start(t, "watch", "lobby")
	// A watch follows what arrives after it started, and nothing says when
	// that was: send probes until one shows in each watch. (Bob's is
	// waited for too: its process starts beside alice's, and one that
	// started after m4 would never print it.)
	deadline := time.Now().Add(waitTimeout)
	for i := 0; !w.stdout.waitFor(200*time.Millisecond, hasText(`"probe`)) || !bobs.stdout.waitFor(200*time.Millisecond, hasText("bob: probe")); i++ {
		if time.Now().After(deadline) || !w.running() || !bobs.running() {
			t.Fatalf("the watches printed no probe within %v\nalice's stdout:\n%s\nstderr:\n%s\nbob's stdout:\n%s\nstderr:\n%s",
				waitTimeout, w.stdout, w.stderr, bobs.stdout, bobs.stderr)
		}
		bob.ok(t, "send", "lobby", "probe "+strconv.Itoa(i))
	}
	bob.okInput(t, "m1\nm2\nm3\n", "send", "lobby")
	alice.ok(t, "send", "lobby", "m4")
	waitText(t, w, `"m4"`)
	stopWatch(t, w)

	// Leaving the group (from elsewhere) ends a watch: exit code 1, advice.
	waitText(t, bobs, "alice: m4")
	bob.ok(t, "leave", "lobby")
	if code := bobs.wait(t); code != 1 || !strings.Contains(bobs.stderr.String(), "not a member") {
		t.Errorf("bob's watch after he left: exit code %d, want 1 and a note that he is not a member\nstderr:\n%s", code, bobs.stderr)
	}

	lines := watchJSON(t, w)
	seen := make(map[string]bool)
	var texts []string
	for i, l := range lines {
		if l.Event != "" || l.Group != "lobby" {
			t.Errorf("line %d: %v, want a message of lobby", i, l)
			continue
		}
		if seen[l.MsgID] {
			t.Errorf("message %v printed twice", l)
		}
		seen[l.MsgID] = true
		if i > 0 && l.Seq != lines[i-1].Seq+1 {
			t.Errorf("message #%d follows #%d", l.Seq, lines[i-1].Seq)
		}
		parseTS(t, l.TS)
		if !strings.HasPrefix(l.Text, "probe ") {
			texts = append(texts, l.Name+": "+l.Text)
		}
	}
	if len(lines) == 0 || lines[0].Seq < 2 {
		t.Errorf("watch printed %v; it should start after the message sent before it", lines)
	}
	if want := []string{"bob: m1", "bob: m2", "bob: m3", "alice: m4"}; !slices.Equal(texts, want) {
		t.Errorf("watch printed %v after the probes, want %v", texts, want)
	}
	if s := w.stderr.String(); s != "" {
		t.Errorf("watch wrote to stderr:\n%s", s)
	}
}

var watchLineRE = regexp.MustCompile(`^\[(\w+)\] +(\d+)  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ([^:]+): (.*)$`)

// TestWatchGroups follows two groups at once: each line says its group,
// --since selects the history shown first, and each group's messages come
// in order.
func TestWatchGroups(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--group", "dev")
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	waitListed(t, alice, up.groups["lobby"], up.groups["dev"])
	for _, g := range []string{"lobby", "dev"} {
		alice.join(t, g)
		bob.join(t, g)
	}
	bob.ok(t, "send", "lobby", "l1")
	d1 := jsonLines[ackJSON](t, bob.ok(t, "send", "dev", "--json", "d1"), ackKeys...)[0]
	bob.ok(t, "send", "lobby", "l2")

	// History since d1: d1 and l2, not l1.
	human := alice.start(t, "watch", "lobby", "dev", "--since", d1.TS)
	asJSON := alice.start(t, "watch", "lobby", "dev", "--since", "10m", "--json")
	waitText(t, human, "bob: l2")
	waitText(t, asJSON, `"l2"`)
	bob.ok(t, "send", "dev", "d2")
	alice.ok(t, "send", "lobby", "l3")
	waitText(t, human, "alice: l3")
	waitText(t, human, "bob: d2")
	waitText(t, asJSON, `"l3"`)
	waitText(t, asJSON, `"d2"`)
	stopWatch(t, human)
	stopWatch(t, asJSON)

	got := map[string][]string{}
	for _, l := range human.stdout.Lines() {
		m := watchLineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("watch printed %q, want [GROUP] SEQ TIME NAME: TEXT", l)
			continue
		}
		got[m[1]] = append(got[m[1]], m[2]+" "+m[3]+": "+m[4])
	}
	want := map[string][]string{"lobby": {"2 bob: l2", "3 alice: l3"}, "dev": {"1 bob: d1", "2 bob: d2"}}
	for g := range want {
		if !slices.Equal(got[g], want[g]) {
			t.Errorf("watch --since %s printed for %s: %q, want %q", d1.TS, g, got[g], want[g])
		}
	}

	gotJSON := map[string][]string{}
	for _, l := range watchJSON(t, asJSON) {
		gotJSON[l.Group] = append(gotJSON[l.Group], fmt.Sprintf("%d %s: %s", l.Seq, l.Name, l.Text))
	}
	wantJSON := map[string][]string{
		"lobby": {"1 bob: l1", "2 bob: l2", "3 alice: l3"},
		"dev":   {"1 bob: d1", "2 bob: d2"},
	}
	for g := range wantJSON {
		if !slices.Equal(gotJSON[g], wantJSON[g]) {
			t.Errorf("watch --since 10m --json printed for %s: %q, want %q", g, gotJSON[g], wantJSON[g])
		}
	}
}

// TestWatchRestart restarts the group daemon (same state directory, same
// port) under running watches and a chat. With its log in memory, each
// says once that the group's history was reset, then prints the new log's
// messages with their new sequence numbers, none twice; with its log on
// disk (the default) each goes on with the next messages, no reset said.
// The chat goes on sending either way.
func TestWatchRestart(t *testing.T) {
	t.Parallel()
	for _, storage := range []string{"memory", "disk"} {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			testWatchRestart(t, storage)
		})
	}
}

func testWatchRestart(t *testing.T, storage string) {
	memory := storage == "memory"
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer reg.stop(t)
	state := t.TempDir()
	serve := func(listen string) *daemon {
		return startDaemon(t, "serve", "--group", "lobby", "--registry", reg.registry, "--listen", listen, "--state-dir", state, "--storage", storage)
	}
	srv := serve("127.0.0.1:0")
	lobby := srv.groups["lobby"]
	alice := newUser(t, "alice", reg.registry)
	bob := newUser(t, "bob", reg.registry)
	waitListed(t, alice, lobby)
	alice.join(t, "lobby")
	bob.join(t, "lobby")
	bob.ok(t, "send", "lobby", "old1")
	bob.ok(t, "send", "lobby", "old2")

	asJSON := alice.start(t, "watch", "lobby", "--since", "1h", "--json")
	human := alice.start(t, "watch", "lobby", "--since", "1h")
	chat := alice.start(t, "chat", "lobby")
	waitText(t, asJSON, `"old2"`)
	waitText(t, human, "bob: old2")
	waitText(t, chat, "bob: old2")

	srv.stop(t)
	srv = serve(srv.addr)
	defer srv.stop(t)
	if srv.groups["lobby"] != lobby {
		t.Fatalf("lobby's UUID changed across the restart: %s, then %s", lobby, srv.groups["lobby"])
	}
	waitListed(t, bob, lobby)
	bob.ok(t, "send", "lobby", "new1")
	alice.ok(t, "send", "lobby", "new2")
	waitText(t, asJSON, `"new2"`)
	waitText(t, human, "alice: new2")
	epoch := info(t, alice, "lobby").Epoch
	stopWatch(t, asJSON)
	stopWatch(t, human)

	var got []string
	for _, l := range watchJSON(t, asJSON) {
		if l.Group != "lobby" {
			t.Errorf("watch --json printed %v, not marked as lobby's", l)
		}
		if l.Event != "" {
			if l.Event == "reset" && l.Epoch != epoch {
				t.Errorf("reset to epoch %d, but the group's epoch is %d", l.Epoch, epoch)
			}
			got = append(got, l.Event)
			continue
		}
		got = append(got, fmt.Sprintf("%d %s", l.Seq, l.Text))
	}
	want := []string{"1 old1", "2 old2", "3 new1", "4 new2"}
	if memory {
		want = []string{"1 old1", "2 old2", "reset", "1 new1", "2 new2"}
	}
	if !slices.Equal(got, want) {
		t.Errorf("watch --json across the restart printed %q, want %q", got, want)
	}

	got = nil
	for _, l := range human.stdout.Lines() {
		m := fetchLineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("watch printed %q, want SEQ TIME NAME: TEXT", l)
			continue
		}
		got = append(got, m[1]+" "+m[4])
	}
	want = []string{"1 old1", "2 old2", "3 new1", "4 new2"}
	resets := 0
	if memory {
		want, resets = []string{"1 old1", "2 old2", "1 new1", "2 new2"}, 1
	}
	if !slices.Equal(got, want) {
		t.Errorf("watch across the restart printed %q, want %q", got, want)
	}
	if s := human.stderr.String(); strings.Count(s, "history was reset") != resets {
		t.Errorf("watch's stderr should say %d times that the history was reset; it has:\n%s", resets, s)
	}

	// chat went through the restart too, and sends to the new log.
	waitText(t, chat, "alice (you): new2")
	if _, err := io.WriteString(chat.stdin, "from the chat\n"); err != nil {
		t.Fatal(err)
	}
	waitText(t, chat, "alice (you): from the chat")
	chat.stdin.Close()
	if code := chat.wait(t); code != 0 {
		t.Errorf("chat exited with code %d at end of input, want 0\nstderr:\n%s", code, chat.stderr)
	}
	chat.noRaces(t)
	if want := []string{"bob: old1", "bob: old2", "bob: new1", "alice (you): new2", "alice (you): from the chat"}; !slices.Equal(chatLines(chat.stdout.Lines()), want) {
		t.Errorf("chat across the restart printed messages %q, want %q", chatLines(chat.stdout.Lines()), want)
	}
	if n := strings.Count(chat.stdout.String(), "-- the group's daemon restarted; its history was reset --"); n != resets {
		t.Errorf("chat said %d times that the history was reset, want %d:\n%s", n, resets, chat.stdout)
	}
}

// TestWatchMemberList checks watch's member list (asked only to label
// senders), as TestFetchMemberList does fetch's: `watch --json`, which
// prints every sender's key, asks for none (the daemon's /metrics counts
// no members operation); and a daemon that stopped answering (SIGSTOP)
// after it was listed costs the list at most --timeout, said on stderr,
// after which the watch waits for the daemon and shows the history once
// it answers again.
func TestWatchMemberList(t *testing.T) {
	t.Parallel()
	gd, maddr, alice := lobbySaidHello(t)

	w := alice.start(t, "watch", "lobby", "--json", "--since", "1h")
	waitText(t, w, `"text":"hello"`)
	stopWatch(t, w)
	if n := membersAnswered(t, maddr); n != 0 {
		t.Errorf("watch --json asked for the member list (%v members operations, want 0)", n)
	}

	if err := gd.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	w = alice.start(t, "watch", "lobby", "--since", "1h", "--timeout", "1500ms")
	noted := w.stderr.waitFor(waitTimeout, hasText("no member list"))
	if err := gd.proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !noted {
		t.Fatalf("watch of a daemon that stopped answering said nothing of its member list within %v\nstdout:\n%s\nstderr:\n%s", waitTimeout, w.stdout, w.stderr)
	}
	waitText(t, w, "alice: hello")
	stopWatch(t, w)
}

// TestWatchForBots follows a group as a bot keeping a cursor does. --after
// 0, the cursor of a bot that has seen nothing yet, used to mean "from now
// on", as no --after does: it replays every message held. Every line
// names its group's UUID (names are anyone's to take). A gap said its
// sequence numbers as "from" and "to", so "from" was a fingerprint in one
// line and a number in the next, and a typed decoder (watchLine) failed
// on the gap: they are from_seq and to_seq.
func TestWatchForBots(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--storage", "memory", "--max-msgs", "3")
	defer up.stop(t)
	lobby := up.groups["lobby"]
	bob := newUser(t, "bob", up.registry)
	waitListed(t, bob, lobby)
	bob.join(t, "lobby")
	bob.okInput(t, "m1\nm2\nm3\nm4\nm5\n", "send", "lobby") // the group holds #3..#5

	all := bob.start(t, "watch", "lobby", "--json", "--after", "0")
	waitText(t, all, `"text":"m5"`)
	stopWatch(t, all)
	var got []string
	for _, l := range watchJSON(t, all) {
		got = append(got, fmt.Sprintf("%s %s #%d %s", l.UUID, l.Event, l.Seq, l.Text))
	}
	want := []string{lobby + "  #3 m3", lobby + "  #4 m4", lobby + "  #5 m5"}
	if !slices.Equal(got, want) {
		t.Errorf("watch --after 0 printed %q, want every message held %q", got, want)
	}

	resumed := bob.start(t, "watch", "lobby", "--json", "--after", "1")
	waitText(t, resumed, `"text":"m5"`)
	stopWatch(t, resumed)
	lines := watchJSON(t, resumed)
	if len(lines) != 4 {
		t.Fatalf("watch --after 1 printed %v, want a gap and three messages", lines)
	}
	if g := lines[0]; g.Event != "gap" || g.FromSeq != 2 || g.ToSeq != 2 || g.UUID != lobby || g.Group != "lobby" {
		t.Errorf("watch --after 1 began with %+v, want the gap of #2 in lobby (%s)", g, lobby)
	}
	if m := lines[1]; m.Event != "" || m.Seq != 3 || m.From == "" {
		t.Errorf("after the gap: %+v, want message #3 with its sender", m)
	}
}

// TestWatchEndsWithItsReader pipes watch --json into a reader that takes
// one line and goes away, as `huddle watch lobby --json | head -1` does in
// a bot waiting for a message. The watch used to go on until the next
// message's write killed it with SIGPIPE, in a quiet group never, and the
// pipeline with it. It ends at once, with the exit code a command killed
// by SIGPIPE shows the shell (141).
func TestWatchEndsWithItsReader(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)
	alice.ok(t, "send", "lobby", "the one message")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(huddleBin, "watch", "lobby", "--json", "--since", "1h")
	cmd.Env = alice.env(t)
	cmd.Stdout = w
	stderr := newStream(nil)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	w.Close() // the watch holds the only writing end
	copied := make(chan struct{})
	go func() { stderr.copy(errPipe); close(copied) }()
	exited := make(chan struct{})
	go func() { <-copied; cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || !strings.Contains(line, `"text":"the one message"`) {
		t.Fatalf("watch printed %q (%v), want the message", line, err)
	}
	r.Close()
	select {
	case <-exited:
	case <-time.After(waitTimeout):
		t.Fatalf("watch still running %v after its reader went away", waitTimeout)
	}
	if code := cmd.ProcessState.ExitCode(); code != 141 {
		t.Errorf("watch exited with code %d after its reader went away, want 141\nstderr:\n%s", code, stderr)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("watch wrote to stderr:\n%s", s)
	}
}

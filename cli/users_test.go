package cli

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestJoinKeepsTheName: join without --as keeps the name one has (README:
// join is idempotent); it used to rename the member to $USER.
func TestJoinKeepsTheName(t *testing.T) {
	u := newTestUser(t, startUp(t))
	u.ok(t, "join", "lobby", "--as", "alice")
	if out := u.ok(t, "join", "lobby"); !strings.Contains(out, `already in lobby as "alice"`) {
		t.Errorf("join again: %q", out)
	}
	if out := u.ok(t, "members", "lobby"); !strings.Contains(out, "alice") {
		t.Errorf("members after joining again: %q, want alice still", out)
	}
	if out := u.ok(t, "join", "lobby", "--as", "alicia"); !strings.Contains(out, `your name there is now "alicia"`) {
		t.Errorf("join --as: %q", out)
	}
	// A newcomer without --as gets their user name (none here: anonymous).
	if out := newTestUser(t, u.registry).ok(t, "join", "lobby"); !strings.Contains(out, `joined lobby as "anonymous" (0 messages so far)`) {
		t.Errorf("newcomer: %q", out)
	}
}

// TestGroupsResolveAmongJoinedFirst: a second group registered under a
// member's group's name does not make the member's commands ambiguous (it
// used to, exit 2 for everyone); a user who joined neither is told of both,
// with their daemons' fingerprints.
func TestGroupsResolveAmongJoinedFirst(t *testing.T) {
	reg := startUp(t)
	alice := newTestUser(t, reg)
	alice.ok(t, "join", "lobby", "--as", "alice")
	// A stranger's daemon registers another lobby.
	v := startVerb(t, nil, "serve", "--no-mdns", "--registry", reg, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--group", "lobby", "--log-level", "warn")
	v.waitLine(t, regexp.MustCompile(`(?m)^  group lobby  (\S+)`))
	carol := newTestUser(t, reg)
	var code int
	var stderr string
	for range 500 { // until the registry lists both
		if code, _, stderr = carol.run(t, "fetch", "lobby"); code == ExitUsage {
			break
		}
	}
	if code != ExitUsage || !strings.Contains(stderr, `"lobby" matches 2 groups`) || strings.Count(stderr, "daemon ") != 2 {
		t.Fatalf("carol, who joined neither: exit %d, %q; want both lobbies listed with their daemons", code, stderr)
	}
	if out := alice.ok(t, "send", "lobby", "still mine"); !strings.Contains(out, "sent #1") {
		t.Errorf("alice's send to her lobby: %q", out)
	}
	if out := alice.ok(t, "fetch", "lobby"); !strings.Contains(out, "alice: still mine") {
		t.Errorf("alice's fetch: %q", out)
	}
	// Leaving forgets the preference.
	alice.ok(t, "leave", "lobby")
	if code, _, _ := alice.run(t, "fetch", "lobby"); code != ExitUsage {
		t.Errorf("after leaving, fetch lobby: exit %d, want 2 (ambiguous)", code)
	}
}

// TestSendLinesFromAPipe: each line of standard input is a message; blank
// lines are skipped; a line over the group's limit is refused by its line
// number (however long: a 2 MiB line too) and the lines after it are sent;
// the exit code is then 1. A blank message as an argument is a usage error,
// and so is standard input holding no message.
func TestSendLinesFromAPipe(t *testing.T) {
	u := newTestUser(t, startUp(t))
	u.ok(t, "join", "lobby", "--as", "alice")
	input := "a\nb\n" + strings.Repeat("x", 70<<10) + "\n\n   \nd\n" + strings.Repeat("y", 2<<20) + "\ne\r\nf"
	code, stdout, stderr := u.runInput(t, input, "send", "lobby")
	if code != ExitRefused {
		t.Errorf("exit %d, want 1\nstderr: %s", code, stderr)
	}
	for _, want := range []string{"line 3 is too large (71680 bytes", "line 7 is too large (2097152 bytes", "2 lines not sent"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stdout, "sent #"); n != 5 {
		t.Errorf("%d acks, want 5 (a, b, d, e, f):\n%s", n, stdout)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(u.ok(t, "fetch", "lobby")), "\n") {
		_, text, _ := strings.Cut(line, "alice: ")
		got = append(got, text)
	}
	if strings.Join(got, ",") != "a,b,d,e,f" {
		t.Errorf("the group holds %q, want a, b, d, e, f", got)
	}
	for _, blank := range []string{"", "   "} {
		if code, _, stderr := u.run(t, "send", "lobby", blank); code != ExitUsage || !strings.Contains(stderr, "blank") {
			t.Errorf("send %q: exit %d, %q; want 2, blank", blank, code, stderr)
		}
	}
	// Standard input with no message on it is a usage error too, said,
	// and sends nothing: it exited 0 without a word (until session 22).
	for input, want := range map[string]string{"": "standard input was empty", "\n  \r\n\n": "only blank lines (3)"} {
		code, stdout, stderr := u.runInput(t, input, "send", "lobby", "--json")
		if code != ExitUsage || !strings.Contains(stderr, want) || !strings.Contains(stderr, "nothing was sent") || stdout != "" {
			t.Errorf("send with %q on stdin: exit %d, stdout %q, stderr %q; want 2, saying %q and that nothing was sent", input, code, stdout, stderr, want)
		}
	}
	if got := strings.Count(u.ok(t, "fetch", "lobby"), "\n"); got != 5 {
		t.Errorf("the group holds %d messages after sends of no line, want the 5 sent before", got)
	}
}

// TestSendLinesPacedByRateLimit: lines piped in faster than the group's
// send rate are all sent, at its pace, each once (huddle send used to stop
// at the first rate_limited, exit 1, the lines after the burst unsent and
// uncounted).
func TestSendLinesPacedByRateLimit(t *testing.T) {
	u := newTestUser(t, startUpWith(t, []string{"--send-rate", "40", "--send-burst", "8", "--max-batch", "8"}))
	u.ok(t, "join", "lobby", "--as", "alice")
	code, stdout, stderr := u.runInput(t, numberedLines(30), "send", "lobby")
	if code != ExitOK {
		t.Fatalf("exit %d, want 0\nstderr: %s", code, stderr)
	}
	if n := strings.Count(stdout, "sent #"); n != 30 {
		t.Errorf("%d acks, want 30:\n%s", n, stdout)
	}
	heldOnce(t, u, "alice", 30)
}

// numberedLines returns "line 1\n" to "line n\n".
func numberedLines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

// heldOnce checks that lobby holds each of numberedLines(n), sent by
// name, exactly once.
func heldOnce(t *testing.T, u *testUser, name string, n int) {
	t.Helper()
	held := u.ok(t, "fetch", "lobby")
	for i := 1; i <= n; i++ {
		if c := strings.Count(held, fmt.Sprintf("%s: line %d\n", name, i)); c != 1 {
			t.Errorf("line %d held %d times, want once:\n%s", i, c, held)
		}
	}
}

// TestChatFromAPipePacedByRateLimit: huddle chat fed faster than the
// group's send rate sends every line at its pace (it used to take the
// rate_limited refusal for a lost connection: "kept to send again when the
// connection is back", the rest "not connected", exit 3).
func TestChatFromAPipePacedByRateLimit(t *testing.T) {
	u := newTestUser(t, startUpWith(t, []string{"--send-rate", "40", "--send-burst", "4", "--max-batch", "4"}))
	u.ok(t, "join", "lobby", "--as", "alice")
	code, _, stderr := u.runInput(t, numberedLines(12), "chat", "lobby")
	if code != ExitOK || strings.Contains(stderr, "not sent") || strings.Contains(stderr, "not connected") {
		t.Fatalf("chat: exit %d, want 0, every line sent\nstderr: %s", code, stderr)
	}
	heldOnce(t, u, "alice", 12)
}

// TestSendFlagsAfterText: flags after the text are flags (they used to be
// sent as words of the message: huddle send lobby hi --registry X sent
// "hi --registry X"), -- ends the flags for text with words that start
// with -, and a word that looks like an unknown flag is refused, saying
// to put -- before the text.
func TestSendFlagsAfterText(t *testing.T) {
	reg := startUp(t)
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "alice")
	if out := u.ok(t, "send", "lobby", "running", "late", "--registry", reg, "--json"); !strings.HasPrefix(out, `{"seq":1,`) {
		t.Errorf("send with --registry and --json after the text printed %q, want a JSON ack", out)
	}
	u.ok(t, "send", "lobby", "--json", "--", "-5", "degrees", "--json")
	u.ok(t, "send", "lobby", "two", "--timeout", "20s", "--", "--words")
	code, _, stderr := u.run(t, "send", "lobby", "it", "is", "-5", "out")
	if code != ExitUsage || !strings.Contains(stderr, "put -- before the text") {
		t.Errorf("send with -5 in the text: exit %d, %q; want 2 and a word about --", code, stderr)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(u.ok(t, "fetch", "lobby")), "\n") {
		_, text, _ := strings.Cut(line, "alice: ")
		got = append(got, text)
	}
	if want := []string{"running late", "-5 degrees --json", "two --words"}; !slices.Equal(got, want) {
		t.Errorf("the group holds %q, want %q", got, want)
	}
}

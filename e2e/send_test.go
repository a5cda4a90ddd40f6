//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestSendOutcomeUnknown sends to a daemon that stopped answering
// (SIGSTOP) after its registry listed it: the send times out (exit 3)
// without knowing whether the daemon stored the message. It said only
// that, and a script retrying could store the message twice. It names the
// message's ID to retry with, and the retry with it is stored once.
func TestSendOutcomeUnknown(t *testing.T) {
	t.Parallel()
	gd, _, alice := lobbySaidHello(t)
	resume := freeze(t, gd.proc)
	defer resume()
	r := alice.run(t, "send", "lobby", "--timeout", "1500ms", "deploy", "done")
	m := regexp.MustCompile(`retry it with --id ([0-9a-f-]{36}) to have it stored once`).FindStringSubmatch(r.stderr)
	if r.code != 3 || m == nil {
		t.Fatalf("send to a daemon that stopped answering: want exit code 3 and the message's ID to retry with\n%s", r)
	}
	resume()
	acks := jsonLines[ackJSON](t, alice.ok(t, "send", "lobby", "--json", "--id", m[1], "deploy", "done"), ackKeys...)
	if len(acks) != 1 || acks[0].MsgID != m[1] {
		t.Fatalf("the retry with --id %s was acknowledged %+v", m[1], acks)
	}
	n := 0
	for _, msg := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json"), messageKeys...) {
		if msg.Text == "deploy done" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the message is stored %d times after its retry, want once", n)
	}
	// A send that never went out (its registry unreachable) has nothing to
	// retry by ID.
	if r := alice.run(t, "send", "lobby", "--registry", "127.0.0.1:1", "--timeout", "1s", "x"); r.code != 3 || strings.Contains(r.stderr, "--id") {
		t.Errorf("send with no registry answering: want exit code 3 and no retry by ID\n%s", r)
	}
}

// TestSendLinesOutcomeUnknown pipes lines to huddle send and stops the
// daemon answering (SIGSTOP) after the first line's ack: the send of the
// next lines times out (exit 3) without knowing whether they were stored.
// A TEXT send names its ID to retry with; lines from standard input were
// named by nothing, so a script could only resend them under new IDs and
// store them twice. Each line in flight is named with its ID, and the
// lines after it as not sent; retried with those IDs, each is stored once.
func TestSendLinesOutcomeUnknown(t *testing.T) {
	t.Parallel()
	gd, _, alice := lobbySaidHello(t)
	p := alice.start(t, "send", "lobby", "--timeout", "1500ms")
	if _, err := io.WriteString(p.stdin, "first\n"); err != nil {
		t.Fatal(err)
	}
	if !p.stdout.waitFor(waitTimeout, func(lines []string) bool { return len(lines) > 0 }) {
		t.Fatalf("no ack of the first line:\n%s", p.stderr)
	}
	resume := freeze(t, gd.proc)
	defer resume()
	texts := map[int]string{2: "second", 3: "third"}
	if _, err := io.WriteString(p.stdin, "second\nthird\n"); err != nil {
		t.Fatal(err)
	}
	p.stdin.Close()
	code := p.wait(t)
	errs := p.stderr.String()
	named := regexp.MustCompile(`(?m)^    line (\d+): --id ([0-9a-f-]{36})$`).FindAllStringSubmatch(errs, -1)
	if code != 3 || len(named) == 0 || named[0][1] != "2" {
		t.Fatalf("lines sent to a daemon that stopped answering: want exit code 3 and line 2's ID to retry with; exit %d, stderr:\n%s", code, errs)
	}
	last := named[len(named)-1][1]
	if !strings.Contains(errs, "no line after line "+last+" was sent") {
		t.Errorf("stderr does not say that the lines after line %s were not sent:\n%s", last, errs)
	}
	// Which were acknowledged, and where to resume (the line after those
	// in doubt).
	lastN, _ := strconv.Atoi(last)
	if want := fmt.Sprintf("  1 line acknowledged (line 1)\n  not sent: line %d and every line after it", lastN+1); !strings.Contains(errs, want) {
		t.Errorf("stderr does not say %q:\n%s", want, errs)
	}
	resume()
	for _, m := range named {
		n, _ := strconv.Atoi(m[1])
		acks := jsonLines[ackJSON](t, alice.ok(t, "send", "lobby", "--json", "--id", m[2], texts[n]), ackKeys...)
		if len(acks) != 1 || acks[0].MsgID != m[2] {
			t.Fatalf("the retry of line %d with --id %s was acknowledged %+v", n, m[2], acks)
		}
	}
	stored := make(map[string]int)
	for _, msg := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json"), messageKeys...) {
		stored[msg.Text]++
	}
	for n, text := range texts {
		want := 0
		if n <= len(named)+1 {
			want = 1
		}
		if stored[text] != want {
			t.Errorf("line %d (%q) is stored %d times after the retries, want %d", n, text, stored[text], want)
		}
	}
}

// TestSendFromTheTerminal: 'huddle send lobby' without TEXT at a
// terminal reads the lines typed; it showed nothing at all, and a
// newcomer who forgot the text saw a command that hung. It says what it
// waits for, and a line typed is sent.
func TestSendFromTheTerminal(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := aliceInLobbyOf(t, up)
	var words []string
	for _, kv := range append(alice.env(t), "TERM=screen") {
		words = append(words, shellQuote(kv))
	}
	tm := newTmux(t, fmt.Sprintf("env -i %s %s send lobby; echo \"send exited with code $?\"; exec sleep 600",
		strings.Join(words, " "), shellQuote(huddleBin)))
	tm.waitScreen("the hint of what send waits for", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, "huddle send: type the lines to send to lobby, one message each; Ctrl-D ends")
		})
	})
	tm.keys("typed at the terminal", "Enter", "C-d")
	tm.waitScreen("the line sent, and send done", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "sent #") }) &&
			slices.Contains(lines, "send exited with code 0")
	})
}

// freeze stops p (SIGSTOP), waits until every thread of it has stopped,
// and returns what resumes it (SIGCONT), which does so once however often
// it is called.
//
// The kill returns before the process stops: one of its threads takes
// the signal when the kernel next runs it and stops the others, which run
// on until then. On a loaded machine a daemon so "stopped" acknowledged
// the lines sent just after (TestSendLinesOutcomeUnknown, 4 of 40 runs
// under -race with six at once).
func freeze(t *testing.T, p *proc) (resume func()) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { p.cmd.Process.Signal(syscall.SIGCONT) }) }
	pid := p.cmd.Process.Pid
	var running string
	if !eventually(t, waitTimeout, func() bool { running = runningThreads(pid); return running == "" }) {
		resume()
		t.Fatalf("%s (pid %d) sent SIGSTOP: threads %s still not stopped after %v", p.name, pid, running, waitTimeout)
	}
	return resume
}

// runningThreads names the threads of process pid not stopped (state T in
// /proc/PID/task/TID/stat, or ended), or returns "" when every one is.
func runningThreads(pid int) string {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var running []string
	for _, tid := range tids {
		stat, err := os.ReadFile(filepath.Join(dir, tid.Name(), "stat"))
		if err != nil {
			continue // a thread that ended
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			return fmt.Sprintf("%s: unreadable stat %q", tid.Name(), stat)
		}
		if state := stat[i+2]; bytes.IndexByte([]byte("TtZX"), state) < 0 { // stopped, traced, ended
			running = append(running, fmt.Sprintf("%s (%c)", tid.Name(), state))
		}
	}
	return strings.Join(running, ", ")
}

//go:build linux

package e2e

import (
	"regexp"
	"strings"
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
	if err := gd.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			gd.proc.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
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

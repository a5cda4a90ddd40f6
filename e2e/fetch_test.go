//go:build linux

package e2e

import (
	"strings"
	"syscall"
	"testing"
)

// TestFetchMemberList checks what fetch's member list (asked only to
// label senders) costs: `fetch --json`, which prints every sender's key,
// asks for none (the daemon's /metrics counts no members operation), so a
// script's fetch waits on nothing but its messages; and when the member
// list used up the command's --timeout (a daemon that stopped answering
// after it was listed), the command's error says so, rather than the
// fetch after it failing at once for want of time.
func TestFetchMemberList(t *testing.T) {
	t.Parallel()
	gd, maddr, alice := lobbySaidHello(t)

	members := func() float64 { return membersAnswered(t, maddr) }
	if out := alice.ok(t, "fetch", "lobby"); !strings.Contains(out, "hello") {
		t.Fatalf("fetch printed:\n%s", out)
	}
	before := members()
	if before != 1 {
		t.Fatalf("after one fetch with names shown the daemon counted %v members operations, want 1", before)
	}
	if out := alice.ok(t, "fetch", "lobby", "--json"); !strings.Contains(out, `"text":"hello"`) {
		t.Fatalf("fetch --json printed:\n%s", out)
	}
	if got := members(); got != before {
		t.Errorf("fetch --json asked for the member list (%v members operations, want %v)", got, before)
	}

	// A daemon that stops answering (SIGSTOP) while the registry lists it.
	if err := gd.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer gd.proc.cmd.Process.Signal(syscall.SIGCONT)
	r := alice.run(t, "fetch", "lobby", "--timeout", "1500ms")
	if r.code != 3 || !strings.Contains(r.stderr, "members group lobby") || !strings.Contains(r.stderr, "timed out") {
		t.Errorf("fetch from a daemon that stopped answering: want exit code 3 and an error naming the member list that timed out\n%s", r)
	}
}

// lobbySaidHello starts a registry and a daemon hosting lobby, both
// stopped when t ends, and alice, a member of lobby who has sent "hello"
// there. It returns the daemon, its /metrics address and alice.
func lobbySaidHello(t *testing.T) (*daemon, string, *user) {
	t.Helper()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	t.Cleanup(func() { reg.stop(t) })
	gd := startDaemon(t, "serve", "--group", "lobby", "--registry", reg.registry, "--listen", "127.0.0.1:0",
		"--state-dir", t.TempDir(), "--metrics", "127.0.0.1:0")
	t.Cleanup(func() { gd.stop(t) })
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, gd.groups["lobby"])
	alice.join(t, "lobby")
	alice.ok(t, "send", "lobby", "hello")
	return gd, metricsAddr(t, gd), alice
}

// membersAnswered is how many members operations the daemon whose
// /metrics is at maddr has answered ok.
func membersAnswered(t *testing.T, maddr string) float64 {
	t.Helper()
	n, _ := sample(scrape(t, maddr), "huddle_operation_duration_seconds", "op", "members", "result", "ok")
	return n
}

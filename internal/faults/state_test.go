//go:build unix

package faults

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// exited waits for p to exit on its own and returns its exit code.
func (p *proc) exited(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitTimeout):
		t.Fatal("the process did not exit")
		return 0
	}
}

// TestStateDirDamaged damages a group daemon's state directory between
// runs, as a fault run did: with its key.pem gone (groups and members
// still there), or a group's UUID zeroed in groups.json, the daemon
// refuses to start, says what is wrong and how to recover, and writes
// nothing; it never comes up under a new identity silently. Started with
// --new-identity, it goes on under a new key, with the same group UUIDs,
// and its members are still members.
func TestStateDirDamaged(t *testing.T) {
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	defer reg.kill(syscall.SIGTERM)
	dir := t.TempDir()
	groups := startGroups(t, regAddr, dir)
	u := newUser(t)
	var before map[string]wire.GroupEntry
	eventually(t, "both groups listed", func() bool { before = u.listed(regAddr); return len(before) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	g, err := u.cl.Group(before["alpha"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Join(ctx, "member", nil); err != nil {
		t.Fatal(err)
	}
	groups.kill(syscall.SIGTERM)

	serve := []string{"serve", "--no-mdns", "--registry", regAddr, "--listen", "127.0.0.1:0",
		"--group", "alpha", "--group", "beta", "--state-dir", dir}
	refused := func(what string, say ...string) {
		t.Helper()
		files, _ := os.ReadDir(dir)
		p := startToExit(t, serve...)
		for _, s := range say {
			p.line(t, regexp.MustCompile(regexp.QuoteMeta(s)))
		}
		if code := p.exited(t); code == 0 {
			t.Fatalf("%s: the daemon exited 0, want a failure", what)
		}
		if after, _ := os.ReadDir(dir); len(after) != len(files) {
			t.Fatalf("%s: the state directory went from %d to %d files", what, len(files), len(after))
		}
	}

	key := filepath.Join(dir, "key.pem")
	if err := os.Rename(key, key+".lost"); err != nil {
		t.Fatal(err)
	}
	refused("key.pem missing", "key.pem", "--new-identity")
	if err := os.Rename(key+".lost", key); err != nil {
		t.Fatal(err)
	}

	groupsJSON := filepath.Join(dir, "groups.json")
	good, err := os.ReadFile(groupsJSON)
	if err != nil {
		t.Fatal(err)
	}
	zeroed := strings.Replace(string(good), before["alpha"].Group.String(), "00000000-0000-0000-0000-000000000000", 1)
	if err := os.WriteFile(groupsJSON, []byte(zeroed), 0o600); err != nil {
		t.Fatal(err)
	}
	refused("a zeroed UUID", "all-zero UUID")
	if err := os.WriteFile(groupsJSON, good, 0o600); err != nil {
		t.Fatal(err)
	}

	// On purpose: a new key, the same groups and members.
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	p := start(t, append(serve, "--new-identity")...)
	p.line(t, listening)
	defer p.kill(syscall.SIGTERM)
	var after map[string]wire.GroupEntry
	eventually(t, "the groups listed under the new key", func() bool {
		after = u.listed(regAddr)
		return len(after) == 2 && after["alpha"].Fingerprint != before["alpha"].Fingerprint
	})
	for name, e := range before {
		if after[name].Group != e.Group {
			t.Fatalf("group %s came back as %s, was %s", name, after[name].Group, e.Group)
		}
	}
	if g, err = u.cl.Group(after["alpha"]); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Send(ctx, []byte("still a member")); err != nil {
		t.Fatalf("send under the new key: %v", err)
	}
}

package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
)

// upLine is the line huddle up prints once its registry listens.
var upLine = regexp.MustCompile(`(?m)^huddle registry listening on (\S+),`)

// startUp runs huddle up in this process (mDNS off, on 127.0.0.1) with the
// given groups, until the test ends, and returns its registry's address
// once every group is listed. It lists again at each registration huddle
// up logs (at info level), rather than every 10 ms.
func startUp(t *testing.T, groups ...string) string {
	t.Helper()
	return startUpWith(t, nil, groups...)
}

// startUpWith is startUp with more flags for huddle up (limits, say).
func startUpWith(t *testing.T, flags []string, groups ...string) string {
	t.Helper()
	args := append([]string{"up", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "info"}, flags...)
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	v := startVerb(t, nil, args...)
	addr := strings.Replace(v.waitLine(t, upLine), "0.0.0.0", "127.0.0.1", 1)
	u := newTestUser(t, addr)
	want := max(1, len(groups))
	awaitLines(t, fmt.Sprintf("huddle up's registry listing %d groups", want), v.stderr, registered, func() bool {
		_, out, _ := u.run(t, "groups", "--json")
		return strings.Count(out, "\n") >= want
	})
	return addr
}

// testUser is a user (a HUDDLE_HOME of their own) whose verbs run in this
// process against a registry.
type testUser struct {
	home, registry string
	// lockWait is the commands' Env.LockWait; 0: its default.
	lockWait time.Duration
	// flock, if set, is the commands' flock(2) (Env.flock).
	flock func(fd, how int) error
	// beforeVerify, if set, is the commands' Env.beforeVerify.
	beforeVerify func(g *gatherer, fingerprint string)
	// browse, if set, is the commands' Env.browse.
	browse func(verb string) error
}

// newTestClient returns a Go client of a key of its own (its pins in a
// file of the test's), closed as the test ends.
func newTestClient(t *testing.T) *client.Client {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func newTestUser(t *testing.T, registry string) *testUser {
	return &testUser{home: t.TempDir(), registry: registry}
}

// run runs a client verb as u and returns its exit code and outputs.
func (u *testUser) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return u.runInput(t, "", args...)
}

// runInput is run with input on standard input.
func (u *testUser) runInput(t *testing.T, input string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	e := Env{Stdin: strings.NewReader(input), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }, LockWait: u.lockWait, flock: u.flock, beforeVerify: u.beforeVerify, browse: u.browse}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	code := Main(ctx, args, e)
	return code, out.String(), errb.String()
}

// ok runs a verb that must succeed and returns its stdout.
func (u *testUser) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := u.run(t, args...)
	if code != ExitOK {
		t.Fatalf("huddle %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

//go:build unix

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testbin"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// lease is the registry's lease in these tests: short, so that a lapse is
// quick to see.
const lease = time.Second

// waitTimeout bounds every condition a test polls for; it bounds how long a
// bug may hang the run, and asserts nothing about speed.
const waitTimeout = 30 * time.Second

// binaryEnv, when set, names the huddle binary to run instead of building
// one (TestProcsDieWithTest's copy of the test binary, killed before it
// could remove a binary of its own).
const binaryEnv = "HUDDLE_FAULTS_BINARY"

// huddle returns the huddle binary, built once per test run.
func huddle(t *testing.T) string {
	if b := os.Getenv(binaryEnv); b != "" {
		return b
	}
	return testbin.Huddle(t)
}

// procEnv returns the environment a huddle process started with args gets
// from the test's, environ: testbin.Env's rule, as internal/jepsen's. The
// run's settings (HUDDLE_<FLAG>: HUDDLE_FSYNC=always) reach every process,
// one for a flag the test gives itself is an error, and this package's
// own HUDDLE_FAULTS_*, HUDDLE_CHURN_* and HUDDLE_CRASH_* (make crashloop)
// stay out. (Every HUDDLE_* was dropped silently: a run that set one
// measured the defaults.)
func procEnv(environ, args []string) ([]string, error) {
	env, err := testbin.Env(environ, args, "HUDDLE_FAULTS_", "HUDDLE_CHURN_", "HUDDLE_CRASH_")
	if err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	return env, nil
}

// proc is a running huddle process.
type proc struct {
	cmd  *exec.Cmd
	args []string // huddle's, after the binary
	fate testbin.Fate
	mu   sync.Mutex
	out  []string
	more chan struct{} // closed and replaced at each line
	done chan struct{} // closed when the process has exited
}

// start runs huddle with args, its output collected line by line. A
// process that ends without the test ending it (kill) fails the test at
// once, naming it and how it ended, and the test's waits (eventually,
// line) fail then rather than at their deadline: a daemon that crashed
// read as a lapse or a refusal it had not made.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startWith(t, nil, false, args...)
}

// startToExit runs huddle with args as start does, for a process the test
// expects to exit by itself (a daemon refusing its state directory): its
// exit is the test's to check (exited), not reported.
func startToExit(t *testing.T, args ...string) *proc {
	t.Helper()
	return startWith(t, nil, true, args...)
}

// startWith runs huddle with args under the command prefix (nsenter...),
// which must exec it in its own place: the process is huddle's. toExit
// says it is expected to exit by itself (startToExit).
//
// A port the process is to take at random (--listen 127.0.0.1:0) is a
// reserved one (testport.Cell): below the kernel's ephemeral range, where
// no socket bound to port 0 lands, and never another test process's. The
// tests that kill a daemon and start it again at its address met whatever
// took the port meanwhile: a kernel-chosen port is free for any other
// process's next socket (a client's, another package's daemon) the moment
// the daemon dies.
func startWith(t *testing.T, prefix []string, toExit bool, args ...string) *proc {
	t.Helper()
	args = slices.Clone(args)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--listen" && args[i+1] == "127.0.0.1:0" {
			args[i+1] = testport.Cell(t)
		}
	}
	cmd := exec.Command(huddle(t), args...)
	if len(prefix) > 0 {
		cmd = exec.Command(prefix[0], append(append(prefix[1:], huddle(t)), args...)...)
	}
	env, err := procEnv(os.Environ(), args)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(env, "HOME="+t.TempDir(), "HUDDLE_HOME="+t.TempDir())
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	p := &proc{cmd: cmd, args: args, more: make(chan struct{}), done: make(chan struct{})}
	if toExit {
		p.fate.Expect()
	}
	ends := endsOf(t)
	// testbin.Start: the process dies with the test process, however
	// that ends (a prefix such as nsenter execs huddle, which keeps the
	// parent-death signal), and not with the thread that forked it.
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		cmd.Wait()
		w.Close()
		<-scanned // every line it printed is in out before done
		// Reported before done closes: the cleanup's kill waits for
		// done, so the report comes before the test ends, and whoever
		// sees the process gone sees its end noted.
		if p.fate.Ended(cmd.ProcessState) {
			what := p.fate.Unseen(p.name(), cmd, args)
			ends.Note(what)
			p.mu.Lock()
			tail := p.out[max(0, len(p.out)-20):]
			p.mu.Unlock()
			t.Errorf("%s (huddle %s); its last lines:\n%s", what, strings.Join(args, " "), strings.Join(tail, "\n"))
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			p.mu.Lock()
			t.Logf("output of %s (%s):\n%s", strings.Join(args, " "), &p.fate, strings.Join(p.out, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// name names the process in reports: its pid and the address it was
// told to listen on.
func (p *proc) name() string {
	if i := slices.Index(p.args, "--listen"); i >= 0 && i+1 < len(p.args) {
		return fmt.Sprintf("pid %d at %s", p.cmd.Process.Pid, p.args[i+1])
	}
	return fmt.Sprintf("pid %d", p.cmd.Process.Pid)
}

// unseenEnds holds each running test's testbin.Ends (endsOf).
var unseenEnds sync.Map // *testing.T -> *testbin.Ends

// endsOf returns where t's processes' unseen ends are noted, for its
// waits to fail on at once.
func endsOf(t *testing.T) *testbin.Ends {
	e, loaded := unseenEnds.LoadOrStore(t, testbin.NewEnds())
	if !loaded {
		t.Cleanup(func() { unseenEnds.Delete(t) })
	}
	return e.(*testbin.Ends)
}

// kill sends sig, an end the test causes, and waits for the process to
// exit (at once, if it has).
func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.fate.Sent(sig, true)
	p.cmd.Process.Signal(sig)
	<-p.done
}

// line waits for an output line matching re and returns its submatches.
// It fails at once if a process of the test ended unseen.
func (p *proc) line(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(waitTimeout)
	ends := endsOf(t)
	exited := false
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.out); i++ {
			if m := re.FindStringSubmatch(p.out[i]); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		more := p.more
		p.mu.Unlock()
		if exited {
			t.Fatalf("process exited before printing a line matching %v", re)
		}
		select {
		case <-more:
		case <-p.done:
			// Its last lines and its exit may come at once: look
			// through them (all in out by now) before failing.
			exited = true
		case <-ends.Any():
			t.Fatalf("waiting for a line matching %v: %v", re, ends.Err())
		case <-deadline:
			t.Fatalf("no line matching %v", re)
		}
	}
}

// printed returns the first line the process has printed so far that
// matches re, or "".
func (p *proc) printed(re *regexp.Regexp) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.out {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

// historyLost matches a group daemon's report of a group's history lost
// (store.Recovery's NewEpoch or MissingLast).
var historyLost = regexp.MustCompile(`group history lost`)

var listening = regexp.MustCompile(`listening on (\S+), fingerprint (\S+)`)

func startRegistry(t *testing.T, listen, dir string) (addr string, fp wire.Fingerprint, p *proc) {
	t.Helper()
	p = start(t, "registry", "--no-mdns", "--listen", listen, "--lease", lease.String(), "--state-dir", dir)
	m := p.line(t, listening)
	fp, err := wire.ParseFingerprint(strings.TrimSuffix(m[2], ","))
	if err != nil {
		t.Fatal(err)
	}
	return m[1], fp, p
}

func startGroups(t *testing.T, registry, dir string) *proc {
	t.Helper()
	p := start(t, "serve", "--no-mdns", "--registry", registry, "--listen", "127.0.0.1:0",
		"--group", "alpha", "--group", "beta", "--state-dir", dir)
	p.line(t, listening)
	return p
}

// user is a Go client with its own key and known-registries file.
type user struct {
	t  *testing.T
	cl *client.Client
}

func newUser(t *testing.T) *user {
	t.Helper()
	return userWith(t, filepath.Join(t.TempDir(), "known_registries"))
}

// userWith returns a user whose known-registries file is knownHosts: a
// later run of the same person's client.
func userWith(t *testing.T, knownHosts string) *user {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(knownHosts)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return &user{t: t, cl: cl}
}

// listed returns the registry's listing by group name, or nil if the
// registry cannot be reached.
func (u *user) listed(addr string) map[string]wire.GroupEntry {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg, err := u.cl.Registry(ctx, addr, wire.Fingerprint{}) // pinned on first use
	if err != nil {
		u.t.Logf("registry: %v", err)
		return nil
	}
	l, err := reg.List(ctx)
	if err != nil {
		return nil
	}
	m := make(map[string]wire.GroupEntry)
	for _, e := range l.Groups {
		m[e.Name] = e
	}
	return m
}

// killsFromEnv is how many times a crash test kills its daemon: def, or
// the count in the environment variable env for a longer run (make
// crashloop).
func killsFromEnv(t *testing.T, env string, def int) int {
	if v := os.Getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", env, v)
		}
		return n
	}
	return def
}

// groupOfNewUser is entry's group as a new user (a new identity and
// client, closed with the test) sees it, sending in batches or not.
func groupOfNewUser(t *testing.T, entry wire.GroupEntry, batching bool) (*client.Group, wire.Fingerprint) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: id, NoBatching: !batching,
		KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known_registries"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	return g, id.Fingerprint()
}

// eventually polls cond until it holds, and returns how long that took. It
// fails t at waitTimeout, or at once if a process of the test ended unseen.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(waitTimeout)
	ends := endsOf(t)
	for !cond() {
		if err := ends.Err(); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select { // polling cond, with a deadline
		case <-time.After(20 * time.Millisecond):
		case <-ends.Any():
		}
	}
	return time.Since(start)
}

// TestGroupDaemonKilled kills a group daemon with SIGKILL: its groups leave
// the registry's listing when their leases lapse, with no deregistration.
// Restarted with its state directory, it lists the same groups under the
// same UUIDs and key, and its members are still members.
func TestGroupDaemonKilled(t *testing.T) {
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
	if _, err := g.Join(ctx, "stays", nil); err != nil {
		t.Fatal(err)
	}

	groups.kill(syscall.SIGKILL)
	gone := eventually(t, "the killed daemon's groups to lapse", func() bool { return len(u.listed(regAddr)) == 0 })
	t.Logf("listing empty %v after SIGKILL (lease %v)", gone.Round(time.Millisecond), lease)

	startGroups(t, regAddr, dir)
	var after map[string]wire.GroupEntry
	eventually(t, "the groups listed again", func() bool { after = u.listed(regAddr); return len(after) == 2 })
	for name, e := range before {
		if after[name].Group != e.Group || after[name].Fingerprint != e.Fingerprint {
			t.Fatalf("group %s came back as %+v, was %+v", name, after[name], e)
		}
	}
	g, err = u.cl.Group(after["alpha"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Send(ctx, []byte("still a member")); err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
}

// TestRegistryKilled kills the registry with SIGKILL and starts it again on
// the same address with its state directory: within a renewal period the
// group daemon has registered again, and a user who pinned the registry on
// first use lists the groups as before, with no warning about its key.
func TestRegistryKilled(t *testing.T) {
	regDir := t.TempDir()
	regAddr, fp, reg := startRegistry(t, "127.0.0.1:0", regDir)
	groups := startGroups(t, regAddr, t.TempDir())
	defer groups.kill(syscall.SIGTERM)
	u := newUser(t)
	var before map[string]wire.GroupEntry
	eventually(t, "both groups listed", func() bool { before = u.listed(regAddr); return len(before) == 2 })

	reg.kill(syscall.SIGKILL)
	_, fp2, reg2 := startRegistry(t, regAddr, regDir)
	defer reg2.kill(syscall.SIGTERM)
	if fp2 != fp {
		t.Fatalf("the restarted registry has key %s, was %s", fp2, fp)
	}
	back := eventually(t, "the groups listed again", func() bool {
		after := u.listed(regAddr)
		return len(after) == 2 && after["alpha"].Group == before["alpha"].Group && after["beta"].Group == before["beta"].Group
	})
	t.Logf("groups listed again %v after the registry restarted (lease %v, renewal every %v)", back.Round(time.Millisecond), lease, lease/3)
}

// TestRegistryImpostor replaces the registry with one of another key on
// the same address (an attacker on the LAN, or a reinstall): a user who
// pinned the first one is stopped with an ssh-style explanation, and its
// pin is left as it was.
func TestRegistryImpostor(t *testing.T) {
	regAddr, fp, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	knownHosts := filepath.Join(t.TempDir(), "known_registries")
	if userWith(t, knownHosts).listed(regAddr) == nil {
		t.Fatal("the registry cannot be listed")
	}
	reg.kill(syscall.SIGKILL)
	_, impostor, reg2 := startRegistry(t, regAddr, t.TempDir()) // a new key
	defer reg2.kill(syscall.SIGTERM)
	if impostor == fp {
		t.Fatal("the impostor has the registry's key")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := userWith(t, knownHosts).cl.Registry(ctx, regAddr, wire.Fingerprint{}) // the user's next command
	var ce *identity.ChangedError
	if !errors.As(err, &ce) || ce.Pinned != fp || ce.Presented != impostor {
		t.Fatalf("dialling the impostor: %v, want a ChangedError naming both keys", err)
	}
	for _, want := range []string{"impersonating", "huddle forget-registry " + regAddr} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("the explanation %q does not say %q", err, want)
		}
	}
}

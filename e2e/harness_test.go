//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testbin"
	"github.com/huddle-chat/huddle/internal/testport"
)

// Deadlines. They bound how long a broken build may hang a test; none is an
// assertion about speed.
const (
	waitTimeout = 30 * time.Second // for a condition polled for
	runTimeout  = 60 * time.Second // for one client verb to finish
	stopTimeout = 30 * time.Second // for a daemon to exit after SIGTERM
)

// childEnv is the environment of every process a test starts: this one's,
// without anything huddle reads (HUDDLE_*, XDG_*, HOME) so no developer
// setting leaks in, with HOME and the XDG directories inside dir and local
// time in UTC.
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "HUDDLE_") || strings.HasPrefix(k, "XDG_") || k == "HOME" || k == "TZ" || k == "TMUX" || k == "GORACE" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+dir, "TZ=UTC",
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	if raceEnabled {
		// The race runtime waits a second before a process exits, in case
		// another goroutine is about to report; a test runs hundreds of
		// short client verbs, and reports come while they run anyway.
		env = append(env, strings.TrimSpace("GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE")))
	}
	return env
}

// stream collects what a process writes to one of its outputs, line by line,
// and lets a test wait for lines to appear.
type stream struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when a line arrives or the stream ends
	ended   bool
	t       testing.TB // the test that started the process; nil: none
}

func newStream(t testing.TB) *stream { return &stream{changed: make(chan struct{}), t: t} }

// unseenEnds holds, by test name, where the processes each running test
// started note an end the test did not cause (endsOf), for the test's
// waits to end on at once: a daemon that died read as a wait for what it
// would have done timing out 30 s later, after its report.
var unseenEnds sync.Map // t.Name() -> *testbin.Ends

// endsOf returns where the unseen ends of t's processes are noted.
func endsOf(t testing.TB) *testbin.Ends {
	e, loaded := unseenEnds.LoadOrStore(t.Name(), testbin.NewEnds())
	if !loaded {
		t.Cleanup(func() { unseenEnds.Delete(t.Name()) })
	}
	return e.(*testbin.Ends)
}

// endedUnseen returns an error naming each process of t, or of a test t
// runs in (a subtest waits on its parent's daemons), that ended without
// the test ending it; nil while none did.
func endedUnseen(t testing.TB) error {
	for name := t.Name(); ; {
		if e, ok := unseenEnds.Load(name); ok {
			if err := e.(*testbin.Ends).Err(); err != nil {
				return err
			}
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return nil
		}
		name = name[:i]
	}
}

// copy reads r to its end; the process owner runs it on its own goroutine.
func (s *stream) copy(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			s.mu.Lock()
			s.lines = append(s.lines, strings.TrimSuffix(line, "\n"))
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	s.ended = true
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Lines returns a copy of the lines so far.
func (s *stream) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

func (s *stream) String() string { return strings.Join(s.Lines(), "\n") }

// waitFor waits until ok holds for the lines so far, and reports whether it
// did before the deadline, before the stream ended, and before a process
// of the test that started this one (or of a test that one runs in) ended
// without the test ending it: startProc reported that already, naming
// it, and the caller's failure follows it at once, not at the deadline.
func (s *stream) waitFor(timeout time.Duration, ok func(lines []string) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	look := time.NewTicker(50 * time.Millisecond) // for an unseen end
	defer look.Stop()
	for {
		s.mu.Lock()
		lines, ended, changed := s.lines, s.ended, s.changed
		s.mu.Unlock()
		if ok(lines) {
			return true
		}
		if ended || s.t != nil && endedUnseen(s.t) != nil {
			return false
		}
		select {
		case <-changed:
		case <-look.C:
		case <-deadline.C:
			return false
		}
	}
}

// proc is a process running in the background: a daemon, or a client verb
// that runs until stopped (watch, chat).
type proc struct {
	name   string
	args   []string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // nil unless asked for
	stdout *stream
	stderr *stream
	fate   testbin.Fate  // what the test did to it, how it ended
	done   chan struct{} // closed once the process was waited for
	code   int           // exit code, once done (-1: killed by a signal)
}

// procEnd says how a test expects a process it starts to end.
type procEnd int

const (
	// endsItself: a client verb that ends by itself (chat at the end of
	// its input, huddle groups, a send), or a daemon the test expects to
	// exit: its end is the test's to check (wait).
	endsItself procEnd = iota
	// untilStopped: a daemon (or huddle web) that runs until the test
	// ends it (stop, the cleanup's kill). An end without that (a crash,
	// the OOM killer, a signal from elsewhere) fails the test at once,
	// naming the process and how it ended, rather than as a wait for
	// something it would have done timing out later, or not at all: a
	// member of a cell dying unseen reads as a liveness defect.
	untilStopped
)

// startProc starts the huddle binary with args and env. t.Cleanup kills it
// if it is still running when the test ends, and logs its output if the
// test failed. end says whether its end is the test's to check or must
// be the test's doing (untilStopped).
func startProc(t testing.TB, name string, env []string, withStdin bool, end procEnd, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(huddleBin, args...)
	cmd.Env = env
	ends := endsOf(t)
	p := &proc{name: name, args: args, cmd: cmd, stdout: newStream(t), stderr: newStream(t), done: make(chan struct{})}
	if end == endsItself {
		p.fate.Expect()
	}
	var err error
	if withStdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing outlives this test binary, whatever happens to it.
	if err := testbin.Start(cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); p.stdout.copy(stdout) }()
	go func() { defer copies.Done(); p.stderr.copy(stderr) }()
	go func() {
		copies.Wait() // Wait closes the pipes, so read them to the end first
		err := cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if err != nil && p.code == 0 {
			p.code = -1
		}
		// Reported before done closes: the cleanup waits for done, so
		// the report comes before the test ends.
		if p.fate.Ended(cmd.ProcessState) {
			what := p.fate.Unseen(name, cmd, args)
			ends.Note(what)
			t.Errorf("%s (huddle %s)\n--- its last stderr:\n%s", what, strings.Join(args, " "), tail(p.stderr.Lines(), 20))
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		dump := ""
		select {
		case <-p.done:
		default:
			if t.Failed() {
				dump = p.dumpGoroutines(t)
			}
			p.fate.Sent(os.Kill, true)
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (huddle %s; %s)\n--- stdout:\n%s\n--- stderr:\n%s%s", name, strings.Join(args, " "), &p.fate, p.stdout, tail(p.stderr.Lines(), 60), dump)
		}
	})
	return p
}

// dumpGoroutines asks a process still running when its test failed for
// its goroutines' stacks (SIGQUIT: the Go runtime writes them to stderr
// and exits) and saves its whole stderr to a file that outlives the test,
// whose name it returns as a line for the test's log: a daemon that
// stopped answering (a deadlock, a lock held across a blocking call)
// shows where it waits.
func (p *proc) dumpGoroutines(t testing.TB) string {
	p.fate.Sent(syscall.SIGQUIT, true)
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return ""
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	f, err := os.CreateTemp("", "huddle-e2e-"+strings.NewReplacer("/", "-", " ", "-", ":", "-").Replace(t.Name()+"-"+p.name)+"-*.stderr")
	if err != nil {
		return fmt.Sprintf("\n--- goroutines: not saved: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(p.stderr.Lines(), "\n")); err != nil {
		return fmt.Sprintf("\n--- goroutines: not saved: %v", err)
	}
	return "\n--- its whole stderr, with its goroutines' stacks (SIGQUIT as the test failed): " + f.Name()
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit, failing t if it does
// not within stopTimeout (it is killed then), and returns the exit code.
func (p *proc) stop(t testing.TB, sig os.Signal) int {
	t.Helper()
	if p.running() {
		p.fate.Sent(sig, true)
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("signal %s: %v", p.name, err)
		}
	}
	return p.wait(t)
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *proc) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.fate.Sent(os.Kill, true)
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %v; killed it", p.name, stopTimeout)
	}
	return p.code
}

// noRaces fails t if the process reported a data race (its binary is built
// with -race when the tests are).
func (p *proc) noRaces(t testing.TB) {
	t.Helper()
	if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race", p.name)
	}
}

// daemon is a running huddle up, registry or serve, with what it printed
// when it started listening.
type daemon struct {
	*proc
	args     []string
	stateDir string
	registry string            // up, registry: the registry's address
	regFP    string            // up, registry: the registry's fingerprint
	addr     string            // up, serve: the group daemon's address
	fp       string            // up, serve: the group daemon's fingerprint
	groups   map[string]string // up, serve: group name -> UUID
}

var (
	registryLine = regexp.MustCompile(`^huddle registry listening on (\S+), fingerprint (\S+)$`)
	daemonLine   = regexp.MustCompile(`^huddle group daemon listening on (\S+), fingerprint (\S+)$`)
	groupLine    = regexp.MustCompile(`^  group (\S+)  ([0-9a-f-]{36})(  \(private\))?$`)
)

// aliceInLobby starts `huddle up` on 127.0.0.1 with a state of its own
// (stopped when the test ends), and a user alice who has joined its lobby.
func aliceInLobby(t *testing.T) *user {
	t.Helper()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	t.Cleanup(func() { up.stop(t) })
	return aliceInLobbyOf(t, up)
}

// aliceInLobbyOf makes a user of up's registry, alice, once up's lobby is
// listed, and joins her to it.
func aliceInLobbyOf(t *testing.T, up *daemon) *user {
	t.Helper()
	alice := newUser(t, "alice", up.registry)
	waitListed(t, alice, up.groups["lobby"])
	alice.join(t, "lobby")
	return alice
}

// aliceAndBobInLobby makes two users of up's registry, alice and bob,
// once up's lobby is listed, and joins both to it, alice first.
func aliceAndBobInLobby(t *testing.T, up *daemon) (alice, bob *user) {
	t.Helper()
	alice, bob = aliceInLobbyOf(t, up), newUser(t, "bob", up.registry)
	bob.join(t, "lobby")
	return alice, bob
}

// startDaemon runs `huddle VERB ARGS... --no-mdns` (VERB: up, registry or
// serve) and waits until it printed where it listens and, for up and serve,
// every group it hosts. The daemon must listen on 127.0.0.1 (args must say
// --listen 127.0.0.1:PORT), and serve must be given --registry.
func startDaemon(t testing.TB, verb string, args ...string) *daemon {
	t.Helper()
	i := slices.Index(args, "--listen")
	if i < 0 || i+1 >= len(args) || !strings.HasPrefix(args[i+1], "127.0.0.1:") {
		t.Fatalf("startDaemon %s %v: give --listen 127.0.0.1:PORT", verb, args)
	}
	var groups []string
	for i, a := range args {
		if a == "--group" && i+1 < len(args) {
			groups = append(groups, args[i+1])
		}
	}
	if verb == "up" && len(groups) == 0 {
		groups = []string{"lobby"}
	}
	if verb == "registry" {
		groups = nil
	}
	if verb == "serve" && !slices.Contains(args, "--registry") {
		t.Fatalf("startDaemon serve %v: give --registry (without it, serve browses mDNS)", args)
	}
	args = reservePorts(t, verb, args)
	d := &daemon{args: args, groups: make(map[string]string)}
	if j := slices.Index(args, "--state-dir"); j >= 0 && j+1 < len(args) {
		d.stateDir = args[j+1]
	}
	// --no-mdns: a daemon of a test neither advertises nor browses, even
	// when the tests run outside a network namespace of their own.
	args = append(slices.Clone(args), "--no-mdns")
	d.proc = startProc(t, "huddle "+verb, childEnv(t.TempDir()), false, untilStopped, append([]string{verb}, args...)...)

	// Under --log-format json the start lines are log records on stderr.
	jsonLogs := slices.Contains(args, "json") && slices.Contains(args, "--log-format")
	out := d.stdout
	if jsonLogs {
		out = d.stderr
	}
	ready := func(lines []string) bool {
		if jsonLogs {
			lines = bannerLines(lines)
		}
		for _, l := range lines {
			if m := registryLine.FindStringSubmatch(l); m != nil {
				d.registry, d.regFP = m[1], m[2]
			}
			if m := daemonLine.FindStringSubmatch(l); m != nil {
				d.addr, d.fp = m[1], m[2]
			}
			if m := groupLine.FindStringSubmatch(l); m != nil {
				d.groups[m[1]] = m[2]
			}
		}
		haveReg := verb == "serve" || d.registry != ""
		haveDaemon := verb == "registry" || d.addr != ""
		return haveReg && haveDaemon && len(d.groups) == len(groups)
	}
	if !out.waitFor(waitTimeout, ready) {
		// Its output ends before it is waited for: give its exit a moment
		// to be seen, so that the code printed is the one it exited with.
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("huddle %s %s: did not report listening (exit code %d if it ended)\nstdout:\n%s\nstderr:\n%s",
			verb, strings.Join(args, " "), d.exitCode(), d.stdout, d.stderr)
	}
	return d
}

// reservePorts gives each port a daemon is to take at random (--listen or
// --daemon-listen 127.0.0.1:0) a reserved one (testport.Cell): below the
// kernel's ephemeral range, where no socket bound to port 0 lands, and
// never another test process's. A test that stops a daemon and starts it
// again at its address (a restart in place, a registry whose key changed)
// met whatever took the port meanwhile: a kernel-chosen port is free for
// any other process's next socket (a client's, another test's daemon) the
// moment the daemon dies, and the restarted one failed to bind, or the
// test's clients talked to another process's daemon. up without
// --daemon-listen would put its group daemon on the registry's port + 1,
// which is not reserved: it gets a reserved port of its own.
func reservePorts(t testing.TB, verb string, args []string) []string {
	t.Helper()
	args = slices.Clone(args)
	reserved := false
	for i := 0; i+1 < len(args); i++ {
		if (args[i] == "--listen" || args[i] == "--daemon-listen") && args[i+1] == "127.0.0.1:0" {
			args[i+1], reserved = testport.Cell(t), true
		}
	}
	if verb == "up" && reserved && !slices.Contains(args, "--daemon-listen") {
		args = append(args, "--daemon-listen", testport.Cell(t))
	}
	return args
}

// bannerLines turns the start records of a daemon logging JSON back into
// the lines it prints as text.
func bannerLines(records []string) []string {
	var lines []string
	for _, r := range records {
		var rec struct {
			Msg, Addr, Fingerprint, Group, UUID string
			Private                             bool
		}
		if json.Unmarshal([]byte(r), &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "registry listening":
			lines = append(lines, fmt.Sprintf("huddle registry listening on %s, fingerprint %s", rec.Addr, rec.Fingerprint))
		case "group daemon listening":
			lines = append(lines, fmt.Sprintf("huddle group daemon listening on %s, fingerprint %s", rec.Addr, rec.Fingerprint))
		case "hosting group":
			private := ""
			if rec.Private {
				private = "  (private)"
			}
			lines = append(lines, fmt.Sprintf("  group %s  %s%s", rec.Group, rec.UUID, private))
		}
	}
	return lines
}

func (d *daemon) exitCode() int {
	if d.running() {
		return 0
	}
	return d.code
}

// stop shuts the daemon down with SIGTERM and checks that it exited 0, as a
// graceful shutdown should.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	if code := d.proc.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("%s exited with code %d after SIGTERM, want 0\nstderr:\n%s", d.name, code, tail(d.stderr.Lines(), 40))
	}
	d.noRaces(t)
}

// user is one person: a HUDDLE_HOME of their own (their key and pinned
// registries) and the registry their client verbs use.
type user struct {
	name     string
	home     string
	dir      string // HOME and the XDG directories
	registry string
	login    string // $USER for its processes, if set (else this process's)
}

// newUser makes a user whose verbs go to registry. registry must not be
// empty: a client verb without one would browse mDNS.
func newUser(t testing.TB, name, registry string) *user {
	t.Helper()
	dir := t.TempDir()
	return &user{name: name, home: filepath.Join(dir, "huddle-home"), dir: dir, registry: registry}
}

// env is the environment of the user's client verbs. HUDDLE_REGISTRY is
// always set.
func (u *user) env(t testing.TB) []string {
	t.Helper()
	if u.registry == "" {
		t.Fatalf("user %s has no registry; refusing to run a client verb that would browse mDNS", u.name)
	}
	env := append(childEnv(u.dir), "HUDDLE_HOME="+u.home, "HUDDLE_REGISTRY="+u.registry)
	if u.login != "" {
		env = append(env, "USER="+u.login) // the last of a name counts (os/exec)
	}
	return env
}

// result is what a finished client verb left.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("huddle %s: exit code %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs a client verb to its end with nothing on standard input.
func (u *user) run(t testing.TB, args ...string) result {
	t.Helper()
	return u.runInput(t, "", args...)
}

// runInput runs a client verb to its end with input on standard input.
func (u *user) runInput(t testing.TB, input string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, huddleBin, args...)
	cmd.Env = u.env(t)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := testbin.Run(cmd)
	if testing.Verbose() {
		// Which verbs a slow run spent its time on.
		t.Logf("%v: huddle %s", time.Since(start).Round(time.Millisecond), strings.Join(args, " "))
	}
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("huddle %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), runTimeout, r.stdout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run huddle %s: %v", strings.Join(args, " "), err)
	}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("data race in %s", r)
	}
	return r
}

// ok runs a client verb that must succeed and returns its standard output.
func (u *user) ok(t testing.TB, args ...string) string {
	t.Helper()
	r := u.run(t, args...)
	if r.code != 0 {
		t.Fatalf("as %s: %s", u.name, r)
	}
	return r.stdout
}

// okInput is ok with input on standard input.
func (u *user) okInput(t testing.TB, input string, args ...string) string {
	t.Helper()
	r := u.runInput(t, input, args...)
	if r.code != 0 {
		t.Fatalf("as %s: %s", u.name, r)
	}
	return r.stdout
}

// start runs a client verb in the background (watch, chat), with a pipe to
// its standard input.
func (u *user) start(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProc(t, u.name+": huddle "+strings.Join(args, " "), u.env(t), true, endsItself, args...)
}

// join makes the user a member of group under their name.
func (u *user) join(t testing.TB, group string) {
	t.Helper()
	u.ok(t, "join", group, "--as", u.name)
}

// fingerprint returns the user's fingerprint (huddle id).
func (u *user) fingerprint(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(u.ok(t, "id"))
}

// groupJSON is a group as `huddle groups --json` prints it.
type groupJSON struct {
	UUID        string   `json:"uuid"`
	Name        string   `json:"name"`
	Addrs       []string `json:"addrs"`
	Fingerprint string   `json:"fingerprint"`
	Members     uint64   `json:"members"`
	LastSeq     uint64   `json:"last_seq"`
	ListedBy    []string `json:"listed_by"`
}

var groupKeys = []string{"uuid", "name", "addrs", "fingerprint", "members", "last_seq", "listed_by"}

// waitListed polls the registry (as u) until it lists every UUID in uuids,
// and returns the listing then. Group daemons register a moment after they
// print that they listen.
func waitListed(t testing.TB, u *user, uuids ...string) []groupJSON {
	t.Helper()
	var groups []groupJSON
	var last result
	listed := eventually(t, waitTimeout, func() bool {
		last = u.run(t, "groups", "--json")
		if last.code != 0 {
			return false
		}
		groups = jsonLines[groupJSON](t, last.stdout, groupKeys...)
		for _, id := range uuids {
			if !slices.ContainsFunc(groups, func(g groupJSON) bool { return g.UUID == id }) {
				return false
			}
		}
		return true
	})
	if !listed {
		t.Fatalf("the registry did not list %v within %v; last: %s", uuids, waitTimeout, last)
	}
	return groups
}

// eventually polls cond until it holds or timeout passes, and reports
// whether it held. It fails t at once if a process of t's (or of a test t
// runs in) ended without the test ending it, naming it, rather than
// polling on for what the process would have done until the timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if err := endedUnseen(t); err != nil {
			t.Fatalf("stopped waiting: %v", err)
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsonLines decodes out as one JSON object per line into Ts. Each object
// must have exactly the keys given (when any are), no more and no fewer.
func jsonLines[T any](t testing.TB, out string, keys ...string) []T {
	t.Helper()
	var vs []T
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		if len(keys) > 0 {
			checkKeys(t, line, keys...)
		}
		var v T
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decode %q: %v", line, err)
		}
		if dec.More() {
			t.Fatalf("line %q holds more than one JSON value", line)
		}
		vs = append(vs, v)
	}
	return vs
}

// checkKeys fails t unless the JSON object line has exactly keys.
func checkKeys(t testing.TB, line string, keys ...string) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	got := make([]string, 0, len(obj))
	for k := range obj {
		got = append(got, k)
	}
	want := slices.Clone(keys)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("JSON object %s has keys %v, want %v", line, got, want)
	}
}

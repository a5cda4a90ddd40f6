package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/identity"
)

// waitTimeout bounds how long a test waits for a daemon to do something; it
// is a guard against a hang, not an assertion about speed.
const waitTimeout = 30 * time.Second

// syncBuffer is a bytes.Buffer a daemon's goroutines may write while a
// test reads it.
type syncBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	more chan struct{} // closed by the next Write; nil until asked for
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.more != nil {
		close(s.more)
		s.more = nil
	}
	return s.b.Write(p)
}

// written returns a channel closed by the next Write: asked for before
// reading the buffer, it tells of anything written after that reading.
func (s *syncBuffer) written() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.more == nil {
		s.more = make(chan struct{})
	}
	return s.more
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonVerb is a daemon verb running in this process.
type daemonVerb struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	code           chan int
}

// startVerb runs `huddle ARGS...` in this process until stop or the test's
// end. The verb makes its logger the process default: the test's cleanup
// restores the one before.
func startVerb(t *testing.T, getenv func(string) string, args ...string) *daemonVerb {
	t.Helper()
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	prev := slog.Default()
	ctx, cancel := context.WithCancel(context.Background())
	v := &daemonVerb{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, code: make(chan int, 1)}
	env := Env{Stdin: strings.NewReader(""), Stdout: v.stdout, Stderr: v.stderr, Getenv: getenv}
	go func() { v.code <- Main(ctx, args, env) }()
	t.Cleanup(func() {
		v.stop(t)
		slog.SetDefault(prev)
	})
	return v
}

// stop ends the verb as SIGTERM would and returns its exit code.
func (v *daemonVerb) stop(t *testing.T) int {
	t.Helper()
	v.cancel()
	select {
	case code := <-v.code:
		v.code <- code // for the next call
		return code
	case <-time.After(waitTimeout):
		t.Fatalf("the daemon did not stop within %v\nstderr:\n%s", waitTimeout, v.stderr)
		return 0
	}
}

// waitLine waits for a line of the verb's stdout that re matches, and
// returns re's first group in it. It looks again at each write, not every
// few milliseconds; and a verb that prints its line and returns at once
// has its output looked through once more after it returned (it polled
// before, and took the return for 'exited before printing' when the two
// came together).
func (v *daemonVerb) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	exited, code := false, 0
	for {
		written := v.stdout.written()
		if m := re.FindStringSubmatch(v.stdout.String()); m != nil {
			return m[1]
		}
		if exited {
			t.Fatalf("the daemon exited (code %d) before printing %v\nstdout:\n%s\nstderr:\n%s", code, re, v.stdout, v.stderr)
		}
		select {
		case <-written:
		case code = <-v.code:
			v.code <- code // for the next call
			exited = true  // all it printed is in stdout now
		case <-deadline.C:
			t.Fatalf("the daemon printed nothing matching %v within %v\nstdout:\n%s\nstderr:\n%s", re, waitTimeout, v.stdout, v.stderr)
		}
	}
}

// awaitLines waits until cond holds, asking again each time out (a
// daemon's log) has more lines that re matches (what the daemon says it
// did), and at least every awaitAgain, at most waitTimeout; what names
// what is waited for. (Asked only at the lines, a cond that failed for a
// moment, a probe's ask timed out on a loaded machine, waited for a
// line that did not come: TestForgetRegistryForgetsItsCachedPin, at
// load 60, asked once as huddle up registered lobby, and never again.)
func awaitLines(t *testing.T, what string, out *syncBuffer, re *regexp.Regexp, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	again := time.NewTicker(awaitAgain)
	defer again.Stop()
	for seen := -1; ; {
		written := out.written()
		if n := len(re.FindAllStringIndex(out.String(), -1)); n != seen {
			if seen = n; cond() {
				return
			}
		}
		select {
		case <-written:
		case <-again.C:
			if cond() {
				return
			}
		case <-deadline.C:
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
	}
}

// awaitAgain is how often awaitLines asks its condition again when no
// line has come.
const awaitAgain = time.Second

var (
	pprofLine   = regexp.MustCompile(`(?m)^  pprof: http://(\S+)/debug/pprof/$`)
	metricsLine = regexp.MustCompile(`(?m)^  metrics: http://(\S+)/metrics`)
)

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

func TestPprofServesAndStops(t *testing.T) {
	for _, verb := range []string{"registry", "up"} {
		t.Run(verb, func(t *testing.T) {
			defer http.DefaultClient.CloseIdleConnections()
			v := startVerb(t, nil, verb, "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
				"--log-level", "warn", "--pprof", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
			addr := v.waitLine(t, pprofLine)
			maddr := v.waitLine(t, metricsLine)

			for _, c := range []struct {
				url      string
				status   int
				contains string
			}{
				{"http://" + addr + "/debug/pprof/", http.StatusOK, "goroutine"},
				{"http://" + addr + "/debug/pprof/heap", http.StatusOK, "\x1f\x8b"}, // gzipped protobuf
				{"http://" + addr + "/debug/pprof/goroutine?debug=1", http.StatusOK, "servePprof"},
				// Neither listener serves the other's handlers.
				{"http://" + addr + "/metrics", http.StatusNotFound, ""},
				{"http://" + maddr + "/debug/pprof/", http.StatusNotFound, ""},
			} {
				status, body := get(t, c.url)
				if status != c.status || !bytes.Contains(body, []byte(c.contains)) {
					t.Errorf("GET %s: %d, %.80q; want %d with %q", c.url, status, body, c.status, c.contains)
				}
			}

			// A CPU profile being taken when the daemon stops ends with it,
			// and is sent as far as it got.
			type result struct {
				status int
				body   []byte
				err    error
			}
			profiled := make(chan result, 1)
			go func() {
				resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=600")
				if err != nil {
					profiled <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				profiled <- result{resp.StatusCode, b, err}
			}()
			waitProfiling(t, addr)
			if code := v.stop(t); code != ExitOK {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", code, ExitOK, v.stderr)
			}
			select {
			case r := <-profiled:
				if r.err != nil || r.status != http.StatusOK || !bytes.HasPrefix(r.body, []byte("\x1f\x8b")) {
					t.Errorf("the profile in flight: %d, %v, %d bytes; want 200 and a gzipped profile", r.status, r.err, len(r.body))
				}
			case <-time.After(waitTimeout):
				t.Fatal("the profile in flight did not end with the daemon")
			}
			if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				t.Error("the pprof listener still accepts connections after the daemon stopped")
			}
		})
	}
}

// waitProfiling waits until the daemon at addr is taking a CPU profile: one
// of its goroutines is in net/http/pprof's Profile handler.
func waitProfiling(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		_, body := get(t, "http://"+addr+"/debug/pprof/goroutine?debug=1")
		if bytes.Contains(body, []byte("net/http/pprof.Profile")) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the daemon at %s started no CPU profile within %v", addr, waitTimeout)
}

func TestPprofRefusesBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		code int // 0: any failure
		want string
	}{
		{"no port", []string{"--pprof", "127.0.0.1"}, nil, ExitUsage, `invalid argument "127.0.0.1" for "--pprof" flag: want HOST:PORT`},
		{"bad port", []string{"--pprof", "127.0.0.1:http-ish"}, nil, ExitUsage, `for "--pprof" flag: want HOST:PORT`},
		{"from the environment", nil, map[string]string{"HUDDLE_PPROF": "localhost"}, ExitUsage, `HUDDLE_PPROF="localhost"`},
		{"in use", []string{"--pprof", busy.Addr().String()}, nil, 0, "pprof listener: listen tcp " + busy.Addr().String()},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir()}, c.args...)
			v := startVerb(t, func(k string) string { return c.env[k] }, args...)
			select {
			case code := <-v.code:
				v.code <- code
				if code == ExitOK || (c.code != 0 && code != c.code) || !strings.Contains(v.stderr.String(), c.want) {
					t.Errorf("exit code %d, stderr %q; want %d and %q", code, v.stderr, c.code, c.want)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("the registry ran with a bad --pprof\nstdout:\n%s", v.stdout)
			}
		})
	}
}

// TestWaitLineAtExit: a verb that prints its line and returns at once is
// found to have printed it. waitLine polled stdout, and when the verb's
// return was there before the next look it said the verb exited before
// printing; asked many times over, so that the two come together in some.
func TestWaitLineAtExit(t *testing.T) {
	printed := regexp.MustCompile(`(?m)^huddle (\S+)`)
	for range 200 {
		v := startVerb(t, nil, "version")
		v.waitLine(t, printed)
	}
}

// TestServeCellConfigIsUsage: a --cell-peer list that does not name this
// daemon's key is a mistake in the settings, found once the key is
// loaded. It ended with exit code 1, which systemd's unit restarts every
// 2 s for ever (RestartPreventExitStatus=2 is for settings); it is a
// usage error, exit 2, as the other --cell-peer mistakes are. A daemon
// whose state directory holds no key yet cannot be among them: it refuses
// before creating one (it created the directory and a key, whose
// fingerprint nobody had listed, then refused).
func TestServeCellConfigIsUsage(t *testing.T) {
	var peers []string
	for range 3 {
		id, addr := cellHost(t, t.TempDir())
		peers = append(peers, "--cell-peer", id.Fingerprint().String()+"@"+addr)
	}
	keyed := t.TempDir()
	if _, err := identity.LoadOrCreate(keyed); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		name, dir string
		want      []string
	}{
		{"a key not listed", keyed, []string{"is not among the cell's peers"}},
		{"no key yet", fresh, []string{"is not among the cell's peers", "huddle id"}},
	} {
		args := append([]string{"serve", "--no-mdns", "--registry", "127.0.0.1:1", "--group", "lobby", "--listen", "127.0.0.1:0", "--state-dir", tc.dir}, peers...)
		v := startVerb(t, nil, args...)
		select {
		case code := <-v.code:
			v.code <- code
			if code != ExitUsage || !containsAll(v.stderr.String(), tc.want) {
				t.Errorf("%s: serve with a --cell-peer list without its own key: exit code %d, stderr %q; want %d, saying %q", tc.name, code, v.stderr, ExitUsage, tc.want)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%s: serve ran with a --cell-peer list without its own key\nstdout:\n%s", tc.name, v.stdout)
		}
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the fresh state directory after serve refused: %v, want none created", err)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestServeCellFailedStartLeavesNothing: a member of a cell whose start
// fails after it listens (here its --metrics port is taken) returns with
// nothing of its own left running. The goroutine that waits to print the
// cell's groups outlived it until the caller's context ended, which for
// huddle's main is the process's end, and for a program embedding the CLI
// never.
func TestServeCellFailedStartLeavesNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	self, addr := cellHost(t, dir)
	peers := []string{"--cell-peer", self.Fingerprint().String() + "@" + addr}
	for range 2 {
		id, addr := cellHost(t, t.TempDir())
		peers = append(peers, "--cell-peer", id.Fingerprint().String()+"@"+addr)
	}
	args := append([]string{"serve", "--no-mdns", "--registry", "127.0.0.1:1", "--group", "lobby", "--listen", addr,
		"--state-dir", dir, "--metrics", busy.Addr().String()}, peers...)
	code, stdout, stderr := runMain(t, nil, args...)
	if code == ExitOK || !strings.Contains(stdout, "group daemon listening") || !strings.Contains(stderr, busy.Addr().String()) {
		t.Fatalf("serve with its --metrics port taken: exit %d, stdout %q, stderr %q; want a failure after listening, naming the port", code, stdout, stderr)
	}
	goleak.VerifyNone(t, before)
}

// TestMetricsOfEachDaemon: each daemon's /metrics serves the figures of
// what runs in its process, and none of another's at a constant 0: a group
// daemon served huddle_registry_registrations_total and
// huddle_registry_lease_expiries_total at 0 for ever, and a registry
// huddle_watchers and huddle_discovery_answers_total, which an operator
// reads as "nothing registered", "no watches", not as "not here".
func TestMetricsOfEachDaemon(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	registryOnly := []string{"huddle_registry_leases", "huddle_registry_registrations_total", "huddle_registry_lease_expiries_total"}
	groupsOnly := []string{"huddle_groups", "huddle_watchers", "huddle_discovery_answers_total", "huddle_messages_appended_total"}
	for _, tc := range []struct {
		args          []string
		serves, never []string
	}{
		{[]string{"registry"}, registryOnly, groupsOnly},
		{[]string{"serve", "--registry", "127.0.0.1:1", "--group", "lobby"}, groupsOnly, registryOnly},
		{[]string{"up"}, append(append([]string(nil), registryOnly...), groupsOnly...), nil},
	} {
		args := append(tc.args, "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "warn", "--metrics", "127.0.0.1:0")
		v := startVerb(t, nil, args...)
		status, body := get(t, "http://"+v.waitLine(t, metricsLine)+"/metrics")
		if status != http.StatusOK {
			t.Fatalf("%s: /metrics: %d", tc.args[0], status)
		}
		served := map[string]bool{}
		for _, line := range strings.Split(string(body), "\n") {
			if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
				served[strings.Fields(name)[0]] = true
			}
		}
		for _, name := range tc.serves {
			if !served[name] {
				t.Errorf("%s's /metrics lacks %s", tc.args[0], name)
			}
		}
		for _, name := range tc.never {
			if served[name] {
				t.Errorf("%s's /metrics serves %s, which nothing in it counts", tc.args[0], name)
			}
		}
		if code := v.stop(t); code != ExitOK {
			t.Fatalf("%s: exit code %d\nstderr:\n%s", tc.args[0], code, v.stderr)
		}
	}
}

// TestServeWrongCellPeerIsUsage: a daemon whose cell member refuses to
// bootstrap because a --cell-peer names another key than the daemon at its
// address presents exits 2, a usage error systemd's units do not restart
// on, with the cell's words; another failure of Serve exits 1 as before.
func TestServeWrongCellPeerIsUsage(t *testing.T) {
	var out, errb strings.Builder
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	wrong := fmt.Errorf("group daemon: %w (%w): --cell-peer for 10.0.0.1:7374 names q9rt; the daemon there presents ie6o", cell.ErrInvalidConfig, cell.ErrPeerKeyMismatch)
	if got := serveUntilDone(context.Background(), env, "serve", func(context.Context) error { return wrong }); got != ExitUsage {
		t.Errorf("exit code %d, want %d (%s)", got, ExitUsage, errb.String())
	}
	if !strings.Contains(errb.String(), "--cell-peer for 10.0.0.1:7374 names q9rt; the daemon there presents ie6o") {
		t.Errorf("stderr %q does not say which flag", errb.String())
	}
	if got := serveUntilDone(context.Background(), env, "serve", func(context.Context) error { return errors.New("disk on fire") }); got != ExitRefused {
		t.Errorf("exit code %d for another error, want %d", got, ExitRefused)
	}
}

//go:build linux

package e2e

import (
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// errorsSeen is the test's testing.TB, except that it keeps what Errorf
// reports instead of failing the test: the harness's report, read back.
type errorsSeen struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (e *errorsSeen) Errorf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

func (e *errorsSeen) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.errs)
}

// fatalSeen is errorsSeen whose Fatalf ends only the goroutine that calls
// it (runtime.Goexit, as FailNow does), after it sent what it reported.
type fatalSeen struct {
	*errorsSeen
	fatal chan<- string
}

func (f fatalSeen) Fatalf(format string, args ...any) {
	f.fatal <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestUnseenEndReported: a daemon killed behind the harness's back (not
// through stop or the cleanup: a crash, the OOM killer) is reported when
// it ends, naming it and its signal, before the harness sees it gone;
// daemons the test stops, and a client verb that ends by itself, are not.
// Until session 21 such a daemon showed only as a later wait for
// something it would have done timing out, or not at all; until session
// 22 the test's waits (eventually, waitFor) still ran to their deadline
// after the report.
func TestUnseenEndReported(t *testing.T) {
	t.Parallel()
	rec := &errorsSeen{TB: t}
	reg := startDaemon(rec, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	stopped := startDaemon(rec, "serve", "--listen", "127.0.0.1:0", "--registry", reg.registry, "--state-dir", t.TempDir(), "--group", "lobby")
	stopped.stop(rec)
	verb := startProc(rec, "huddle id", childEnv(t.TempDir()), false, endsItself, "id")
	if code := verb.wait(rec); code != 0 {
		t.Fatalf("huddle id exited %d\n%s", code, verb.stderr)
	}
	if errs := rec.seen(); len(errs) > 0 {
		t.Fatalf("ends the test caused or expected were reported: %q", errs)
	}

	killed := startDaemon(rec, "serve", "--listen", "127.0.0.1:0", "--registry", reg.registry, "--state-dir", t.TempDir(), "--group", "lobby")
	if err := syscall.Kill(killed.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-killed.done // the report comes first
	errs := rec.seen()
	report := regexp.MustCompile(`^huddle serve: huddle serve ended \S+ \(signal: killed\); signals the test sent: none: the test did not end it`)
	if len(errs) != 1 || !report.MatchString(errs[0]) || !strings.Contains(errs[0], killed.addr) {
		t.Fatalf("a daemon killed behind the harness's back: reported %q, want one report naming it (%s) and its signal", errs, killed.addr)
	}

	// The test's waits end on it at once, not at their deadline (an hour
	// here): eventually fails the test naming it, and a wait for another
	// process's output says it did not come.
	waited := make(chan bool, 1)
	go func() { waited <- reg.stdout.waitFor(time.Hour, func([]string) bool { return false }) }()
	select {
	case held := <-waited:
		if held {
			t.Fatal("waitFor: a condition that never holds held")
		}
	case <-time.After(waitTimeout):
		t.Fatalf("waitFor still waits %v after a daemon of the test ended unseen", waitTimeout)
	}
	fatal := make(chan string, 1)
	go func() {
		eventually(fatalSeen{rec, fatal}, time.Hour, func() bool { return false })
		fatal <- "" // returned without failing
	}()
	select {
	case what := <-fatal:
		if !strings.HasPrefix(what, "stopped waiting: a process ended and the test did not end it: huddle serve: ") {
			t.Fatalf("eventually, after a daemon of the test ended unseen: %q, want it to stop naming the daemon", what)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("eventually still waits %v after a daemon of the test ended unseen", waitTimeout)
	}

	reg.stop(rec)
	if errs := rec.seen(); len(errs) != 1 {
		t.Errorf("after the registry was stopped: %q, want the one report", errs)
	}
}

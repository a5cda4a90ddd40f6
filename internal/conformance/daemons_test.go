//go:build linux

package conformance

// The daemons the client is tested against: real huddle processes on
// 127.0.0.1 with mDNS off, from the binary internal/testbin builds.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// TestMain checks for leaked goroutines and removes the binary the tests
// built once they have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(testbin.Main{M: m}) }

// waitTimeout bounds every wait for a daemon.
const waitTimeout = 20 * time.Second

// proc is a huddle process whose output lines are kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when lines grow
}

// startHuddle runs huddle with args, in an environment of its own (a
// HUDDLE_HOME, no registry from ours), and kills it when the test ends.
func startHuddle(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(testbin.Huddle(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "HUDDLE_HOME=" + t.TempDir()}, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // one pipe: Wait's copying would need its own goroutine otherwise
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	if err := testbin.Start(cmd); err != nil { // gone with the test process
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s (huddle %s):\n%s", name, strings.Join(args, " "), strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// waitLine waits for a line of output matching re and returns its
// submatches.
func (p *proc) waitLine(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(waitTimeout)
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines, p.changed
		p.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if m := re.FindStringSubmatch(lines[seen]); m != nil {
				return m
			}
		}
		select {
		case <-changed:
		case <-p.done:
			t.Fatalf("%s exited before printing a line matching %s:\n%s", p.name, re, strings.Join(lines, "\n"))
		case <-deadline:
			t.Fatalf("%s printed no line matching %s in %v:\n%s", p.name, re, waitTimeout, strings.Join(lines, "\n"))
		}
	}
}

// The start lines of README's walk-through.
var (
	registryLine = regexp.MustCompile(`^huddle registry listening on (\S+), fingerprint (\S+)$`)
	daemonLine   = regexp.MustCompile(`^huddle group daemon listening on (\S+), fingerprint (\S+)$`)
)

// server is a daemon's address and key.
type server struct {
	addr string
	fp   fingerprint
}

func serverFrom(t testing.TB, m []string) server {
	t.Helper()
	fp, err := parseFingerprint(m[2])
	if err != nil {
		t.Fatal(err)
	}
	return server{addr: m[1], fp: fp}
}

// huddleID returns the fingerprint of the key in home, creating it
// (README: `HUDDLE_HOME=dir huddle id` before a cell starts).
func huddleID(t testing.TB, home string) fingerprint {
	t.Helper()
	cmd := exec.Command(testbin.Huddle(t), "id")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "HUDDLE_HOME=" + home}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("huddle id: %v", err)
	}
	fp, err := parseFingerprint(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

func peerFlag(fp fingerprint, addr string) string { return fmt.Sprintf("%s@%s", fp, addr) }

package netlab

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// loopbackEnv marks the child process RunInLoopbackNS starts; its value is
// the full name of the test the child must run.
const loopbackEnv = "HUDDLE_NETLAB_LOOPBACK"

// parentFD is the child's file descriptor of the pipe whose other end the
// parent holds (the first of cmd.ExtraFiles).
const parentFD = 3

// RunInLoopbackNS runs body inside a fresh network namespace that holds only
// lo, set up (up, multicast on, 224.0.0.0/4 routed to it) so multicast
// between processes or sockets of the namespace works and reaches nothing
// else.
//
// It works by running the test binary again under unshare -n, selecting
// only t (by its full name, subtests included), with an environment marker.
// In that child, RunInLoopbackNS configures lo and calls body with the
// child's t. In the parent it never calls body: it waits for the child,
// logs the child's output line by line through t.Log, and fails t if the
// child failed. Because body only ever runs in the child, a test cannot
// forget to check which side it is on and multicast on the real network.
//
// The child kills itself if this process ends first (killed: its
// cleanups never run), with what it started: it does not run on, orphaned.
//
// Code outside body runs in both processes, so put everything in body. It
// calls Require first (skipping, or failing under CI=true, without root).
func RunInLoopbackNS(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	if os.Getenv(loopbackEnv) == t.Name() {
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			{"link", "set", "lo", "multicast", "on"},
			{"route", "add", "224.0.0.0/4", "dev", "lo"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("netlab: in namespace: ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		stop := dieWithParent(t)
		defer stop()
		body(t)
		return
	}
	Require(t)

	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	args := []string{"-n", "--", os.Args[0], "-test.run=" + strings.Join(parts, "/"), "-test.v", "-test.count=1"}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), loopbackEnv+"="+t.Name())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("netlab: pipe: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	// The child's end of a pipe: it reads end of file once this process
	// is gone, however it ended (dieWithParent).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("netlab: pipe: %v", err)
	}
	defer w.Close() // held until the child has exited
	cmd.ExtraFiles = []*os.File{r}
	err = cmd.Start()
	r.Close()
	if err != nil {
		t.Fatalf("netlab: start unshare -n: %v", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sawRun := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "=== RUN") {
			sawRun = true
		}
		t.Log("ns| " + line)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("netlab: test in loopback namespace failed: %v", err)
	}
	if !sawRun {
		t.Fatalf("netlab: child process ran no test (pattern %q)", strings.Join(parts, "/"))
	}
}

// dieWithParent makes the child RunInLoopbackNS started kill itself, with
// SIGKILL, once its parent is gone: the parent killed (go test's -timeout,
// kill -9) left it running its test on, orphaned, with the daemons it had
// started. (A parent-death signal would follow the parent's forking
// thread, not the parent: see testbin.Start, which a package whose
// goroutines goleak checks does not otherwise run.) The parent holds the
// other end of the pipe at parentFD until the child exits, so the child
// reads end of file only once the parent has ended. stop ends the watch.
func dieWithParent(t *testing.T) (stop func()) {
	t.Helper()
	syscall.CloseOnExec(parentFD) // not the daemons' to hold
	// Non-blocking, so that Close ends a Read under way (exec made the
	// pipe blocking).
	if err := syscall.SetNonblock(parentFD, true); err != nil {
		t.Fatalf("netlab: the parent's pipe, fd %d: %v", parentFD, err)
	}
	parent := os.NewFile(parentFD, "netlab: the parent's pipe")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := parent.Read(make([]byte, 1))
		if errors.Is(err, io.EOF) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}()
	return func() {
		parent.Close()
		<-done
	}
}

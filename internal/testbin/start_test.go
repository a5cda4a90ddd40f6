//go:build linux

package testbin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStartOutlivesItsThread: a child Start started lives on when the
// thread of the goroutine that called Start ends (a goroutine locked to
// its thread returns), and dies with the process (TestCatStartedDiesWithTest
// below, and internal/jepsen's TestProcsDieWithTest). Started with its own
// Pdeathsig, as the harnesses did, it was SIGKILLed then: the kernel's
// parent is the forking thread.
//
// The child is cat: once the thread is gone (its /proc/self/task entry
// removed, after the kernel sent the parent-death signal), a line written
// to it must come back. A child with SIGKILL pending cannot echo it (the
// signal ends it before its read returns to it), so the echo, not a
// sleep, proves that no signal was sent.
func TestStartOutlivesItsThread(t *testing.T) {
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var gone int
	var startErr error
	onEndingThread(func(tid int) {
		gone = tid
		startErr = Start(cmd)
	})
	if startErr != nil {
		t.Fatal(startErr)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", gone)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d, whose goroutine returned locked to it, still runs after 20s", gone)
		}
		<-time.After(5 * time.Millisecond) // polling for the thread's end, with a deadline
	}
	const line = "still here\n"
	if _, err := io.WriteString(in, line); err != nil {
		t.Fatalf("write to the child after the thread that called Start ended: %v (child: %v)", err, cmd.Wait())
	}
	in.Close()
	got, _ := io.ReadAll(out)
	werr := cmd.Wait()
	if string(got) != line || werr != nil {
		t.Fatalf("the child, after the thread that called Start ended: echoed %q, ended %v; want %q and exit 0 (it died with the thread, not the process)",
			got, werr, strings.TrimSpace(line))
	}
}

// onEndingThread runs f in a goroutine locked to a thread that ends once f
// has returned (the goroutine returns still locked), and returns when f
// has. The main thread never ends (the runtime parks it instead): a
// goroutine that finds itself there holds it and tries again from another.
func onEndingThread(f func(tid int)) {
	done := make(chan struct{})
	var try func()
	try = func() {
		runtime.LockOSThread()
		if tid := unix.Gettid(); tid != os.Getpid() {
			f(tid)
			close(done)
			return // still locked: the runtime ends the thread
		}
		go try()
		<-done
		runtime.UnlockOSThread()
	}
	go try()
	<-done
}

// TestStartMany: Start starts commands from many goroutines at once, each
// with its own outcome (one that cannot start says so).
func TestStartMany(t *testing.T) {
	errs := make(chan error, 20)
	for i := range cap(errs) {
		go func() {
			if i%5 == 4 {
				_, err := CombinedOutput(exec.Command("/nonexistent/huddle-test"))
				if err == nil {
					err = errors.New("a command that does not exist started")
				} else {
					err = nil
				}
				errs <- err
				return
			}
			out, err := CombinedOutput(exec.Command("echo", fmt.Sprint(i)))
			if err == nil && string(out) != fmt.Sprintln(i) {
				err = fmt.Errorf("echo %d said %q", i, out)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/internal/lockfile"
)

// TestJoinedLockedSaidOnce: a piped huddle send to a group the joined file
// does not record (written by another binary, or edited), while another
// process holds the file's lock (a command stopped with ^Z mid-write),
// tried to record it after every send of lines, each try waiting the
// whole 5 s for the lock: a person typing waited 5 s a line, and nothing
// said why. The first failure is said, and no other change is tried.
// (Not parallel: it counts the tries through lockfile.Flock.)
func TestJoinedLockedSaidOnce(t *testing.T) {
	registry := startUp(t, "lobby")
	u := newTestUser(t, registry)
	u.ok(t, "join", "lobby", "--as", "alice")
	writeJoined(t, u, "# recorded elsewhere")
	lockPath := filepath.Join(u.home, joinedFile+".lock")
	held, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// Each try of the lock is one flock call: it is not waited for.
	var tries atomic.Int32
	lockfile.Flock = func(fd, how int) error {
		if at, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); at == lockPath && fd != int(held.Fd()) {
			tries.Add(1)
		}
		return syscall.Flock(fd, how)
	}
	wait := joinedLockWait
	joinedLockWait = 0
	t.Cleanup(func() { lockfile.Flock, joinedLockWait = syscall.Flock, wait })

	in, feed := io.Pipe()
	var out, errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	e := Env{Stdin: in, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"send", "lobby"}, e) }()
	for i := range 3 {
		// One line at a time, each acknowledged before the next: a send each.
		if _, err := fmt.Fprintf(feed, "line %d\n", i+1); err != nil {
			t.Fatal(err)
		}
		for strings.Count(out.String(), "\n") <= i {
			select {
			case <-out.written():
			case <-ctx.Done():
				t.Fatalf("no ack of line %d:\n%s", i+1, errb.String())
			}
		}
	}
	feed.Close()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d:\n%s", code, errb.String())
	}
	stderr := errb.String()
	if n := tries.Load(); n != 1 || strings.Count(stderr, "warning: cannot record that you joined group lobby") != 1 {
		t.Errorf("the joined file's lock tried %d times over three sends, stderr:\n%s\nwant it tried once, and said once", n, stderr)
	}
}

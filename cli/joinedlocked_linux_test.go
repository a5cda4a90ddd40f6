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
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestJoinedLockedSaidOnce: a piped huddle send to a group the joined file
// does not record (written by another binary, or edited), while another
// process holds the file's lock (a command stopped with ^Z mid-write),
// tried to record it after every send of lines, each try waiting the
// whole 5 s for the lock: a person typing waited 5 s a line, and nothing
// said why. The first failure is said, and no other change is tried.
func TestJoinedLockedSaidOnce(t *testing.T) {
	registry := startUp(t, "lobby")
	u := newTestUser(t, registry)
	u.ok(t, "join", "lobby", "--as", "alice")
	writeJoined(t, u, "# recorded elsewhere")
	tries := holdJoinedLock(t, u)

	in, feed := io.Pipe()
	var out, errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	e := Env{Stdin: in, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }, LockWait: u.lockWait, flock: u.flock}
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

// TestJoinedLockedFollowsOnce: huddle groups follows each cell's group
// the user joined whose members changed; with the joined file's lock
// held by another process, each follow waited the whole lock wait
// (5 s) to write, one after the other, and nothing said why. The first
// failure is said, and no other follow or change is tried.
func TestJoinedLockedFollowsOnce(t *testing.T) {
	var says atomic.Pointer[[]wire.Fingerprint]
	var asked atomic.Int32
	a, b := statusDaemon(t, &says, &asked), statusDaemon(t, &says, &asked)
	c, d := wire.Fingerprint{0xc}, wire.Fingerprint{0xd} // c replaced by d
	says.Store(&[]wire.Fingerprint{a.Fingerprint, b.Fingerprint, d})
	groups := []wire.UUID{{1}, {2}}
	var entries []wire.GroupEntry
	set := joinedSet{}
	for i, g := range groups {
		entries = append(entries, wire.GroupEntry{Group: g, Name: fmt.Sprintf("cell%d", i), Addrs: []string{a.Addr}, Fingerprint: a.Fingerprint, ExpiresMS: 15000,
			Replicas: []wire.Replica{{Addr: a.Addr, Fingerprint: a.Fingerprint, Leader: true}, b, {Addr: "127.0.0.1:9", Fingerprint: d}}})
		set[joinedGroup{g, a.Fingerprint}] = joinedLine{name: fmt.Sprintf("cell%d", i), cell: []wire.Fingerprint{a.Fingerprint, b.Fingerprint, c}}
	}
	reg := listingRegistry(t, entries...)
	u := newTestUser(t, reg)
	if err := saveJoined(u.home, set); err != nil {
		t.Fatal(err)
	}
	tries := holdJoinedLock(t, u)
	code, _, stderr := u.run(t, "groups")
	if code != ExitOK {
		t.Fatalf("huddle groups: exit %d:\n%s", code, stderr)
	}
	if n := tries.Load(); n != 1 || strings.Count(stderr, "warning: cannot record the members of the cell of group cell") != 1 {
		t.Errorf("the joined file's lock tried %d times for two cells followed, stderr:\n%s\nwant it tried once, and said once", n, stderr)
	}
	if asked.Load() == 0 {
		t.Error("no member was asked")
	}
}

// holdJoinedLock holds u's joined file's lock, as another process would,
// has u's changes not wait for it (Env.LockWait 1 ns: one flock call a try),
// and counts the tries of others.
func holdJoinedLock(t *testing.T, u *testUser) *atomic.Int32 {
	t.Helper()
	return holdLock(t, u, filepath.Join(u.home, joinedFile+".lock"))
}

// holdLock holds the lock file at lockPath, in u's home, as another
// process would, has u's commands wait 1 ns for locks (one flock call a
// try), and counts their tries of that one.
func holdLock(t *testing.T, u *testUser, lockPath string) *atomic.Int32 {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var tries atomic.Int32
	u.flock = func(fd, how int) error {
		if at, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); at == lockPath && fd != int(held.Fd()) {
			tries.Add(1)
		}
		return syscall.Flock(fd, how)
	}
	u.lockWait = time.Nanosecond
	return &tries
}

// TestLockWaitTaken: Env.LockWait bounds every lock a command waits for,
// known_registries' too (a new registry's pin), not only the joined
// file's: with the lock held and the wait 1 ns, the pin is tried once.
// Taken with its 5 s default instead, it was tried hundreds of times,
// and no test said so (tests then only took longer).
func TestLockWaitTaken(t *testing.T) {
	registry := startUp(t, "lobby")
	u := newTestUser(t, registry)
	tries := holdLock(t, u, filepath.Join(u.home, identity.KnownHostsFile+".lock"))
	_, _, stderr := u.run(t, "groups")
	if n := tries.Load(); n != 1 {
		t.Errorf("known_registries' lock, held, tried %d times with Env.LockWait 1 ns; want once. stderr:\n%s", n, stderr)
	}
}

//go:build unix

package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// TestKnownHostsWithoutLocks: on a file system that has no locks (flock
// answers ENOLCK: NFS without its lock service), a new registry is still
// pinned, unlocked, as before the writers' lock. With the lock's error
// every first use of a registry there failed.
func TestKnownHostsWithoutLocks(t *testing.T) {
	noLocks := lockfile.Locker{Flock: func(int, int) error { return syscall.ENOLCK }}
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	if err := OpenKnownHostsWith(path, noLocks).Check(t.Context(), "reg:7373", wire.Fingerprint{1}); err != nil {
		t.Fatalf("Check of a new name where flock answers ENOLCK: %v", err)
	}
	if got, ok, err := OpenKnownHostsWith(path, noLocks).Lookup("reg:7373"); err != nil || !ok || got != (wire.Fingerprint{1}) {
		t.Fatalf("Lookup after it = %v %v %v, want the pin", got, ok, err)
	}
	if _, err := OpenKnownHostsWith(path, noLocks).Forget(t.Context(), "reg:7373"); err != nil {
		t.Fatalf("Forget where flock answers ENOLCK: %v", err)
	}
}

// lockedPins makes a known-hosts file pinning old:7373 to key 1 and holds
// its writers' lock as another process would (flock on a file of its
// own), until the test lets go (flock LOCK_UN on held) or ends.
func lockedPins(t *testing.T) (path string, held *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), KnownHostsFile)
	if err := OpenKnownHosts(path).Check(t.Context(), "old:7373", wire.Fingerprint{1}); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(path+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return path, held
}

// TestKnownHostsLockHeld: a process that holds the writers' lock and never
// lets go (stopped with ^Z mid-write, or hostile: the lock file is the
// user's to open) made every first use of a registry wait for ever, in
// every command and in huddle web, whose other pins' lookups then waited
// behind it. The wait is now bounded: ErrPinsLocked, nothing written; a
// name pinned already is still checked; and once the lock is free the new
// name is pinned.
func TestKnownHostsLockHeld(t *testing.T) {
	path, held := lockedPins(t)
	k := OpenKnownHosts(path)
	k.locker.Wait = 100 * time.Millisecond
	done := make(chan error, 2)
	go func() { done <- k.Check(t.Context(), "new:7373", wire.Fingerprint{2}) }()
	go func() { _, err := k.Forget(t.Context(), "old:7373"); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrPinsLocked) {
				t.Fatalf("a change while another process holds the lock: %v, want ErrPinsLocked", err)
			}
		case <-time.After(30 * time.Second):
			syscall.Flock(int(held.Fd()), syscall.LOCK_UN) // lets the calls end
			<-done
			t.Fatal("a change waited 30 s for a lock another process holds")
		}
	}
	if err := k.Check(t.Context(), "old:7373", wire.Fingerprint{1}); err != nil {
		t.Fatalf("Check of a pinned name while the lock is held: %v", err)
	}
	if _, ok, err := k.Lookup("new:7373"); ok || err != nil {
		t.Fatalf("Lookup of the name refused for the lock = %v %v, want no pin", ok, err)
	}
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := k.Check(t.Context(), "new:7373", wire.Fingerprint{2}); err != nil {
		t.Fatalf("Check once the lock is free: %v", err)
	}
}

// TestKnownHostsReadersDoNotWaitForLock: a change waiting for the writers'
// lock another process holds (up to its bound, ErrPinsLocked) held the
// file's in-process mutex all the while, and every Lookup, and every
// Check of a name pinned already, which take no lock, waited behind it:
// in huddle web, each registry's dial (a Check of its pin) stalled for as
// long as a new registry's pin waited, one such wait after another. A
// reader now waits for no writer: the file is only ever replaced whole.
func TestKnownHostsReadersDoNotWaitForLock(t *testing.T) {
	path, held := lockedPins(t)
	waiting := make(chan struct{}, 1)
	k := OpenKnownHostsWith(path, lockfile.Locker{
		Wait: time.Hour, // the test lets go of the lock
		Flock: func(fd, how int) error {
			err := syscall.Flock(fd, how)
			if err == syscall.EWOULDBLOCK {
				select {
				case waiting <- struct{}{}:
				default:
				}
			}
			return err
		},
	})
	changed := make(chan error, 1)
	go func() { changed <- k.Check(t.Context(), "new:7373", wire.Fingerprint{2}) }()
	<-waiting
	read := make(chan error, 1)
	go func() {
		if fp, ok, err := k.Lookup("old:7373"); err != nil || !ok || fp != (wire.Fingerprint{1}) {
			read <- fmt.Errorf("Lookup = %v %v %v, want the pin", fp, ok, err)
			return
		}
		read <- k.Check(t.Context(), "old:7373", wire.Fingerprint{1})
	}()
	waited := false
	select {
	case err := <-read:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(20 * time.Second):
		waited = true
		t.Error("a Lookup and a Check of a pinned name still wait 20 s after a change began to wait for another process's lock")
	}
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-changed; err != nil {
		t.Errorf("Check of a new name once the lock is free: %v", err)
	}
	if waited {
		<-read // it ends once the change has
	}
}

// TestKnownHostsLockWaitEndsWithContext: a new pin waiting for the
// writers' lock another process holds ends when the caller's context
// does (a command's --timeout, ^C), nothing written. The wait took no
// context and ran its whole bound (5 s) past it, until session 16.
func TestKnownHostsLockWaitEndsWithContext(t *testing.T) {
	path, _ := lockedPins(t) // held until the test ends
	k := OpenKnownHostsWaiting(path, time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := k.Check(ctx, "new:7373", wire.Fingerprint{2}); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrPinsLocked) {
		t.Fatalf("Check with the lock held, its context ended: %v; want the context's error", err)
	}
	if _, ok, err := k.Lookup("new:7373"); ok || err != nil {
		t.Errorf("new:7373 pinned (%v, %v) by a Check whose context ended", ok, err)
	}
}

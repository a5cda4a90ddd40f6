//go:build unix

package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// TestJoinedRecordReadersDoNotWaitForLock: huddle web's record of the
// joined file made a change (a join or a leave through the page) holding
// its mutex while it waited for the writers' lock another process held
// (up to 5 s: a command stopped with ^Z mid-write, or hostile), and Has
// and Groups took the same mutex: huddle web asks Has under its
// directory's lock at every merge of the registries' listings, so the
// whole page (its lists, its sends' lookups) waited with it. A reader now
// waits for no change.
func TestJoinedRecordReadersDoNotWaitForLock(t *testing.T) {
	dir := t.TempDir()
	waiting := make(chan struct{}, 1)
	r := &joinedRecord{dir: dir, locker: lockfile.Locker{
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
	}}
	old := wire.GroupEntry{Group: wire.UUID{1}, Fingerprint: wire.Fingerprint{1}, Name: "old"}
	joined := wire.GroupEntry{Group: wire.UUID{2}, Fingerprint: wire.Fingerprint{2}, Name: "new"}
	r.Add(old)
	held, err := os.OpenFile(filepath.Join(dir, joinedFile+".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	added := make(chan struct{})
	go func() {
		defer close(added)
		r.Add(joined)
	}()
	<-waiting
	read := make(chan bool, 1)
	go func() { read <- r.Has(old.Group, old.Fingerprint) && len(r.Groups()) == 1 }()
	waited := false
	select {
	case ok := <-read:
		if !ok {
			t.Error("Has and Groups while a join waits for the lock: want the group joined before, alone")
		}
	case <-time.After(20 * time.Second):
		waited = true
		t.Error("Has and Groups still wait 20 s after a join began to wait for another process's lock")
	}
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	<-added
	if waited {
		<-read // it ends once the join has
	}
	if !r.Has(joined.Group, joined.Fingerprint) {
		t.Error("the join made once the lock was free is not recorded")
	}
}

// TestJoinedRecordUnwrittenLoggedOnce: huddle web's record of a join,
// leave or cell followed that could not be written (another process held
// the joined file's lock past its wait) was said nowhere: the page's join
// was not remembered, and nothing said why. It is logged once, not at
// every change while the lock stays held, and again once a change was
// written between.
func TestJoinedRecordUnwrittenLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := &joinedRecord{dir: dir, locker: lockfile.Locker{Wait: time.Nanosecond}, log: log} // each change tries the lock once
	entry := func(i int) wire.GroupEntry {
		return wire.GroupEntry{Group: wire.UUID{byte(i)}, Fingerprint: wire.Fingerprint{1}, Name: fmt.Sprintf("g%d", i)}
	}
	r.Add(entry(1)) // creates the lock file
	held, err := os.OpenFile(filepath.Join(dir, joinedFile+".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hold := func(how int) {
		t.Helper()
		if err := syscall.Flock(int(held.Fd()), how); err != nil { // another open file: as another process's
			t.Fatal(err)
		}
	}
	const said = "cannot record that you joined group g"
	hold(syscall.LOCK_EX)
	// Each failure is returned too: the page says it for its join or
	// leave (web.Joined), every time.
	for i, err := range []error{r.Add(entry(2)), r.Add(entry(3)), r.Remove(entry(1))} {
		if !errors.Is(err, errJoinedLocked) {
			t.Errorf("change %d with the lock held: %v; want errJoinedLocked", i+1, err)
		}
	}
	if got := strings.Count(logged.String(), "cannot record"); got != 1 || !strings.Contains(logged.String(), said+"2") {
		t.Fatalf("three changes with the lock held: logged %d times:\n%s\nwant once, for the first (g2)", got, logged.String())
	}
	if r.Has(entry(2).Group, entry(2).Fingerprint) {
		t.Fatal("a join recorded while another process held the lock")
	}
	hold(syscall.LOCK_UN)
	r.Add(entry(4))
	if !r.Has(entry(4).Group, entry(4).Fingerprint) {
		t.Fatal("the join made once the lock was free is not recorded")
	}
	hold(syscall.LOCK_EX)
	r.Add(entry(5))
	if got := strings.Count(logged.String(), "cannot record"); got != 2 || !strings.Contains(logged.String(), said+"5") {
		t.Fatalf("a change failing again after one written: logged %d times in all:\n%s\nwant twice, the second for g5", got, logged.String())
	}
}

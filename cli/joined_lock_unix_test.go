//go:build unix

package cli

import (
	"os"
	"path/filepath"
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
	r := &joinedRecord{dir: dir, lockWait: time.Hour} // the test lets go of the lock
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
	waiting := make(chan struct{}, 1)
	lockfile.Flock = func(fd, how int) error {
		err := syscall.Flock(fd, how)
		if err == syscall.EWOULDBLOCK {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
		return err
	}
	t.Cleanup(func() { lockfile.Flock = syscall.Flock })
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

//go:build unix

package cli

import (
	"os"
	"syscall"
	"time"
)

// flock is syscall.Flock; tests replace it.
var flock = syscall.Flock

// lockJoinedFile takes an exclusive lock on f, the joined file's lock,
// waiting for another holder at most wait (errJoinedLocked after it):
// as known_registries' writers do (identity), tried without blocking,
// since a blocking flock cannot be given up. Where the file system has no
// locks (ENOLCK: NFS without its lock service) it takes none, and
// writers there may lose each other's joins, as before the lock.
func lockJoinedFile(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	pause := time.Millisecond
	for {
		switch err := flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err {
		case syscall.EINTR:
		case syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOSYS:
			return nil
		case syscall.EWOULDBLOCK:
			if !time.Now().Before(deadline) {
				return errJoinedLocked
			}
			time.Sleep(min(pause, time.Until(deadline)))
			pause = min(2*pause, 10*time.Millisecond)
		default:
			return err
		}
	}
}

//go:build unix

package identity

import (
	"os"
	"syscall"
	"time"
)

// flock is syscall.Flock; tests replace it.
var flock = syscall.Flock

// lockFile takes an exclusive lock on f, waiting for other holders (other
// processes, or other open files in this one) at most wait: ErrPinsLocked
// after it. Closing f releases it. On a file system that has no locks
// (NFS without its lock service: ENOLCK) it takes none and says nothing
// is wrong: writers there may lose each other's pins, as where the system
// has no flock (knownhosts_lock_other.go), rather than every new registry
// being refused.
//
// The lock is tried without blocking, again and again: a blocking flock
// cannot be given up.
func lockFile(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	pause := time.Millisecond
	for {
		switch err := flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err {
		case syscall.EINTR:
		case syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOSYS:
			return nil
		case syscall.EWOULDBLOCK:
			if !time.Now().Before(deadline) {
				return ErrPinsLocked
			}
			time.Sleep(min(pause, time.Until(deadline)))
			pause = min(2*pause, 10*time.Millisecond)
		default:
			return err
		}
	}
}

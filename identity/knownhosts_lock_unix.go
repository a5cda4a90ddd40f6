//go:build unix

package identity

import (
	"os"
	"syscall"
)

// flock is syscall.Flock; tests replace it.
var flock = syscall.Flock

// lockFile takes an exclusive lock on f, waiting for other holders (other
// processes, or other open files in this one). Closing f releases it. On a
// file system that has no locks (NFS without its lock service: ENOLCK) it
// takes none and says nothing is wrong: writers there may lose each
// other's pins, as where the system has no flock (knownhosts_lock_other.go),
// rather than every new registry being refused.
func lockFile(f *os.File) error {
	for {
		switch err := flock(int(f.Fd()), syscall.LOCK_EX); err {
		case syscall.EINTR:
			continue
		case syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOSYS:
			return nil
		default:
			return err
		}
	}
}

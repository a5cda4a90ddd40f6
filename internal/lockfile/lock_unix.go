//go:build unix

package lockfile

import (
	"context"
	"os"
	"syscall"
	"time"
)

// Lock takes an exclusive lock on f, waiting for other holders (other
// processes, or other open files in this one) at most l.Wait: ErrHeld
// after it, or ctx's error once ctx ends (a command's --timeout, ^C: until
// session 16 the wait ran its whole bound past them). Closing f releases
// it. On a file system that has no locks (NFS
// without its lock service: ENOLCK) it takes none and says nothing is
// wrong: writers there may lose each other's changes, as where the system
// has no flock (lock_other.go), rather than every change being refused.
//
// The lock is tried without blocking, again and again (every 10 ms at
// most): a blocking flock cannot be given up.
func (l Locker) Lock(ctx context.Context, f *os.File) error {
	flock := l.Flock
	if flock == nil {
		flock = syscall.Flock
	}
	deadline := time.Now().Add(l.Wait)
	pause := time.Millisecond
	for {
		switch err := flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err {
		case syscall.EINTR:
		case syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOSYS:
			return nil
		case syscall.EWOULDBLOCK:
			if !time.Now().Before(deadline) {
				return ErrHeld
			}
			t := time.NewTimer(min(pause, time.Until(deadline)))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			pause = min(2*pause, 10*time.Millisecond)
		default:
			return err
		}
	}
}

// openNoWait opens path to be read without waiting for a writer, as
// opening a named pipe does (O_NONBLOCK, which a regular file's reads
// ignore).
func openNoWait(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

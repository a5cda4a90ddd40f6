//go:build unix

package statedir

import (
	"errors"
	"os"
	"syscall"
)

// errLocked: another open file description holds the lock.
var errLocked = errors.New("locked")

// flock takes an exclusive lock on f without waiting.
func flock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}

// readOnlyFS reports whether err says the file system is read-only.
func readOnlyFS(err error) bool { return errors.Is(err, syscall.EROFS) }

//go:build unix

package identity

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f, waiting for other holders (other
// processes, or other open files in this one). Closing f releases it.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

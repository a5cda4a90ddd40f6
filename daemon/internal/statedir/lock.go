// Package statedir is the lock on a daemon's state directory: one daemon
// per directory, so that a second one started on it refuses instead of
// sharing its key and files.
package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// lockFile is the file in a state directory that the daemon using it holds
// locked (flock), with its process ID inside, so that a second daemon
// started on the same directory refuses instead of sharing its key and
// files: it would take over the first one's registrations and both would
// write the same state.
const lockFile = "lock"

// InUseError is returned by Lock when another process holds the state
// directory.
type InUseError struct {
	Dir string
	PID int // 0 if the holder's ID could not be read
}

func (e *InUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("state dir %s in use by another process", e.Dir)
	}
	return fmt.Sprintf("state dir %s in use by PID %d", e.Dir, e.PID)
}

// ErrInUse is matched by every *InUseError.
var ErrInUse = errors.New("state dir in use")

// Is makes errors.Is(err, ErrInUse) hold.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// Held is a held state-directory lock; Release gives it up, once.
type Held struct {
	f    *os.File
	once sync.Once
}

// Lock creates dir if need be and takes its lock, or returns an
// *InUseError naming the holder. The lock is the kernel's: it goes
// with the process, so a daemon killed with SIGKILL leaves nothing to clean.
func Lock(dir string) (*Held, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil && readOnlyFS(err) {
		// A read-only file system (a data directory that cannot be
		// written: the daemon serves what it holds): flock works on a
		// file open for reading, if the lock file is there.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := flock(f); err != nil {
		pid := 0
		if b, err := os.ReadFile(path); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &InUseError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Held{f: f}, nil
}

// Release unlocks and closes the lock file (which stays, empty of
// meaning: the lock, not the file, says the directory is in use). A nil
// Held releases nothing.
func (l *Held) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() { l.f.Close() })
}

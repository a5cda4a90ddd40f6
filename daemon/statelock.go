package daemon

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

// StateDirInUseError is returned by Listen when another process holds the
// state directory.
type StateDirInUseError struct {
	Dir string
	PID int // 0 if the holder's ID could not be read
}

func (e *StateDirInUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("state dir %s in use by another process", e.Dir)
	}
	return fmt.Sprintf("state dir %s in use by PID %d", e.Dir, e.PID)
}

// ErrStateDirInUse is matched by every *StateDirInUseError.
var ErrStateDirInUse = errors.New("state dir in use")

// Is makes errors.Is(err, ErrStateDirInUse) hold.
func (e *StateDirInUseError) Is(target error) bool { return target == ErrStateDirInUse }

// stateLock is a held state-directory lock; release gives it up, once.
type stateLock struct {
	f    *os.File
	once sync.Once
}

// lockStateDir creates dir if need be and takes its lock, or returns a
// *StateDirInUseError naming the holder. The lock is the kernel's: it goes
// with the process, so a daemon killed with SIGKILL leaves nothing to clean.
func lockStateDir(dir string) (*stateLock, error) {
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
			return nil, &StateDirInUseError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

// release unlocks and closes the lock file (which stays, empty of
// meaning: the lock, not the file, says the directory is in use).
func (l *stateLock) release() {
	if l == nil {
		return
	}
	l.once.Do(func() { l.f.Close() })
}

package groupd

import (
	"errors"
	"fmt"

	"github.com/huddle-chat/huddle/daemon/internal/statedir"
	"github.com/huddle-chat/huddle/daemon/server"
)

// Errors returned by the daemons' methods. ErrClosed, ErrInvalidConfig and
// ErrServing are their servers' (package server): the same values.
var (
	// ErrClosed: the daemon was closed; it cannot listen or serve again.
	ErrClosed = server.ErrClosed
	// ErrInvalidConfig is wrapped by every error of a Config's Validate.
	ErrInvalidConfig = server.ErrInvalidConfig
	// ErrServing: Serve was called while the daemon was already serving.
	ErrServing = server.ErrServing
	// ErrNotReady is what Readiness returns, wrapped with the reason,
	// while a daemon cannot do its job yet.
	ErrNotReady = server.ErrNotReady
	// ErrStateDirInUse is matched by every *StateDirInUseError.
	ErrStateDirInUse = statedir.ErrInUse
	// ErrBadState: a file in the state directory cannot be used.
	ErrBadState = errors.New("daemon: unusable state directory")
)

// StateDirInUseError is returned by Listen when another process holds the
// state directory.
type StateDirInUseError = statedir.InUseError

// invalid returns an error wrapping ErrInvalidConfig that says which field
// is wrong and why: every Validate of the package speaks through it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

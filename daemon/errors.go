package daemon

import (
	"errors"
	"fmt"
)

// Errors returned by the servers' methods.
var (
	// ErrClosed: the server was closed; it cannot listen or serve again.
	ErrClosed = errors.New("daemon: closed")
	// ErrInvalidConfig is wrapped by every error of a Config's Validate.
	ErrInvalidConfig = errors.New("daemon: invalid config")
	// ErrServing: Serve was called while the server was already serving.
	ErrServing = errors.New("daemon: already serving")
	// ErrBadState: a file in the state directory cannot be used.
	ErrBadState = errors.New("daemon: unusable state directory")
)

// invalid returns an error wrapping ErrInvalidConfig that says which field
// is wrong and why: every Validate of the package speaks through it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

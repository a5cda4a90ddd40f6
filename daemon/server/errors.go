package server

import (
	"errors"
	"fmt"
)

// Errors returned by a Server's methods and Config's Validate. The daemons
// return the same values (their ErrClosed, ErrServing and ErrInvalidConfig
// are these), so errors.Is works whichever package a caller names.
var (
	// ErrClosed: the server was closed; it cannot listen or serve again.
	ErrClosed = errors.New("daemon: closed")
	// ErrInvalidConfig is wrapped by every error of a Config's Validate.
	ErrInvalidConfig = errors.New("daemon: invalid config")
	// ErrServing: Start (a daemon's Serve) was called while the server
	// was already serving.
	ErrServing = errors.New("daemon: already serving")
	// ErrNotReady is what a daemon's Readiness returns, wrapped with the
	// reason, while it cannot do its job yet (Listening says why, for the
	// server's part).
	ErrNotReady = errors.New("not ready")
	// ErrLater is what a Handler returns once it has given its call to
	// another goroutine, which answers it and ends it with Call.End. It
	// never reaches a peer.
	ErrLater = errors.New("server: the call is answered later")
)

// invalid returns an error wrapping ErrInvalidConfig that says which field
// is wrong and why.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

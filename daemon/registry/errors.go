package registry

import (
	"github.com/huddle-chat/huddle/daemon/internal/statedir"
	"github.com/huddle-chat/huddle/daemon/server"
)

// Errors returned by a registry's methods. They are the same values as
// the group daemon's, so errors.Is works whichever package a caller names.
var (
	// ErrClosed: the registry was closed; it cannot listen or serve again.
	ErrClosed = server.ErrClosed
	// ErrInvalidConfig is wrapped by every error of Config.Validate.
	ErrInvalidConfig = server.ErrInvalidConfig
	// ErrServing: Serve was called while the registry was already serving.
	ErrServing = server.ErrServing
	// ErrNotReady is what Readiness returns, wrapped with the reason,
	// while the registry cannot serve.
	ErrNotReady = server.ErrNotReady
	// ErrStateDirInUse is matched by the error of Listen when another
	// process holds the state directory (a *StateDirInUseError).
	ErrStateDirInUse = statedir.ErrInUse
)

// StateDirInUseError is returned by Listen when another process holds the
// state directory.
type StateDirInUseError = statedir.InUseError

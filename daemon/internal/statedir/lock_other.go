//go:build !unix

package statedir

import (
	"errors"
	"os"
)

// errLocked: another process holds the lock (never, here).
var errLocked = errors.New("locked")

// flock does nothing where the system has no flock: the state directory is
// not protected from a second daemon there.
func flock(*os.File) error { return nil }

// readOnlyFS reports whether err says the file system is read-only (never
// known here).
func readOnlyFS(error) bool { return false }

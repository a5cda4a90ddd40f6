//go:build !unix

package lockfile

import (
	"context"
	"os"
)

// Lock does nothing where the system has no flock: writers in different
// processes may lose each other's changes there (the last write wins).
func (Locker) Lock(context.Context, *os.File) error { return nil }

// openNoWait is os.Open where there are no named pipes to wait on.
func openNoWait(path string) (*os.File, error) { return os.Open(path) }

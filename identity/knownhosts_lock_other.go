//go:build !unix

package identity

import (
	"os"
	"time"
)

// lockFile does nothing where the system has no flock: writers in
// different processes may lose each other's pins there (the last write
// wins), as before session 14 everywhere.
func lockFile(*os.File, time.Duration) error { return nil }

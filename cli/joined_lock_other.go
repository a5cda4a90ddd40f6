//go:build !unix

package cli

import (
	"os"
	"time"
)

// lockJoinedFile does nothing where the system has no flock: commands and
// huddle web writing the joined file at once may lose each other's joins
// there (the last write wins).
func lockJoinedFile(*os.File, time.Duration) error { return nil }

// Package lockfile is what the user's own files (known_registries, the
// joined file) share to be written by several processes at once: an
// exclusive lock that gives up after a bound, and the file a symbolic
// link names, which is where a change is written and locked.
package lockfile

import (
	"errors"
	"os"
	"path/filepath"
)

// ErrHeld: another process held the lock for longer than the caller would
// wait (a command stopped with ^Z mid-write, or a hostile one). Callers
// wrap it in their own, naming the file.
var ErrHeld = errors.New("held by another process")

// Target returns path, or the file a symbolic link there names, through up
// to 8 links (relative ones from the link's directory). A change renamed
// over the link would replace it with a file of its own: the file it named
// (a dotfile kept elsewhere, shared by two homes) would stop getting
// changes, and writers through the link and through the file would lock
// two lock files and lose each other's changes.
func Target(path string) string {
	for range 8 {
		to, err := os.Readlink(path)
		if err != nil {
			break // not a link (or none yet)
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	return path
}

// Package lockfile is what the user's own files (known_registries, the
// joined file) share to be written by several processes at once: an
// exclusive lock that gives up after a bound, and the file a symbolic
// link names, which is where a change is written and locked; and how
// they, the list cache and the key are opened to be read (Open).
package lockfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ErrNotRegular: a file huddle reads from its home is something else than
// a regular file there (a named pipe, a device, a directory).
var ErrNotRegular = errors.New("not a regular file")

// Open opens path (through symbolic links) to be read, if it is a regular
// file; ErrNotRegular (wrapped, naming path) if it is not. It does not wait
// for the file: a named pipe in its place is refused at once. os.Open
// waited there for a writer, for ever, in every command (which then
// ignored ^C and SIGTERM, its main goroutine in the open) and in huddle
// web, whose directory waited behind it (until session 16).
func Open(path string) (*os.File, error) {
	f, err := openNoWait(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%v)", path, ErrNotRegular, st.Mode().Type())
	}
	return f, nil
}

// ReadFile is os.ReadFile through Open.
func ReadFile(path string) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Locker takes a file's writers' lock (Lock): a value per owner, no
// state of the package's, so that a test's seam is its own.
type Locker struct {
	// Wait bounds the wait for another holder of the lock (ErrHeld after
	// it); 0: one try.
	Wait time.Duration
	// Flock is flock(2) as Lock calls it; nil: the system's. Tests set it
	// to count the tries, see a writer wait, or stand for a file system
	// without locks (ENOLCK). Until session 17 it was a variable of the
	// package's, which a test changed for every other running beside it.
	Flock func(fd, how int) error
}

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

package lockfile

import (
	"os"
	"path/filepath"
)

// Replace writes data to path whole, durably: to a temporary file beside
// it (PATH.tmp*, mode perm), synced, then renamed over path, then the
// directory synced. After a crash or a power cut, path holds its old
// content or data, never an empty or half-written file: renamed without
// the syncs (until session 16), the rename could reach the disk before
// the data, and known_registries come back empty, so that every registry
// was trusted again on its next use (trust on first use, once more, for
// whoever answered first). A directory that cannot be synced is not an
// error: some file systems refuse directory fsyncs and persist entries
// their own way (as the group logs, STORAGE.md "Durability"). The
// temporary file is removed if the replace fails.
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, durably)
}

// ReplaceWhole is Replace without the directory's sync: after a crash or a
// power cut, path holds its old content or data whole, never a torn or
// empty file, but the replace may be lost (the old content back). For a
// cache, which may be lost but must never be torn: renamed without the
// file's sync (the list cache, until session 17), a power cut could leave
// it empty or zero-filled, read as unreadable and warned of by every
// command until the next listing rewrote it. One fsync per write, not two.
func ReplaceWhole(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, whole)
}

// syncs is how Replace makes its writes durable: tests record the order.
// A nil dir is not called (ReplaceWhole).
type syncs struct {
	file   func(*os.File) error
	rename func(from, to string) error
	dir    func(dir string) error
}

var (
	durably = syncs{file: (*os.File).Sync, rename: os.Rename, dir: syncDir}
	whole   = syncs{file: (*os.File).Sync, rename: os.Rename} // no dir: not synced
)

func replace(path string, data []byte, perm os.FileMode, s syncs) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // renamed: nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = s.file(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	if s.dir != nil {
		s.dir(filepath.Dir(path))
	}
	return nil
}

// syncDir makes a directory's entries (a file renamed into it) durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

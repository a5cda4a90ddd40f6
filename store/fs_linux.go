package store

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// freeBytes returns the bytes free to an unprivileged writer on the file
// system holding path, and whether it could tell.
func freeBytes(path string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

// allocate gives f the blocks of n bytes from off, its size extended to
// them: fallocate, which writes nothing; zeros written where the file
// system has no fallocate.
func allocate(f *os.File, off, n int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return writeZeros(f, off, n)
	}
	return err
}

// deviceOf returns the device number of the file system holding path,
// or of the nearest directory above it that exists; 0 if none can be
// read.
func deviceOf(path string) uint64 {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			return st.Dev
		}
		if filepath.Dir(p) == p {
			return 0
		}
	}
}

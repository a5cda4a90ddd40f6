package store

import (
	"os"
	"syscall"
)

// mapFile maps the first n bytes of f for reading, populated at once: a
// segment read back at open is read from the page cache in place, with
// no copy and no buffer to clear, and its bodies stay there (mapped.go).
// release unmaps it; nothing may alias the bytes after.
func mapFile(f *os.File, n int64) (p []byte, release func(), err error) {
	p, err = syscall.Mmap(int(f.Fd()), 0, int(n), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, nil, err
	}
	return p, func() { syscall.Munmap(p) }, nil
}

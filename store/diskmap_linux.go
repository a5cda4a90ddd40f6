package store

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapFile maps the first n bytes of f for reading, populated at once: a
// segment read back at open is read from the page cache in place, with
// no copy and no buffer to clear, and its bodies stay there (mapped.go).
// Its mapping's release unmaps it (nothing may alias the bytes after);
// its detach puts a copy of what was read back in its place
// (detachMapping).
func mapFile(f *os.File, n int64) (p []byte, m *mapping, err error) {
	p, err = syscall.Mmap(int(f.Fd()), 0, int(n), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, nil, err
	}
	return p, &mapping{release: func() { syscall.Munmap(p) }, detach: func(n int) error { return detachMapping(p, n) }}, nil
}

// detachMapping replaces the file mapping p with anonymous memory holding
// the same first n bytes (zeros after them), at the same addresses,
// read-only: what aliases p[:n] reads the same, and the file is no longer
// mapped, so that deleting it gives its space back at once. Only p[:n] is
// read: the file may have been cut shorter than p since it was mapped (a
// torn tail), and reading a page past its end would fault. The copy is
// made elsewhere and moved over p in one mremap, so that a concurrent
// reader sees the file's pages or the copy's, never a hole. On error p is
// as it was.
func detachMapping(p []byte, n int) error {
	size := uintptr(len(p))
	q, err := unix.MmapPtr(-1, 0, nil, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	c := unsafe.Slice((*byte)(q), size)
	copy(c, p[:n])
	if err = unix.Mprotect(c, unix.PROT_READ); err == nil {
		_, err = unix.MremapPtr(q, size, unsafe.Pointer(unsafe.SliceData(p)), size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
	}
	if err != nil {
		unix.MunmapPtr(q, size)
	}
	return err
}

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
// its detach copies what was read back, to be put in its place
// (copyMapping).
func mapFile(f *os.File, n int64) (p []byte, m *mapping, err error) {
	p, err = syscall.Mmap(int(f.Fd()), 0, int(n), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, nil, err
	}
	return p, &mapping{release: func() { syscall.Munmap(p) }, detach: func(n int) (func() error, func(), error) { return copyMapping(p, n) }}, nil
}

// copyMapping makes, elsewhere, a copy of the first n bytes of the file
// mapping p (zeros after them, up to len(p)), read-only; place moves it
// over p in one mremap, at the same addresses, so that what aliases p[:n]
// reads the same and the file is no longer mapped: deleting it then gives
// its space back at once, and a concurrent reader sees the file's pages or
// the copy's, never a hole. drop discards a copy not placed; on error of
// place, p is as it was. Only p[:n] is read: the file may have been cut
// shorter than p since it was mapped (a torn tail), and reading a page past
// its end would fault. p stays mapped until place or drop returns.
func copyMapping(p []byte, n int) (place func() error, drop func(), err error) {
	size := uintptr(len(p))
	q, err := unix.MmapPtr(-1, 0, nil, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, err
	}
	c := unsafe.Slice((*byte)(q), size)
	if detachTestCopying != nil {
		detachTestCopying()
	}
	drop = func() { unix.MunmapPtr(q, size) }
	// A page the disk cannot read faults (readfault.go).
	if err := readsFaulting(func() { copy(c, p[:n]) }); err != nil {
		drop()
		return nil, nil, err
	}
	if err := unix.Mprotect(c, unix.PROT_READ); err != nil {
		drop()
		return nil, nil, err
	}
	place = func() error {
		_, err := unix.MremapPtr(q, size, unsafe.Pointer(unsafe.SliceData(p)), size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
		return err
	}
	return place, drop, nil
}

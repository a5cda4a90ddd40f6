package store

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14): fault a range in,
// writable, in one call, as if each page had been written, without writing.
const madvPopulateWrite = 23

var pageSize = uintptr(os.Getpagesize())

// prefault makes the whole pages of b resident in one madvise call instead
// of one page fault per page as the log's writes reach them.
//
// A growing log writes into memory fresh from the kernel, and on a VM each
// first touch of a page is expensive: a page fault per page made copying
// bodies into a fresh slab many times slower than into one populated in one
// call first (BENCHMARKS.md). Kernels without MADV_POPULATE_WRITE refuse
// it; the writes then fault the pages in as before.
func prefault(b []byte) {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (p + pageSize - 1) &^ (pageSize - 1)
	end := (p + uintptr(len(b))) &^ (pageSize - 1)
	if end > start {
		syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvPopulateWrite)
	}
	runtime.KeepAlive(b)
}

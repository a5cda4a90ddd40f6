//go:build !linux

package store

// prefault is a no-op where MADV_POPULATE_WRITE does not exist: the log's
// writes fault its pages in as they reach them.
func prefault([]byte) {}

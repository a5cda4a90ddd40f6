//go:build unix

package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDiskNotRegularFiles: a log's file replaced by a named pipe or a
// directory (by hand, a tool gone wrong, a restore that made the wrong
// kind of file). Opened as a file, a pipe held Open for ever, waiting for
// a writer (the daemon's start, and SIGTERM with it, until session 17).
// Now a segment or the checkpoint that is not a regular file is refused
// as corruption, naming it; an index is an aid, rebuilt in its place; the
// spare and the reserve are made again.
func TestDiskNotRegularFiles(t *testing.T) {
	type kind struct {
		name string
		make func(path string) error
	}
	kinds := []kind{
		{"named pipe", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
	}
	files := []struct {
		name    string
		file    func(dir string) string
		refused bool
	}{
		{"newest segment", func(dir string) string { return newestOf(t, dir, "*.seg") }, true},
		{"oldest segment", func(dir string) string { return filepath.Join(dir, segName(1)) }, true},
		{"checkpoint", func(dir string) string { return filepath.Join(dir, cptName) }, true},
		{"index", func(dir string) string { return filepath.Join(dir, idxName(1)) }, false},
		{"spare", func(dir string) string { return filepath.Join(dir, spareName) }, false},
		{"reserve", func(dir string) string { return filepath.Join(dir, reserveName) }, false},
	}
	for _, k := range kinds {
		for _, f := range files {
			t.Run(f.name+" a "+k.name, func(t *testing.T) {
				dir := t.TempDir()
				cfg := DiskConfig{Dir: dir, SegmentBytes: 32 << 10, Reserve: 64 << 10}
				d, _ := diskLog(t, cfg)
				all := newWriter(3).fill(t, d, 600, 100)
				d.Close()
				path := f.file(dir)
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := k.make(path); err != nil {
					t.Fatal(err)
				}
				type opened struct {
					d   *DiskLog
					rec Recovery
					err error
				}
				done := make(chan opened, 1)
				go func() {
					d, rec, err := Open(cfg)
					done <- opened{d, rec, err}
				}()
				var o opened
				select {
				case o = <-done:
				case <-time.After(10 * time.Second):
					// Both its ends, so that the open waiting returns
					// (what Open does next may wait again: it is left).
					if p, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
						defer p.Close()
					}
					t.Fatalf("Open waited 10 s on a %s in place of the %s", k.name, f.name)
				}
				if o.d != nil {
					defer o.d.Close()
				}
				if f.refused {
					if !errors.Is(o.err, ErrCorrupt) || !strings.Contains(o.err.Error(), filepath.Base(path)) {
						t.Fatalf("Open with a %s in place of the %s: %v, want ErrCorrupt naming %s", k.name, f.name, o.err, filepath.Base(path))
					}
					return
				}
				if o.err != nil {
					t.Fatalf("Open with a %s in place of the %s: %v, want it opened", k.name, f.name, o.err)
				}
				if o.rec.ReadOnly != nil {
					t.Fatalf("opened read-only: %v", o.rec.ReadOnly)
				}
				checkHolds(t, o.d, all)
				seq, ts := o.d.Tail()
				if err := o.d.Append(newWriter(4).batch(3, 100, seq, ts)); err != nil {
					t.Fatalf("append after: %v", err)
				}
				if st, err := os.Lstat(path); err != nil || !st.Mode().IsRegular() {
					t.Errorf("the %s is not made again as a regular file: %v", f.name, err)
				}
			})
		}
	}
}

// newestOf returns the last file of dir matching pattern, by name.
func newestOf(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) < 2 {
		t.Fatalf("%d files %s in %s (%v), want several", len(m), pattern, dir, err)
	}
	return m[len(m)-1]
}

package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestDiskDirSyncFails: the fsync of the log's directory after a segment
// file is created fails (EIO). The file's entry may then be lost at a
// power cut, and every message acknowledged in it with it. Until session
// 16 the error was ignored: the log appended to the new file and, syncing
// always, acknowledged its messages; a power cut that took the entry then
// left a log whose next start refused it as corrupt (the checkpoint saying
// more was synced than the files hold). Now the rotation fails the log
// (ErrFailed, as a failed fsync of a file), so nothing is acknowledged in
// the file, and the log, after the power cut, opens holding every message
// acknowledged. A new log whose directory cannot be synced is not begun
// (ErrNotWritable, its directory not left); a Reset whose new segment's
// entry cannot be synced fails the log as a rotation does.
func TestDiskDirSyncFails(t *testing.T) {
	t.Run("rotation", func(t *testing.T) {
		dir := t.TempDir()
		var fail atomic.Bool
		cfg := DiskConfig{Dir: dir, Fsync: FsyncPolicy{Always: true}, Config: Config{MaxMessages: 80}, syncDir: func(d string) error {
			if fail.Load() {
				return syscall.EIO
			}
			return syncDir(d)
		}}
		d, _, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w := newWriter(61)
		acked := w.fill(t, d, 5, 100) // in the first segment (10 a file)
		if err := d.Durable(acked[len(acked)-1].Seq); err != nil {
			t.Fatal(err)
		}
		before, err := filepath.Glob(filepath.Join(dir, "*.seg"))
		if err != nil {
			t.Fatal(err)
		}
		fail.Store(true)
		var failed error
		for range 30 {
			seq, ts := d.Tail()
			b := w.batch(1, 100, seq, ts)
			if err := d.Append(b); err != nil {
				failed = err
				break
			}
			if err := d.Durable(b[0].Seq); err != nil {
				failed = err
				break
			}
			acked = append(acked, b...)
		}
		if !errors.Is(failed, ErrFailed) {
			t.Errorf("appends past a segment whose directory entry was not synced: %v, want ErrFailed", failed)
		}
		// The power cut: the entries the failed syncs did not make
		// durable are lost.
		d.crash()
		after, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		for _, p := range after {
			if !slices.Contains(before, p) {
				os.Remove(p)
			}
		}
		d, _, err = Open(DiskConfig{Dir: dir, Config: cfg.Config})
		if err != nil {
			t.Fatalf("reopen after the power cut: %v", err)
		}
		defer d.Close()
		checkHolds(t, d, acked)
	})
	t.Run("reset", func(t *testing.T) {
		var fail atomic.Bool
		cfg := DiskConfig{Dir: t.TempDir(), Fsync: FsyncPolicy{Always: true}, syncDir: func(d string) error {
			if fail.Load() {
				return syscall.EIO
			}
			return syncDir(d)
		}}
		d, _ := diskLog(t, cfg)
		newWriter(63).fill(t, d, 5, 100)
		fail.Store(true)
		if err := d.Reset(100, 1e12); !errors.Is(err, ErrFailed) {
			t.Errorf("Reset whose segment's directory entry was not synced: %v, want ErrFailed", err)
		}
		if err := d.Append(newWriter(64).batch(1, 10, 100, 1e12)); !errors.Is(err, ErrFailed) {
			t.Errorf("append after: %v, want ErrFailed", err)
		}
	})
	t.Run("new log", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "log")
		cfg := DiskConfig{Dir: dir, Fsync: FsyncPolicy{Always: true}, syncDir: func(string) error { return syscall.EIO }}
		d, rec, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if !errors.Is(rec.ReadOnly, ErrNotWritable) {
			t.Errorf("new log whose directory cannot be synced: ReadOnly %v, want ErrNotWritable", rec.ReadOnly)
		}
		if err := d.Append(newWriter(62).batch(1, 10, 0, 0)); !errors.Is(err, ErrNotWritable) {
			t.Errorf("append: %v, want ErrNotWritable", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the log's directory, not synced in its parent, left: %v", err)
		}
	})
}

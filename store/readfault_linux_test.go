package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// mappedHistory writes a log of several segments, closes it and opens it
// again, its history mapped; it returns the log, what it holds, and its
// oldest segment's path.
func mappedHistory(t *testing.T, cfg DiskConfig) (*DiskLog, []Entry, string) {
	t.Helper()
	d, _ := diskLog(t, cfg)
	all := newWriter(71).fill(t, d, 600, 200)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	d2, _ := diskLog(t, cfg)
	return d2, all, segs[0]
}

// TestDiskReadFaultAtOpen: a segment that cannot be read where it is
// mapped as the log reads it back at Open (the disk answering EIO for a
// page not in memory; here, as the kernel answers it too, the file cut
// shorter under its mapping) fails the Open with ErrReadFault. The read
// was a SIGBUS, which crashed the daemon as it started, every group with
// it (here, the test binary: "unexpected fault address").
func TestDiskReadFaultAtOpen(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _, first := mappedHistory(t, cfg)
	d.Close()
	readTestMapped = func(path string) {
		if path == first {
			if err := os.Truncate(path, 0); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { readTestMapped = nil })
	d2, _, err := Open(cfg)
	if err == nil {
		d2.Close()
	}
	if !errors.Is(err, ErrReadFault) {
		t.Fatalf("Open with a segment failing under its mapping: %v, want ErrReadFault", err)
	}
}

// TestDiskReadFaultDetach: the copy of a mapped file that a full disk
// makes before its deletion (room.go) fails with ErrReadFault where the
// file cannot be read, and the mapping stays as it was. The copy was a
// SIGBUS, crashing the daemon in the append that made room.
func TestDiskReadFaultDetach(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, all, first := mappedHistory(t, cfg)
	if err := os.Truncate(first, segHeaderSize); err != nil {
		t.Fatal(err)
	}
	err := d.mem.detachHeld(d.segs[0].last)
	if !errors.Is(err, ErrReadFault) {
		t.Fatalf("detach of a mapping whose file cannot be read: %v, want ErrReadFault", err)
	}
	// The other files read as before.
	d.wmu.Lock()
	second := d.segs[1]
	d.wmu.Unlock()
	checkHolds(t, afterFrom{d, second.base - 1}, all[second.base-1:])
}

// afterFrom queries l from seq on.
type afterFrom struct {
	l   querier
	seq uint64
}

func (a afterFrom) After(seq uint64, limit int, dst []Message) ([]Message, Cursor, error) {
	return a.l.After(max(seq, a.seq), limit, dst)
}

// TestDiskReadFaultEIO: on a real ext4 (a loop device) whose blocks are
// gone (every read EIO from the device), a page of a mapped segment the
// kernel evicted (MADV_PAGEOUT) faults when it is read: a query's body read as
// the daemon's handlers read them (faults made errors: daemon/server)
// is ErrReadFault, and so is the copy a full disk makes before deleting
// the file; the process goes on. Unguarded, each was a SIGBUS.
func TestDiskReadFaultEIO(t *testing.T) {
	disk := testdisk.NewExt4(t, "32M")
	cfg := DiskConfig{Dir: filepath.Join(disk.Dir, "log"), SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, all, _ := mappedHistory(t, cfg)
	d.mem.mu.Lock()
	first := d.mem.segs[0]
	d.mem.mu.Unlock()
	if first.mapped == nil {
		t.Fatal("the history read back is not mapped")
	}
	disk.Vanish()
	if err := unix.Madvise(first.w.slab, unix.MADV_PAGEOUT); err != nil {
		t.Fatalf("madvise(MADV_PAGEOUT): %v", err)
	}
	msgs, _, _ := d.After(0, len(all), nil)
	var sum byte
	err := readsFaulting(func() {
		for _, m := range msgs {
			for _, b := range m.Body {
				sum += b
			}
		}
	})
	if !errors.Is(err, ErrReadFault) {
		t.Fatalf("bodies read from evicted pages of a file whose disk is gone: %v, want ErrReadFault", err)
	}
	if err := d.mem.detachHeld(d.segs[0].last); !errors.Is(err, ErrReadFault) {
		t.Fatalf("detach of a mapping whose disk is gone: %v, want ErrReadFault", err)
	}
}

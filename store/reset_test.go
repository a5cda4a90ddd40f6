package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// resettable is what both logs offer a replica that catches up.
type resettable interface {
	appender
	querier
	Reset(seq uint64, t int64) error
	Epoch() uint64
	Changed() <-chan struct{}
}

// testReset: a log that held messages 1..n is reset to stand after 1000:
// it holds nothing, the next message is 1001 (after the time given), a
// reset behind the tail is refused, and appends follow on. A watcher
// waiting on Changed is woken by the reset, which moved the log's last
// sequence number on: it finds its gap at once, not at the next message
// (a cell member that aged a message out left its watchers on a stale
// view until then).
func testReset(t *testing.T, l resettable) []Entry {
	t.Helper()
	w := newWriter(7)
	w.fill(t, l, 50, 100)
	epoch := l.Epoch()
	const at, tAt = 1000, int64(5e18)
	changed := l.Changed()
	if err := l.Reset(at, tAt); err != nil {
		t.Fatalf("reset: %v", err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a reset left Changed's channel open: a watcher waits for the next message")
	}
	if seq, ts := l.Tail(); seq != at || ts != tAt {
		t.Fatalf("tail after reset: %d %d, want %d %d", seq, ts, at, tAt)
	}
	if got, cur, _ := l.After(0, 10, nil); len(got) != 0 || cur.First != at+1 || cur.Last != at {
		t.Fatalf("after reset: %d messages, cursor %+v; want none, first %d, last %d", len(got), cur, at+1, at)
	}
	if err := l.Reset(at-1, tAt); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("reset behind the tail: %v, want ErrOutOfOrder", err)
	}
	if l.Epoch() != epoch {
		t.Fatalf("epoch %d after reset, want %d", l.Epoch(), epoch)
	}
	more := w.fill(t, l, 20, 100)
	if more[0].Seq != at+1 || more[0].Time <= tAt {
		t.Fatalf("first message after the reset: seq %d time %d, want %d after %d", more[0].Seq, more[0].Time, at+1, tAt)
	}
	checkHolds(t, l, more)
	return more
}

func TestLogReset(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	testReset(t, l)
}

// TestDiskLogReset: the same on disk, and the reset log reads back as it
// stands: its messages, its tail and its epoch.
func TestDiskLogReset(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 4 << 10}
	d, _ := diskLog(t, cfg)
	epoch := d.Epoch()
	more := testReset(t, d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, rec := diskLog(t, cfg)
	if rec.NewEpoch != "" || d2.Epoch() != epoch {
		t.Fatalf("reopened after a reset: %+v, epoch %d, want epoch %d kept", rec, d2.Epoch(), epoch)
	}
	checkHolds(t, d2, more)
	last := more[len(more)-1]
	if seq, ts := d2.Tail(); seq != last.Seq || ts != last.Time {
		t.Fatalf("tail after reopening: %d %d, want %d %d", seq, ts, last.Seq, last.Time)
	}
}

// TestDiskLogConfiguredEpoch: a disk log created under a configured epoch
// has it; one that holds another epoch refuses to open (ErrOtherEpoch).
func TestDiskLogConfiguredEpoch(t *testing.T) {
	dir := t.TempDir()
	d, _ := diskLog(t, DiskConfig{Dir: dir, Config: Config{Epoch: 42}})
	if d.Epoch() != 42 {
		t.Fatalf("epoch %d, want the configured 42", d.Epoch())
	}
	d.Close()
	if _, _, err := Open(DiskConfig{Dir: dir, Config: Config{Epoch: 43}}); !errors.Is(err, ErrOtherEpoch) {
		t.Fatalf("open under another epoch: %v, want ErrOtherEpoch", err)
	}
}

// TestDiskResetDeleteFails: a Reset that cannot delete one of the log's
// segment files (the first, a middle one, the newest; the files read back
// at open, or written since) fails the log (ErrFailed: appends refused
// until it is opened again) and leaves memory as its files: nothing held,
// standing after the Reset's seq, and the files left (from the one it
// could not delete) not served, by a copy opened as a crash would leave
// it. A sync after it (the interval policy's, every second) made the
// checkpoint say the log was synced to the Reset's seq, past what the
// files left hold, and the next start refused the log as corrupt; now it
// opens, empty, and takes appends, which a further restart holds.
func TestDiskResetDeleteFails(t *testing.T) {
	const files = 4
	for failAt := range files {
		for _, mapped := range []bool{false, true} {
			name := fmt.Sprintf("fail at file %d, mapped %v", failAt, mapped)
			var seen int
			refuse := func(path string) error {
				if strings.HasSuffix(path, ".seg") {
					if seen++; seen == failAt+1 {
						return fmt.Errorf("remove %s: %w", filepath.Base(path), fs.ErrPermission)
					}
				}
				return os.Remove(path)
			}
			cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 1, Fsync: FsyncPolicy{Interval: time.Hour}} // a file a batch
			d, _, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			w := newWriter(uint64(61 + failAt))
			for range files {
				seq, ts := d.Tail()
				if err := d.Append(w.batch(3, 10, seq, ts)); err != nil {
					t.Fatal(err)
				}
			}
			if mapped {
				d.crash()
				d.mem.unmapAll()
			} else {
				d.Close()
			}
			cfg.remove = refuse
			if d, _, err = Open(cfg); err != nil {
				t.Fatal(err)
			}
			cfg.remove = nil
			if len(d.segs) != files {
				t.Fatalf("%s: %d segment files, want %d", name, len(d.segs), files)
			}
			seq, ts := d.Tail()
			if err := d.Reset(seq+10, ts+10); !errors.Is(err, ErrFailed) || !errors.Is(err, fs.ErrPermission) {
				t.Fatalf("%s: reset: %v, want ErrFailed with the deletion's cause", name, err)
			}
			checkHolds(t, d, nil)
			if s, st := d.Tail(); s != seq+10 || st != ts+10 {
				t.Errorf("%s: tail %d at %d after the failed reset, want %d at %d", name, s, st, seq+10, ts+10)
			}
			if err := d.Append(w.batch(1, 10, seq+10, ts+10)); !errors.Is(err, ErrFailed) {
				t.Errorf("%s: append after the failed reset: %v, want ErrFailed", name, err)
			}
			crashed := t.TempDir() // the files as a crash now would leave them
			copyDir(t, cfg.Dir, crashed)
			if d2, _, err := Open(DiskConfig{Dir: crashed}); err != nil {
				t.Fatalf("%s: open the files the failed reset left: %v", name, err)
			} else {
				checkHolds(t, d2, nil)
				d2.Close()
			}
			// The sync loop's next pass, then a restart.
			d.Sync()
			d.crash()
			d.mem.unmapAll()
			d, rec, err := Open(cfg)
			if err != nil {
				t.Fatalf("%s: reopen after the failed reset and a sync: %v", name, err)
			}
			if rec.MissingLast != 0 || rec.NewEpoch != "" {
				t.Errorf("%s: reopened %+v, want no history reported lost", name, rec)
			}
			checkHolds(t, d, nil)
			s, st := d.Tail()
			more := w.batch(2, 10, s, st)
			if err := d.Append(more); err != nil {
				t.Fatalf("%s: append after the restart: %v", name, err)
			}
			d.crash()
			if d, _, err = Open(cfg); err != nil {
				t.Fatalf("%s: reopen: %v", name, err)
			}
			checkHolds(t, d, more)
			d.Close()
		}
	}
}

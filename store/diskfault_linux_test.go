package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestDiskFaultsWhileRunning: the disk under a log fails while it is
// appended to, on a real ext4 (a loop device): it turns read-only under
// the writer (ext4 finding an error, errors=remount-ro), or every I/O
// fails with EIO (the device gone: ext4 shut down, its journal's
// uncommitted writes lost). Under each fsync policy, with segments sealed
// and begun as it runs. Every append after the fault is refused with
// ErrNotWritable or ErrFailed; readers are served only what was appended
// whole; and the file system mounted again opens to a consistent log
// (gapless, each message as appended) that holds every message an ack
// promised to keep (under always, those Durable confirmed; under the
// interval policy, those a Sync covered) and takes appends.
func TestDiskFaultsWhileRunning(t *testing.T) {
	faults := []struct {
		name  string
		fault func(*testdisk.Ext4)
	}{
		{"read-only", (*testdisk.Ext4).Error},
		{"EIO", (*testdisk.Ext4).Shutdown},
	}
	// Writes lagging (a cell member's log, WriteBehind): its segments are
	// sealed on its writer too (seal.go), as the fault comes.
	policies := []struct {
		name   string
		always bool
		behind int
	}{{"always", true, 0}, {"interval", false, 0}, {"interval-writebehind", false, 4 << 10}}
	for _, fault := range faults {
		for _, policy := range policies {
			always := policy.always
			t.Run(fault.name+"/"+policy.name, func(t *testing.T) {
				disk := testdisk.NewExt4(t, "32M")
				cfg := DiskConfig{Dir: filepath.Join(disk.Dir, "log"), SegmentBytes: 16 << 10,
					Fsync: FsyncPolicy{Always: always, Interval: time.Hour}, WriteBehind: policy.behind}
				d, _, err := Open(cfg)
				if err != nil {
					t.Fatal(err)
				}
				w := newWriter(7)
				var appended []Entry // every batch Append took, in order
				var kept uint64      // the last message an ack promised to keep
				// The writer stops after 300 appends while the fault is
				// made: an fsync running as ext4 aborts its journal may
				// answer success for writes it then drops (seen with
				// either fault, a few runs in ten), a window of the
				// kernel's no program can tell from a sync that held.
				reached := make(chan struct{}) // 300 appends tried
				faulted := make(chan struct{})
				done := make(chan []error)
				go func() {
					var errs []error
					n := 0
					for len(errs) < 20 {
						seq, ts := d.Tail()
						b := w.batch(1+int(w.rng.IntN(4)), 300, seq, ts)
						err := d.Append(b)
						if err == nil {
							appended = append(appended, b...)
							last := b[len(b)-1].Seq
							if always {
								err = d.Durable(last)
							} else if w.rng.IntN(8) == 0 {
								err = d.Sync()
							} else {
								last = kept
							}
							if err == nil {
								kept = last
							}
						}
						if err != nil {
							select {
							case <-faulted:
							default:
								t.Errorf("before the fault: %v", err)
							}
							errs = append(errs, err)
						}
						if n++; n == 300 {
							close(reached)
							<-faulted
						}
						// Readers see only what was appended whole.
						got, _, _ := d.After(d.Last()-min(d.Last(), 8), 8, nil)
						for _, m := range got {
							if i := int(m.Seq - 1); i >= len(appended) || m.ID != appended[i].ID || !bytes.Equal(m.Body, appended[i].Body) {
								t.Errorf("served message %d is not the one appended", m.Seq)
							}
						}
					}
					done <- errs
				}()
				<-reached
				fault.fault(disk)
				close(faulted)
				errs := <-done
				for _, err := range errs {
					if !errors.Is(err, ErrNotWritable) && !errors.Is(err, ErrFailed) {
						t.Errorf("after the fault: %v, want ErrNotWritable or ErrFailed", err)
					}
				}
				t.Logf("%d messages appended, %d kept by an ack; then: %v", len(appended), kept, errs[0])
				d.Close()

				disk.Remount()
				d2, rec, err := Open(cfg)
				if err != nil {
					t.Fatalf("open after the fault, mounted again: %v", err)
				}
				defer d2.Close()
				if rec.ReadOnly != nil {
					t.Fatalf("opened read-only after the fault, mounted again: %v", rec.ReadOnly)
				}
				got, _, _ := d2.After(0, len(appended)+1, nil)
				if len(got) < int(kept) {
					t.Fatalf("read back %d messages, but %d were kept by an ack (recovery %+v)", len(got), kept, rec)
				}
				for i, m := range got {
					if m.Seq != uint64(i+1) || i >= len(appended) || m.ID != appended[i].ID || !bytes.Equal(m.Body, appended[i].Body) {
						t.Fatalf("message %d read back is not the one appended as %d", m.Seq, i+1)
					}
				}
				seq, ts := d2.Tail()
				if err := d2.Append(w.batch(2, 300, seq, ts)); err != nil {
					t.Fatalf("append after the fault, mounted again: %v", err)
				}
				t.Logf("read back %d messages (%d kept by an ack), recovery %+v", len(got), kept, rec)
			})
		}
	}
}

// TestDiskWriteFailsUndone: the device gone (every I/O failing with EIO)
// as a record is written: the write fails, and so does the cut-back of
// what part of it reached the file. The append that wrote it fails with
// ErrFailed and ErrMaybeWritten (its sender must be told the messages may
// be stored, and retry them under the same IDs: it was told nothing was
// stored); the appends after it with ErrFailed alone.
func TestDiskWriteFailsUndone(t *testing.T) {
	disk := testdisk.NewExt4(t, "32M")
	d, _, err := Open(DiskConfig{Dir: filepath.Join(disk.Dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w := newWriter(5)
	w.fill(t, d, 10, 100)
	disk.Shutdown()
	seq, ts := d.Tail()
	err = d.Append(w.batch(1, 100, seq, ts))
	if !errors.Is(err, ErrFailed) || !errors.Is(err, ErrMaybeWritten) {
		t.Fatalf("the append whose write failed and could not be cut back: %v, want ErrFailed and ErrMaybeWritten", err)
	}
	err = d.Append(w.batch(1, 100, seq, ts))
	if !errors.Is(err, ErrFailed) || errors.Is(err, ErrMaybeWritten) {
		t.Fatalf("an append after: %v, want ErrFailed alone", err)
	}
}

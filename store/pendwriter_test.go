package store

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDiskWriteBehindOffTheAppends: the append that finds WriteBehind
// bytes pending hands them to the log's writer and returns before they
// are written (in a cell, raft's apply goroutine no longer waits for the
// pwrite, and every send with it); appends go on meanwhile, readers see
// them, and a sync waits for the write out, writes the rest and makes the
// log whole. Inline, as before, the file grew in the append itself.
func TestDiskWriteBehindOffTheAppends(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 1 << 20, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour},
		writeBehind: func(f *os.File, p []byte, off int64) (int, error) {
			entered <- struct{}{}
			<-release
			return f.WriteAt(p, off)
		}}
	d, _ := diskLog(t, cfg)
	w := newWriter(21)
	all := fillUntilOut(t, d, w)
	<-entered
	if got := dirBytes(t, cfg.Dir); got != segHeaderSize {
		t.Fatalf("the segment holds %d bytes while the writer's write is held, want the header alone (%d): the append wrote them itself", got, segHeaderSize)
	}
	// Appends go on while the write is out (up to twice WriteBehind
	// pending: then they wait for it).
	all = append(all, w.fill(t, d, 20, 200)...)
	checkHolds(t, d, all)
	synced := make(chan error, 1)
	go func() { synced <- d.Sync() }()
	close(release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	d.crash() // nothing pending is left to lose
	d2, rec := diskLog(t, cfg)
	if rec.TornBytes != 0 {
		t.Fatalf("reopened: %+v, want nothing torn", rec)
	}
	checkHolds(t, d2, all)
}

// TestDiskWriteBehindWriteFails: a write of the writer's that fails (a
// full disk, half of it written) is cut back, and its records are pending
// again, before those appended since: a crash then leaves nothing torn,
// and the log reads back as a prefix of what was appended. Otherwise the
// next write is inline, by the append that finds WriteBehind bytes
// pending, and the log, synced, reads back whole, nothing twice.
func TestDiskWriteBehindWriteFails(t *testing.T) {
	for _, crash := range []bool{true, false} {
		t.Run(fmt.Sprint("crash=", crash), func(t *testing.T) {
			failed := make(chan struct{})
			cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 1 << 20, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour},
				writeBehind: func(f *os.File, p []byte, off int64) (int, error) {
					select {
					case <-failed:
						return f.WriteAt(p, off)
					default:
					}
					n, _ := f.WriteAt(p[:len(p)/2], off)
					close(failed)
					return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
				}}
			d, _ := diskLog(t, cfg)
			w := newWriter(22)
			all := fillUntilOut(t, d, w)
			<-failed
			d.wmu.Lock()
			err := d.settle()
			d.wmu.Unlock()
			if err != nil {
				t.Fatalf("settle after the failed write: %v", err)
			}
			if !crash {
				all = append(all, w.fill(t, d, 2000, 200)...)
				if err := d.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			d.crash()
			d2, rec := diskLog(t, cfg)
			if rec.TornBytes != 0 {
				t.Fatalf("reopened: %+v, want nothing torn (the failed write cut back)", rec)
			}
			got, _, _ := d2.After(0, len(all)+1, nil)
			if !crash && len(got) != len(all) {
				t.Fatalf("reopened with %d messages after a sync, want the %d appended", len(got), len(all))
			}
			checkHolds(t, d2, all[:len(got)])
			appendRest(t, cfg, d2, all, len(got))
		})
	}
}

// fillUntilOut appends one message at a time until the log's writer has a
// write out, and returns them.
func fillUntilOut(t *testing.T, d *DiskLog, w *writer) []Entry {
	t.Helper()
	var all []Entry
	for out := false; !out; {
		all = append(all, w.fill(t, d, 1, 200)...)
		if len(all) > 10000 {
			t.Fatal("10,000 messages appended and none handed to the writer")
		}
		d.wmu.Lock()
		out = d.wr.out
		d.wmu.Unlock()
	}
	return all
}

// TestDiskWriteBehindHoldsGate: the writer's write holds the record gate
// of the log's file system for reading while the gate is open too, so
// that a log making room on a full disk (which takes it alone) cannot
// begin while the write is under way. It looked at whether the gate was
// shut, and wrote ungated if not: between the look and the write the
// disk could refuse another log's record and that log delete its files
// for it, and the write take the room.
func TestDiskWriteBehindHoldsGate(t *testing.T) {
	held := make(chan bool, 1)
	writerTestWrite = func(g *gate) {
		alone := g.mu.TryLock()
		if alone {
			g.mu.Unlock()
		}
		select {
		case held <- !alone:
		default:
		}
	}
	t.Cleanup(func() { writerTestWrite = nil })
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 1 << 20, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	if d.gate.shut.Load() {
		t.Fatal("the gate is shut before the test")
	}
	fillUntilOut(t, d, newWriter(23))
	if !<-held {
		t.Fatal("a log could take the record gate alone while the writer wrote, the gate open")
	}
}

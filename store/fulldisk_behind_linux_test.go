package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// The reserve (reserve.go) of a log whose writes lag (WriteBehind), as a
// cell member's do: its appends leave their records pending, and a sync or
// an append past WriteBehind writes them all.

// filledBehindLog opens a log on a small disk of its own, writes
// lagging, with a reserve; appends 10 messages, synced; and fills the
// disk. It returns the log, its config and the messages acknowledged.
func filledBehindLog(t *testing.T) (*DiskLog, DiskConfig, []Entry) {
	t.Helper()
	mnt, fill := testdisk.Small(t, "4m")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "g"), Config: Config{MaxMessages: 100000}, Reserve: 512 << 10, WriteBehind: 64 << 10}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.resSize != cfg.Reserve {
		t.Fatalf("the log's reserve is %d bytes, want %d", d.resSize, cfg.Reserve)
	}
	var acked []Entry
	appendN(t, d, 10, &acked)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	fill()
	return d, cfg, acked
}

// appendN appends n messages of 1000 bytes to d, each acknowledged into
// *acked.
func appendN(t *testing.T, d *DiskLog, n int, acked *[]Entry) {
	t.Helper()
	for range n {
		seq, ts := d.Tail()
		k := len(*acked) + 1
		e := Entry{Seq: seq + 1, Time: ts + 1000, ID: id(k), From: sender(1), Body: bytes.Repeat([]byte{byte(k)}, 1000)}
		if err := d.Append([]Entry{e}); err != nil {
			t.Fatalf("append %d (below its limits, its reserve %d bytes) on the full disk: %v", k, d.resSize, err)
		}
		*acked = append(*acked, e)
	}
}

// readBack closes d, opens cfg again and checks it holds acked.
func readBack(t *testing.T, d *DiskLog, cfg DiskConfig, acked []Entry) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	r, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _, _ := r.After(0, len(acked)+10, nil)
	if len(got) != len(acked) {
		t.Fatalf("read back %d messages, acknowledged %d", len(got), len(acked))
	}
	for i, m := range got {
		if m.Seq != acked[i].Seq || !bytes.Equal(m.Body, acked[i].Body) {
			t.Fatalf("message %d read back as %d, want %d as acknowledged", i, m.Seq, acked[i].Seq)
		}
	}
}

// TestDiskFullBehindSyncReserve: on a full disk, a sync of a log whose
// writes lag writes its pending records into the reserve, as an append
// would. Until session 17 the sync wrote them straight (fsync -> write),
// never through the gate and the reserve: it failed (ErrNotWritable,
// ENOSPC) while the appends went on into memory, so a cell member's
// snapshot (Persist syncs every group's log) and its interval syncs were
// refused with the reserve unspent.
func TestDiskFullBehindSyncReserve(t *testing.T) {
	d, cfg, acked := filledBehindLog(t)
	appendN(t, d, 20, &acked) // ~20 KB: pending, below WriteBehind
	before := d.resSize
	if err := d.Sync(); err != nil {
		t.Fatalf("sync of 20 pending records on the full disk, its reserve %d bytes: %v", before, err)
	}
	if d.resSize >= before {
		t.Errorf("the reserve is %d bytes after the sync, %d before: the records were written elsewhere?", d.resSize, before)
	}
	d.wmu.Lock()
	pend := len(d.pend)
	d.wmu.Unlock()
	if pend != 0 {
		t.Errorf("%d bytes still pending after the sync", pend)
	}
	// And the appends after it go on into what is left.
	appendN(t, d, 5, &acked)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	readBack(t, d, cfg, acked)
}

// TestDiskFullBehindReserveCutOnce: where the disk refuses the append
// that writes what is pending, the reserve is cut once, by what is
// pending and the record. Until session 17 it was cut by the record's
// size alone, and the write of everything pending (up to WriteBehind
// bytes, and as much again) tried again after each cut: a write refused,
// its part written cut back, some seventeen times for 64 KiB pending.
func TestDiskFullBehindReserveCutOnce(t *testing.T) {
	d, cfg, acked := filledBehindLog(t)
	// The gate shut, as after a refusal: the records are written inline,
	// by the append that finds WriteBehind bytes pending (pendwriter.go).
	d.gate.shut.Store(true)
	t.Cleanup(func() { d.gate.shut.Store(false) })
	cuts := 0
	reserveTestCut = func(int64) { cuts++ } // under d.wmu, and the gate alone
	t.Cleanup(func() { reserveTestCut = nil })
	for cuts == 0 && len(acked) < 200 {
		appendN(t, d, 1, &acked)
	}
	if cuts != 1 {
		t.Errorf("the append that wrote %d records on the full disk cut the reserve %d times, want once", len(acked)-10, cuts)
	}
	readBack(t, d, cfg, acked)
}

// TestDiskFullBehindJobGated: a background write handed off while the
// record gate was open, and reaching the file once it has shut and another
// log holds it to make room, is not written from under that log (the room
// it made is its own): it fails, and its records are written inline
// through the gate after. Until session 17 the writer wrote it ungated.
func TestDiskFullBehindJobGated(t *testing.T) {
	mnt, _ := testdisk.Small(t, "4m")
	var writes atomic.Int64
	cfg := DiskConfig{Dir: filepath.Join(mnt, "g"), Config: Config{MaxMessages: 100000}, WriteBehind: 16 << 10,
		writeBehind: func(f *os.File, p []byte, off int64) (int, error) {
			writes.Add(1)
			return f.WriteAt(p, off)
		}}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	writerTestJob = func() { // holds the first job only
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
	}
	t.Cleanup(func() { writerTestJob = nil })
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	var acked []Entry
	// Appends until one hands a job off (not while it is held: with as
	// much again pending, an append waits for it).
	for out := false; !out; {
		if len(acked) > 100 {
			t.Fatal("100 KB appended and no write handed to the writer")
		}
		appendN(t, d, 1, &acked)
		d.wmu.Lock()
		out = d.wr.out
		d.wmu.Unlock()
	}
	<-entered
	// The job is out; the gate shuts, and another log holds it alone.
	g := d.gate
	g.shut.Store(true)
	g.mu.Lock()
	close(release)
	d.wmu.Lock()
	d.settle()
	failed := d.wr.failed
	d.wmu.Unlock()
	g.mu.Unlock()
	g.shut.Store(false)
	if n := writes.Load(); n != 0 || !failed {
		t.Fatalf("the job out while another log held the gate: %d writes, failed %v; want none, failed", n, failed)
	}
	appendN(t, d, 3, &acked)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	readBack(t, d, cfg, acked)
}

// TestDiskFullBehindRefusedAtNextAppend: once a write of a log whose
// writes lag is refused (here a sync's, on a full disk with no reserve),
// the next append writes inline, and is refused too, though far less
// than WriteBehind is pending: a cell's state machine stalls on it at
// once. Until session 22 the appends went on into memory until
// WriteBehind bytes were pending, and only that append met the refusal:
// a cell leader whose group logs' disk was full acknowledged sends for
// over a minute at a loaded workload's pace (internal/jepsen
// TestCellFaults, disk-logs). Once the disk has room the appends go on,
// and every one acknowledged is read back.
func TestDiskFullBehindRefusedAtNextAppend(t *testing.T) {
	mnt, fill := testdisk.Small(t, "4m")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "g"), Config: Config{MaxMessages: 100000}, Reserve: -1, WriteBehind: 64 << 10}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	var acked []Entry
	appendN(t, d, 10, &acked)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	free := fill()
	appendN(t, d, 5, &acked) // 5 KB pending: more than the last page's rest
	if err := d.Sync(); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("sync of 5 KB pending on the full disk with no reserve: %v, want ErrNotWritable", err)
	}
	seq, ts := d.Tail()
	e := Entry{Seq: seq + 1, Time: ts + 1000, ID: id(len(acked) + 1), From: sender(1), Body: []byte("after the refusal")}
	if err := d.Append([]Entry{e}); !errors.Is(err, ErrNotWritable) {
		d.wmu.Lock()
		pend := len(d.pend)
		d.wmu.Unlock()
		t.Fatalf("the append after a refused sync, %d bytes pending of WriteBehind %d: %v, want ErrNotWritable", pend, cfg.WriteBehind, err)
	}
	free()
	appendN(t, d, 3, &acked)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	readBack(t, d, cfg, acked)
}

package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestDiskFullRoomNotTaken: a log at its count limit on a full disk
// deletes its oldest file to make room for a send (room.go), and another
// log of the process, below its own limit, appends at that moment. The
// other log must not take the room: it waits until the first has written
// its record. (It did take it, and the first log's append was refused with
// its oldest messages already gone: the log held fewer than its limit, and,
// below it, made no more room, so it stayed refused while the disk stayed
// full.)
func TestDiskFullRoomNotTaken(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	const limit = 80
	a, _, err := Open(DiskConfig{Dir: filepath.Join(mnt, "a"), Config: Config{MaxMessages: limit}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _, err := Open(DiskConfig{Dir: filepath.Join(mnt, "b"), Config: Config{MaxMessages: 100 * limit}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	add := func(d *DiskLog, n int) error {
		seq, ts := d.Tail()
		return d.Append([]Entry{{Seq: seq + 1, Time: ts + 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}})
	}
	for n := 1; n <= limit; n++ {
		if err := add(a, n); err != nil {
			t.Fatal(err)
		}
	}
	defer fill()()
	// The room a made, taken by b until it is refused; or b waits at the
	// gate while a writes into it.
	bDone := make(chan error, 1)
	bWaits := make(chan struct{})
	roomTestWait = func() { close(bWaits); roomTestWait = nil }
	roomTestMade = func() {
		roomTestMade = nil
		go func() {
			var err error
			for n := 1; err == nil; n++ {
				err = add(b, n)
			}
			bDone <- err
		}()
		select {
		case <-bWaits:
		case err := <-bDone:
			t.Logf("b appended into the room a made until: %v", err)
			bDone <- err
		}
	}
	defer func() { roomTestWait, roomTestMade = nil, nil }()
	if err := add(a, limit+1); err != nil {
		t.Errorf("append at the retention limit on the full disk, another log appending meanwhile: %v, want the room made for it", err)
	}
	// What retention keeps of the same appends, disk or not.
	m, err := New(Config{MaxMessages: limit})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= limit+1; n++ {
		if err := m.Append([]Entry{{Seq: uint64(n), Time: int64(n) * 1000, ID: id(n), From: sender(1), Body: []byte{1}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := a.Stats(), m.Stats(); got.Messages != want.Messages || got.Last != want.Last {
		t.Errorf("the log holds %d messages to %d, want %d to %d, as retention keeps", got.Messages, got.Last, want.Messages, want.Last)
	}
	if err := <-bDone; !errors.Is(err, ErrNotWritable) {
		t.Errorf("the other log, below its limit, on the full disk: %v, want ErrNotWritable", err)
	} else if n := strings.Count(err.Error(), segName(1)); n != 1 {
		t.Errorf("the refusal %q names its file %d times, want once", err, n)
	}
}

// TestDiskFullCopyOutsideGate: a log read back at a restart (its files
// mapped) makes room on a full disk; the copies that take its files'
// mappings' place before they are deleted are made without the gate, so
// that the other logs' records do not wait for them (50-240 ms for a file
// of 64 MiB on the loaded test machine); and so are the copies of the
// mappings already retired (their files deleted, waiting out their
// grace), put in place with the gate held, where their space comes back
// (until session 17 they were copied with it held).
func TestDiskFullCopyOutsideGate(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	const limit = 80
	cfg := DiskConfig{Dir: filepath.Join(mnt, "a"), Config: Config{MaxMessages: limit}}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	add := kbAppender(d, 0)
	for range limit {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	if d, _, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	add = kbAppender(d, limit)
	// Retention deletes the two oldest files read back: their mappings
	// are retired.
	for range 2 * limit / 8 {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	var retired []*mapping
	for _, r := range d.mem.retired {
		retired = append(retired, r.m)
	}
	if len(retired) == 0 {
		t.Fatal("no mapping retired: the test did not make retention delete a mapped file")
	}
	defer fill()()
	copies := 0
	detachTestCopying = func() {
		copies++
		if !d.gate.mu.TryRLock() {
			t.Error("a mapping is copied with the gate held: every log's records wait for the copy")
			return
		}
		d.gate.mu.RUnlock()
	}
	defer func() { detachTestCopying = nil }()
	if err := add(); err != nil {
		t.Fatalf("append at the retention limit on the full disk: %v", err)
	}
	if copies <= len(retired) {
		t.Fatalf("%d mappings copied, want the %d retired and one held at least", copies, len(retired))
	}
	for i, m := range retired {
		if !m.detached {
			t.Errorf("retired mapping %d not detached: its space did not come back", i)
		}
	}
}

// TestDiskFullGateReopens: the gate a full disk shut (room.go) opens
// again once its file system has room, so that records no longer take its
// lock; until then, records written through it leave it shut. (Until
// session 17 it stayed shut for the process's life.)
func TestDiskFullGateReopens(t *testing.T) {
	mnt, fill := testdisk.Small(t, "4m")
	const limit = 80
	d, _, err := Open(DiskConfig{Dir: filepath.Join(mnt, "a"), Config: Config{MaxMessages: limit}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	add := kbAppender(d, 0)
	for range limit {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	// The device number of an earlier test's tmpfs, unmounted, may be
	// this one's: its gate is taken as new.
	d.gate.shut.Store(false)
	free := fill()
	// At its limit, the log makes room for each send from its oldest
	// files: the first refusal shuts the gate, the disk stays full.
	for range limit {
		if err := add(); err != nil {
			t.Fatalf("append at the retention limit on the full disk: %v", err)
		}
	}
	if !d.gate.shut.Load() {
		t.Fatal("the gate is open on the full disk: the disk refused no record")
	}
	free()
	deadline := time.Now().Add(10 * gateEvery)
	sent := 0
	for d.gate.shut.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the gate is still shut %v after the disk had room again (%d sends since)", 10*gateEvery, sent)
		}
		if err := add(); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	t.Logf("the gate opened after %d sends with room", sent)
}

// kbAppender returns a function that appends to d the next of a run of
// messages of 1000 bytes from one sender, numbered from after, each body
// its number's byte.
func kbAppender(d *DiskLog, after int) func() error {
	n := after
	return func() error {
		seq, ts := d.Tail()
		n++
		return d.Append([]Entry{{Seq: seq + 1, Time: ts + 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}})
	}
}

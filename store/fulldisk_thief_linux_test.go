package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

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
// of 64 MiB on the loaded test machine). The copies of mappings already
// retired (their files deleted) are still made with the gate held: their
// space comes back as they are put in place.
func TestDiskFullCopyOutsideGate(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	const limit = 80
	cfg := DiskConfig{Dir: filepath.Join(mnt, "a"), Config: Config{MaxMessages: limit}}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	add := func(n int) error {
		seq, ts := d.Tail()
		return d.Append([]Entry{{Seq: seq + 1, Time: ts + 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}})
	}
	for n := 1; n <= limit; n++ {
		if err := add(n); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	if d, _, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer fill()()
	copies := 0
	detachTestCopying = func() {
		copies++
		if !roomGate.mu.TryRLock() {
			t.Error("a mapping is copied with the gate held: every log's records wait for the copy")
			return
		}
		roomGate.mu.RUnlock()
	}
	defer func() { detachTestCopying = nil }()
	if err := add(limit + 1); err != nil {
		t.Fatalf("append at the retention limit on the full disk: %v", err)
	}
	if copies == 0 {
		t.Fatal("no mapping was copied: the test did not make room from a mapped file")
	}
}

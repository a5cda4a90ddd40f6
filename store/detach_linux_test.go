package store

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openMapped returns a log whose 100 messages (bodies of 1000 bytes, each
// its number's byte) were read back from its files, mapped.
func openMapped(t *testing.T) *DiskLog {
	t.Helper()
	cfg := DiskConfig{Dir: t.TempDir(), Config: Config{MaxMessages: 1000}}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 100; n++ {
		if err := d.Append([]Entry{{Seq: uint64(n), Time: int64(n) * 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}}); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	if d, _, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	return d
}

func checkBodies(t *testing.T, ms []Message) {
	t.Helper()
	if len(ms) != 100 {
		t.Errorf("read %d messages, want 100", len(ms))
	}
	for _, m := range ms {
		if len(m.Body) != 1000 || m.Body[0] != byte(m.Seq) || m.Body[999] != byte(m.Seq) {
			t.Errorf("message %d reads a body not its own", m.Seq)
			return
		}
	}
}

// TestDetachCopiesWithoutLock: the copy that takes a mapped file's place
// before the file is deleted for room on a full disk (room.go) is made
// without the log's lock, which the lookups of every send (Lookup, Tail)
// and a cell's status take: they waited for the copy of each file (50-240
// ms for 64 MiB on the loaded test machine; the lock was held from the
// copy's start to its mremap). Readers meanwhile, and after, read every
// body as it was.
func TestDetachCopiesWithoutLock(t *testing.T) {
	d := openMapped(t)
	defer d.Close()
	before, _, _ := d.After(0, 1000, nil)
	copies := 0
	detachTestCopying = func() {
		copies++
		if !d.mem.mu.TryLock() {
			t.Error("the log's lock is held while a mapping is copied: every send's lookup waits for the copy")
		} else {
			d.mem.mu.Unlock()
		}
		during, _, _ := d.After(0, 1000, nil)
		checkBodies(t, during)
	}
	defer func() { detachTestCopying = nil }()
	if err := d.mem.detachHeld(d.Last()); err != nil {
		t.Fatal(err)
	}
	if copies == 0 {
		t.Fatal("no mapping was copied")
	}
	for _, s := range d.mem.segs {
		if s.mapped == nil || !s.mapped.detached {
			t.Errorf("segment at %d: mapping not detached", s.base)
		}
	}
	checkBodies(t, before)
	after, _, _ := d.After(0, 1000, nil)
	checkBodies(t, after)
}

// TestDetachUnmappedMeanwhile: a mapping unmapped (Close) as its copy is
// begun, without the log's lock, is unmapped once the copy is done (the
// copy reads it: unmapped at once, the copy faults), and the copy dropped,
// not put at the addresses the mapping left (they would stay mapped for
// good).
func TestDetachUnmappedMeanwhile(t *testing.T) {
	d := openMapped(t)
	defer d.Close()
	slab := d.mem.segs[0].w.slab
	detachTestCopying = func() {
		detachTestCopying = nil
		d.mem.unmapAll()
	}
	defer func() { detachTestCopying = nil }()
	d.mem.detachHeld(d.Last())
	if m := d.mem.segs[0].mapped; !m.done || m.detached || m.detaching {
		t.Errorf("mapping done %v, detached %v, detaching %v; want it unmapped only", m.done, m.detached, m.detaching)
	}
	vec := make([]byte, (len(slab)+4095)/4096)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(slab))), uintptr(len(slab)), uintptr(unsafe.Pointer(&vec[0])))
	if err := error(errno); !errors.Is(err, unix.ENOMEM) {
		t.Errorf("the file's addresses after it was unmapped while copied: mincore %v, want ENOMEM (nothing mapped there)", err)
	}
}

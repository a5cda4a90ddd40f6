package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// mappedFrom counts the mappings of this process (/proc/self/maps) of
// files under dir.
func mappedFrom(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), dir+"/") {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// openFrom counts the files under dir this process has open.
func openFrom(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if to, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(to, dir+"/") {
			n++
		}
	}
	return n
}

// TestDiskOtherEpochUnmaps: an open refused because the directory holds
// another epoch's log (ErrOtherEpoch) leaves none of its files mapped, nor
// open.
// Until session 18 it closed the files but kept the history it had read
// back mapped: each refused open (a daemon trying again) leaked the log's
// size of address space.
func TestDiskOtherEpochUnmaps(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{Epoch: 42, MaxMessages: 4000}}
	d, _ := diskLog(t, cfg)
	newWriter(3).fill(t, d, 2000, 100)
	if openFrom(t, dir) == 0 {
		t.Fatal("the open log has none of its files open: openFrom cannot see them")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := mappedFrom(t, dir); n != 0 {
		t.Fatalf("%d mappings of the log's files after Close, want none", n)
	}
	cfg.Epoch = 43
	for i := range 3 {
		if _, _, err := Open(cfg); !errors.Is(err, ErrOtherEpoch) {
			t.Fatalf("open %d under another epoch: %v, want ErrOtherEpoch", i, err)
		}
		if n := mappedFrom(t, dir); n != 0 {
			t.Fatalf("%d mappings of the log's files after %d refused opens, want none", n, i+1)
		}
		if n := openFrom(t, dir); n != 0 {
			t.Fatalf("%d of the log's files open after %d refused opens, want none", n, i+1)
		}
	}
}

// TestDiskClosedAfterFailedClose: a log whose Close could not write what
// was pending (a full disk) answers every call after it with ErrClosed
// where it answers errors, finds no message where it reads (ErrClosed
// too), and never panics. Until session 18, Sync (or Durable) after such a Close wrote the
// pending records to the closed file (nil) and panicked naming it; a
// query returned the messages whose bodies Close had unmapped, a fault
// wherever they were read.
func TestDiskClosedAfterFailedClose(t *testing.T) {
	for _, always := range []bool{false, true} {
		t.Run(fmt.Sprintf("always=%v", always), func(t *testing.T) { testDiskClosedAfterFailedClose(t, always) })
	}
}

func testDiskClosedAfterFailedClose(t *testing.T, always bool) {
	mnt, fill := testdisk.Small(t, "4m")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "g"), Config: Config{MaxMessages: 100000}, Reserve: -1,
		WriteBehind: 64 << 10, Fsync: FsyncPolicy{Always: always, Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	var acked []Entry
	appendN(t, d, 10, &acked)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Opened again: the 10 messages are history read back, mapped.
	d, _ = diskLog(t, cfg)
	if ms, _ := mappings(d.mem); len(ms) == 0 {
		t.Fatal("the history read back is not mapped")
	}
	appendN(t, d, 20, &acked) // pending: below WriteBehind
	fill()
	// (Under FsyncPolicy.Always, not synced: nothing reads them yet.)
	if err := d.Close(); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("close with 20 records pending on a full disk: %v, want ErrNotWritable", err)
	}

	wantClosed := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrFailed) {
			t.Errorf("%s after Close: %v, want ErrClosed (and ErrFailed)", op, err)
		}
	}
	// Each call runs on its own, a panic its failure; a read of a body
	// unmapped faults as a panic (SetPanicOnFault), not a crash.
	call := func(op string, f func()) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s after Close panicked: %v", op, r)
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		f()
	}
	seq, ts := d.Tail()
	next := []Entry{{Seq: seq + 1, Time: ts + 1000, ID: id(1000), From: sender(1), Body: []byte("after")}}
	call("Sync", func() { wantClosed("Sync", d.Sync()) })
	call("Durable", func() {
		// Under the interval policy it waits for nothing: nil.
		if err := d.Durable(seq); always || err != nil {
			wantClosed("Durable", err)
		}
	})
	call("Append", func() { wantClosed("Append", d.Append(next)) })
	call("Reset", func() { wantClosed("Reset", d.Reset(seq+10, ts+10000)) })
	call("Expire", func() { d.Expire(time.Now().Add(time.Hour)) })
	read := func(op string, got []Message, cur Cursor, err error) {
		t.Helper()
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
		n := 0
		for _, m := range got {
			n += len(fmt.Sprintf("%x", m.Body)) // reads every body
		}
		if len(got) != 0 || cur.More {
			t.Errorf("%s after Close: %d messages (%d hex bytes of bodies), more %v; want none", op, len(got), n, cur.More)
		}
	}
	call("After", func() { got, cur, err := d.After(0, 100, nil); read("After", got, cur, err) })
	call("Since", func() { got, cur, err := d.Since(0, 100, nil); read("Since", got, cur, err) })
	call("queries", func() {
		d.Lookup(next, nil)
		d.Tail()
		d.Last()
		d.Stats()
		d.Changed()
		d.Epoch()
		d.Policy()
	})
	call("Close again", func() { d.Close() })
}

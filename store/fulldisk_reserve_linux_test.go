package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestDiskFullBelowLimitsReserve: a log below its limits on a disk the
// others fill, at theirs (a daemon's quiet group beside busy ones), takes
// its sends from its reserve (reserve.go): alone on the filled disk, then
// while the others delete their oldest files and write into the room for
// each of their sends. Without the reserve it makes no room (retention
// deletes none of its files) and is refused at once, then whenever the
// others have taken the pages they freed (session 16's TestDiskFullContended:
// none of 240 sends in a round). Every message it was acknowledged is read
// back after a restart.
func TestDiskFullBelowLimitsReserve(t *testing.T) {
	mnt, fill := testdisk.Small(t, "4m")
	const limit, others = 80, 3
	const reserve = 128 << 10
	open := func(name string, max int) (*DiskLog, DiskConfig) {
		t.Helper()
		cfg := DiskConfig{Dir: filepath.Join(mnt, name), Config: Config{MaxMessages: max}, Reserve: reserve}
		d, _, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d, cfg
	}
	quiet, qcfg := open("quiet", 100*limit)
	if quiet.resSize != reserve {
		t.Fatalf("the quiet log's reserve is %d bytes, want %d", quiet.resSize, reserve)
	}
	var busy [others]*DiskLog
	for i := range busy {
		busy[i], _ = open(fmt.Sprint("busy", i), limit)
	}
	var acked []Entry
	// add appends the message after the n sent to d so far.
	add := func(d *DiskLog, n *int) (Entry, error) {
		seq, ts := d.Tail()
		*n++
		e := Entry{Seq: seq + 1, Time: ts + 1000, ID: id(*n), From: sender(1), Body: bytes.Repeat([]byte{byte(*n)}, 1000)}
		return e, d.Append([]Entry{e})
	}
	qn := 0
	sendQuiet := func(k int) {
		t.Helper()
		for j := range k {
			e, err := add(quiet, &qn)
			if err != nil {
				t.Fatalf("the quiet log, below its limits, refused send %d of %d on the full disk: %v", j+1, k, err)
			}
			acked = append(acked, e)
		}
	}
	var bn [others]int
	for range limit {
		for i, d := range busy {
			if _, err := add(d, &bn[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	sendQuiet(10)
	free := fill()

	// Alone on the full disk: no other writer takes pages.
	sendQuiet(30)

	// The busy logs cycle their own room meanwhile.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	refused := 0
	var tries atomic.Int64 // the busy logs' appends, refused or not
	for i, d := range busy {
		wg.Go(func() {
			defer tries.Add(1 << 40) // unblocks the wait below if one stops
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := add(d, &bn[i])
				tries.Add(1)
				if err != nil {
					if !errors.Is(err, ErrNotWritable) {
						t.Errorf("a busy log: %v, want ErrNotWritable", err)
						return
					}
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}
		})
	}
	for j := range 20 {
		// Between two of its sends, the busy logs send a few each.
		for tries.Load() < int64(j*others*5) {
			runtime.Gosched()
		}
		e, err := add(quiet, &qn)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("the quiet log, below its limits, refused a send while the busy logs cycled: %v", err)
		}
		acked = append(acked, e)
	}
	close(stop)
	wg.Wait()
	t.Logf("the quiet log: 50 sends acknowledged on the full disk, its reserve %d bytes of %d left; the busy logs sent %d, %d refused", quiet.resSize, reserve, tries.Load()-others<<40, refused)

	// Room again: the reserve is made whole at the next send (tried at
	// most once a reserveEvery: the last try is forgotten here).
	free()
	quiet.wmu.Lock()
	quiet.resTried = time.Time{}
	quiet.wmu.Unlock()
	sendQuiet(1)
	if quiet.resSize != reserve {
		t.Errorf("with room again, the reserve is %d bytes, want %d", quiet.resSize, reserve)
	}

	if err := quiet.Close(); err != nil {
		t.Fatal(err)
	}
	d, _, err := Open(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, _, _ := d.After(0, 1000, nil)
	if len(got) != len(acked) {
		t.Fatalf("read back %d messages, acknowledged %d", len(got), len(acked))
	}
	for i, m := range got {
		if m.Seq != acked[i].Seq || !bytes.Equal(m.Body, acked[i].Body) {
			t.Fatalf("message %d read back as %d, want %d as acknowledged", i, m.Seq, acked[i].Seq)
		}
	}
}

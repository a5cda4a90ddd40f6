package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestDiskFullContended: four logs at their count limit share a disk that
// fills (a daemon's groups on one volume), each appended to at once while
// a reader reads it; then again after a crash and reopening, their files
// mapped, with bodies taken before the disk filled still held. Each log
// makes room by deleting its oldest file (room.go), and another may take
// the room before its record is written: then its append is refused
// (ErrNotWritable, never ErrFailed), and it holds fewer than its limit
// (the documented cost). Whatever the interleaving, each log holds its
// newest acknowledged message and the ones before it with no hole, no body
// read changes (detached mappings), and nothing faults (SIGBUS).
func TestDiskFullContended(t *testing.T) {
	mnt, fill := testdisk.Small(t, "640k")
	const limit, logs = 80, 4
	var ds [logs]*DiskLog
	var cfgs [logs]DiskConfig
	var all [logs][]Entry
	for i := range logs {
		cfgs[i] = DiskConfig{Dir: filepath.Join(mnt, fmt.Sprint("log", i)), Config: Config{MaxMessages: limit}}
		d, _, err := Open(cfgs[i])
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	add := func(i int) error {
		d := ds[i]
		seq, ts := d.Tail()
		n := len(all[i]) + 1
		e := Entry{Seq: seq + 1, Time: ts + 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}
		err := d.Append([]Entry{e})
		if err == nil {
			all[i] = append(all[i], e)
		}
		return err
	}
	for range limit {
		for i := range logs {
			if err := add(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := range 2 {
		if round == 1 {
			// Crash and reopen: the files read back are mapped.
			for i := range logs {
				ds[i].crash()
				ds[i].mem.unmapAll()
				d, _, err := Open(cfgs[i])
				if err != nil {
					t.Fatal(err)
				}
				ds[i] = d
			}
		}
		free := fill()
		var held [logs][]Message
		for i := range logs {
			held[i], _, _ = ds[i].After(0, limit, nil)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		refused, failed := 0, 0
		stop := make(chan struct{})
		var rg sync.WaitGroup
		for i := range logs {
			rg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					ms, _, _ := ds[i].After(0, limit, nil)
					for _, m := range ms {
						if len(m.Body) != 1000 || m.Body[0] != m.Body[999] {
							t.Errorf("log %d: message %d body torn", i, m.Seq)
							return
						}
					}
				}
			})
		}
		for i := range logs {
			wg.Go(func() {
				for range 3 * limit {
					if err := add(i); err != nil {
						mu.Lock()
						if !errors.Is(err, ErrNotWritable) {
							failed++
							t.Errorf("log %d: append on the full disk: %v, want ErrNotWritable", i, err)
						}
						refused++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		rg.Wait()
		for i := range logs {
			for j, m := range held[i] {
				if m.Body[0] != m.Body[999] || len(m.Body) != 1000 {
					t.Errorf("round %d log %d: held message %d changed", round, i, j)
				}
			}
			got, _, _ := ds[i].After(0, 10*limit, nil)
			last := all[i][len(all[i])-1]
			if len(got) == 0 || got[len(got)-1].Seq != last.Seq {
				t.Errorf("round %d log %d: holds %d messages, not the last acknowledged, %d", round, i, len(got), last.Seq)
			}
			for k := 1; k < len(got); k++ {
				if got[k].Seq != got[k-1].Seq+1 {
					t.Errorf("round %d log %d: hole after %d", round, i, got[k-1].Seq)
				}
			}
			t.Logf("round %d log %d: holds %d (limit %d), acked %d", round, i, len(got), limit, len(all[i]))
		}
		t.Logf("round %d: %d appends refused on the full disk (%d not ErrNotWritable)", round, refused, failed)
		free()
	}
	for i := range logs {
		ds[i].Close()
	}
}

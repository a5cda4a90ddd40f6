package store

import (
	"testing"
	"time"
)

// TestDiskRetentionRotationGated: the segment retention begins when an
// age limit has emptied the only one (retain) is written through the
// record gate, as a record's seal is: while another log holds the gate
// alone to make room on a full disk, it waits. It was written ungated,
// its pending records and the new segment's header taking the room that
// log had made for its own record.
func TestDiskRetentionRotationGated(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), Config: Config{MaxAge: time.Minute}, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	newWriter(82).fill(t, d, 20, 100) // stamped near 1970: all past the age limit
	g := d.gate
	waits := make(chan struct{}, 1)
	roomTestWait = func() {
		select {
		case waits <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { roomTestWait = nil; g.shut.Store(false) })
	// Another log makes room: the gate shut, and held alone.
	g.shut.Store(true)
	g.mu.Lock()
	expired := make(chan struct{})
	go func() {
		d.Expire(time.Now())
		close(expired)
	}()
	select {
	case <-waits:
	case <-expired:
		g.mu.Unlock()
		t.Fatal("the age-out's new segment was begun while another log held the record gate alone")
	case <-time.After(10 * time.Second):
		g.mu.Unlock()
		t.Fatal("the age-out neither waited at the gate nor returned 10 s on")
	}
	g.mu.Unlock()
	<-expired
	d.wmu.Lock()
	segs := len(d.segs)
	base := d.fbase
	d.wmu.Unlock()
	if segs != 1 || base != 21 {
		t.Fatalf("after the age-out: %d segment files, the active at %d, want one, at 21", segs, base)
	}
}

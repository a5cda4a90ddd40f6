package raftlog

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// heldSync makes s's first fsync a Sync runs wait until release is
// called, and records the file of every fsync (names, in order).
type heldSync struct {
	started chan struct{} // closed once the first fsync waits
	gate    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	names   []string
	held    bool
}

func holdSync(t *testing.T, s *Store) *heldSync {
	h := &heldSync{started: make(chan struct{}), gate: make(chan struct{})}
	s.syncFile = func(f *os.File) error {
		h.mu.Lock()
		first := !h.held
		h.held = true
		h.mu.Unlock()
		if first {
			close(h.started)
			<-h.gate
		}
		h.mu.Lock()
		h.names = append(h.names, filepath.Base(f.Name()))
		h.mu.Unlock()
		return f.Sync()
	}
	t.Cleanup(h.release)
	return h
}

func (h *heldSync) release() { h.once.Do(func() { close(h.gate) }) }

func (h *heldSync) synced() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.names...)
}

// syncAsync runs s.Sync on a goroutine, once the first fsync holds.
func syncAsync(t *testing.T, s *Store, h *heldSync) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Sync() }()
	select {
	case <-h.started:
	case <-time.After(10 * time.Second):
		t.Fatal("Sync did not fsync")
	}
	return done
}

// within fails t unless f returns within a deadlock's bound: f must not
// wait for the fsync held open.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s waited for the fsync of a Sync in progress", what)
	}
}

// TestSyncLeavesStoreGoing: while a Sync's fsync runs (held open here, as
// a busy disk held it 5-175 ms), raft stores and reads entries; before,
// the fsync ran under the store's lock and stopped raft's loop, the
// leader's storing its own entries included, for as long.
func TestSyncLeavesStoreGoing(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	h := holdSync(t, s)
	done := syncAsync(t, s, h)
	within(t, "StoreLogs", func() error { return s.StoreLogs(entries(11, 20, 1)) })
	within(t, "GetLog", func() error {
		var l raft.Log
		return s.GetLog(15, &l)
	})
	h.release()
	if err := <-done; err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkLog(t, s, 1, 20, term1)
}

// TestSyncAcrossRollover: a segment filled while a Sync's fsync of it ran
// is synced under the lock before the next is created (active), and Sync
// then syncs the new last segment: what was stored before it returns is
// on the device, whichever segment holds it.
func TestSyncAcrossRollover(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 2000})
	if err := s.StoreLogs(entries(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	first := filepath.Base(lastSegment(t, dir))
	h := holdSync(t, s)
	done := syncAsync(t, s, h)
	for i := uint64(6); i <= 60; i += 5 {
		within(t, "StoreLogs", func() error { return s.StoreLogs(entries(i, i+4, 1)) })
	}
	last := filepath.Base(lastSegment(t, dir))
	if last == first {
		t.Fatalf("still one segment (%s) after 60 entries, want a rollover (SegmentBytes 2000)", first)
	}
	h.release()
	if err := <-done; err != nil {
		t.Fatalf("Sync: %v", err)
	}
	names := h.synced()
	if len(names) == 0 || names[len(names)-1] != last {
		t.Fatalf("fsyncs %v: want the last segment %s synced last, by the Sync that began on %s", names, last, first)
	}
	checkLog(t, s, 1, 60, term1)
}

// TestSyncAfterTailDeleted: the segment a Sync was syncing is removed
// meanwhile (raft deleting a conflicting tail): Sync syncs the segment
// that is last now, and the store goes on.
func TestSyncAfterTailDeleted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 2000})
	for i := uint64(1); i <= 60; i += 5 {
		if err := s.StoreLogs(entries(i, i+4, 1)); err != nil {
			t.Fatal(err)
		}
	}
	gone := filepath.Base(lastSegment(t, dir))
	h := holdSync(t, s)
	done := syncAsync(t, s, h)
	within(t, "DeleteRange", func() error { return s.DeleteRange(30, 60) })
	if filepath.Base(lastSegment(t, dir)) == gone {
		t.Fatalf("%s still there after its entries were deleted", gone)
	}
	h.release()
	if err := <-done; err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := s.StoreLogs(entries(30, 40, 2)); err != nil {
		t.Fatalf("StoreLogs after the Sync: %v", err)
	}
	checkLog(t, s, 1, 40, func(i uint64) uint64 {
		if i >= 30 {
			return 2
		}
		return 1
	})
}

// TestSyncFailure: an fsync that fails outside the lock fails the store as
// one under it did: what did not reach the device is not known.
func TestSyncFailure(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	s.syncFile = func(*os.File) error { return syscall.EIO }
	if err := s.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync: %v, want EIO", err)
	}
	if err := s.StoreLogs(entries(11, 12, 1)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("StoreLogs after a failed sync: %v, want the sync's error", err)
	}
}

// TestSyncRacingFailedClose: a Sync whose fsync ran while Close synced and
// closed the store answers Close's fsync error, not success: what it
// promises (everything stored before it was called on the device) rested
// on Close's fsync, and that failed. (Sync answered nil whenever the store
// was closed meanwhile, before it looked at the failure.)
func TestSyncRacingFailedClose(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	started, gate := make(chan struct{}), make(chan struct{})
	calls := 0
	s.syncFile = func(f *os.File) error {
		calls++ // the first under no lock, the second under Close's: never at once
		if calls == 1 {
			close(started)
			<-gate
			return f.Sync()
		}
		return syscall.EIO
	}
	done := make(chan error, 1)
	go func() { done <- s.Sync() }()
	<-started
	if err := s.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close: %v, want its fsync's EIO", err)
	}
	close(gate)
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync racing a Close whose fsync failed: %v, want EIO", err)
	}
}

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Room on a full disk. Retention deletes a segment file once it has
// evicted every message in it, and with count or byte limits only an
// append evicts: on a disk the log's own files had filled, no append was
// written, so nothing was evicted and the disk stayed full for good (an
// age limit evicts without appends: retain, Expire). So where the disk
// refuses an append's record (full, or over quota), the log makes room
// in two ways, then tries the append once more (makeRoom):
//
//   - The files retention has deleted but the log still maps (read back
//     at open, their space comes back only once unmapped, mapGrace after
//     their last message was evicted: mapped.go) are detached: a copy in
//     anonymous memory takes the mapping's place, and the space comes back
//     at once. Nothing more is dropped.
//   - If retention, with the batch stored, would delete the oldest files,
//     they are deleted first (detached first if mapped), as retention
//     would delete them after the append, where their size is more than
//     the record needs. Only messages retention drops once the batch is
//     stored go. Where the write fails all the same (another writer took
//     the room first: see the gate below), the append fails, and the log holds what retention
//     would keep had the batch been stored: the messages dropped do not
//     come back, and the log holds fewer than its limits until later
//     appends fill it.
//   - Where retention makes no room (the log is below its limits), or
//     not enough, the log's reserve does: a file kept for that, cut by
//     what the record needs (reserve.go).
//
// What retention keeps is never dropped: a disk that cannot hold it, with
// the part of the oldest file retention has already evicted (files are
// deleted whole: each begins with the sender dictionary its later records
// use), stays full until the operator frees room or lowers the limits
// (STORAGE.md, "Durability").

// The room made is the log's own. The files deleted give their space to
// the file system, where any writer may take it before the record is
// written: another log of the process, below its limits, appending at that
// moment. The log making room would then be refused with its oldest
// messages gone, holding fewer than its limits; and, below them, it makes
// no more room, so it stays refused while the others take every page their
// own retention frees. So once a disk has refused a record, the process's
// logs on that file system write their records through a gate: shared by
// every record written, held alone by a log making room, from the deletion
// (or the cut of its reserve) until its record is written. Before the
// first refusal the gate is open and costs one atomic load: a record
// already being written when the first log makes room may still take it.
// Writers outside the process, and the files a log writes beside its
// records (an index, the spare, the reserve), are not gated.
//
// The gate opens again once the file system has room: a record written
// through it looks, at most once a gateEvery, at the space free, and opens
// it if there is gateRoom (until session 17 it stayed shut for the
// process's life, every record taking its lock). Should the disk fill
// again, its first refusal shuts it again, as the first did. One
// gate per file system (device number): a full disk does not gate the
// logs on another.
type gate struct {
	shut    atomic.Bool // the disk has refused a record for want of room
	mu      sync.RWMutex
	checked atomic.Int64 // when its room was last looked at, shut (Unix ns)
}

// gateEvery is how often a shut gate's file system is looked at for room;
// gateRoom is the room that opens it: two reserves.
const (
	gateEvery = time.Second
	gateRoom  = 2 * DefaultReserve
)

// gates holds the gate of each file system a log of the process is on.
var gates struct {
	sync.Mutex
	m map[uint64]*gate
}

// gateOf returns the gate of the file system holding dir.
func gateOf(dir string) *gate {
	dev := deviceOf(dir)
	gates.Lock()
	defer gates.Unlock()
	g := gates.m[dev]
	if g == nil {
		if gates.m == nil {
			gates.m = make(map[uint64]*gate)
		}
		g = new(gate)
		gates.m[dev] = g
	}
	return g
}

// reopen opens the shut gate g if the file system holding dir has room
// again (gateRoom), looking at most once a gateEvery.
func (g *gate) reopen(dir string) {
	now := time.Now().UnixNano()
	last := g.checked.Load()
	if now-last < int64(gateEvery) || !g.checked.CompareAndSwap(last, now) {
		return
	}
	if free, ok := freeBytes(dir); ok && free >= gateRoom {
		g.shut.Store(false)
	}
}

// Test hooks: roomTestWait runs when a record waits at the shut gate,
// roomTestMade once makeRoom has deleted files, before the record is
// written again; detachTestCopying as a mapping's copy is begun.
var roomTestWait, roomTestMade, detachTestCopying func()

// recordRoom is record, and where the disk has no room for the record,
// makeRoom and record again, alone at the gate (see above). d.wmu is
// held.
func (d *DiskLog) recordRoom(batch []Entry) (int64, error) {
	var at int64
	var err error
	g := d.gate
	if err = d.throughGate(func() error {
		at, err = d.record(batch)
		return err
	}); err == nil || !noRoom(err) {
		return at, err
	}
	// The files to delete are detached (copied) before the gate is
	// taken, and the retired mappings copied: the others' records do
	// not wait for the copies.
	plan := d.planRoom(batch)
	g.mu.Lock()
	defer g.mu.Unlock()
	// The retired mappings' copies take their place: their files were
	// deleted, and the space comes back now, for this record.
	d.mem.placeCopies(plan.retired)
	// Room another log freed meanwhile is taken before any of this
	// log's messages is dropped for it.
	if at, err = d.record(batch); err == nil || !noRoom(err) {
		return at, err
	}
	if d.makeRoom(plan) {
		if roomTestMade != nil {
			roomTestMade()
		}
		// Retention, once the batch is stored, deletes the oldest files:
		// deleted first, they make room for it.
		if at, err = d.record(batch); err == nil || !noRoom(err) {
			return at, err
		}
	}
	// Retention makes no room for it (the log is below its limits), or
	// not enough: the log's reserve does (reserve.go).
	// What the write writes is every record pending (write-behind: up
	// to WriteBehind bytes and as much again while a background write was
	// out, put back in front if it failed), then this one: the reserve
	// cut by the record alone left the write refused with the reserve
	// unspent.
	need := int64(len(d.pend) + recordSize(batch))
	if d.sealsFor(batch) {
		need += cutPage // the next segment's header
	}
	for d.takeReserve(need) {
		if at, err = d.record(batch); err == nil || !noRoom(err) {
			return at, err
		}
	}
	return at, err
}

// throughGate runs try, a write of the log's records, through its file
// system's gate: at once while it is open, shutting it if the disk has no
// room; with the others' records while it is shut, opening it if the disk
// has room again. The caller makes room, alone at the gate, where the
// error is noRoom's. d.wmu is held.
func (d *DiskLog) throughGate(try func() error) error {
	g := d.gate
	if !g.shut.Load() {
		err := try()
		if err != nil && noRoom(err) {
			g.shut.Store(true)
		}
		return err
	}
	if roomTestWait != nil {
		roomTestWait()
	}
	g.mu.RLock()
	err := try()
	g.mu.RUnlock()
	if err == nil {
		g.reopen(d.dir)
	}
	return err
}

// writeRoom is write (the pending records of a sync), and where the disk
// has no room for them, write again into the log's reserve, alone at the
// gate, as recordRoom writes a record. A cell member's log lets its writes
// lag (WriteBehind): its appends, below WriteBehind bytes pending, write
// nothing, and the syncs (raft's interval syncs, a snapshot's) write what
// they left. Written straight through write, on a full disk those failed
// while appends went on into memory, the reserve unspent: the snapshot was
// refused, and the next append to write met the refusal too. Retention's
// room is made by appends only (recordRoom): a sync stores no message.
// d.wmu is held, the writer settled, and the gate not held by the log.
func (d *DiskLog) writeRoom() error {
	err := d.throughGate(d.write)
	if err == nil || !noRoom(err) {
		return err
	}
	g := d.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if err = d.write(); err == nil || !noRoom(err) {
		return err
	}
	for d.takeReserve(int64(len(d.pend))) {
		if err = d.write(); err == nil || !noRoom(err) {
			return err
		}
	}
	return err
}

// noRoom reports whether err is a full disk's or an exhausted quota's.
func noRoom(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// roomPlan is how a log makes room: the copies of its retired mappings
// to put in their place, and what makeRoom deletes: the k oldest files,
// retention's floor once the batch is stored.
type roomPlan struct {
	retired []mappingCopy
	k       int
	floor   uint64
}

// planRoom copies the retired mappings, and returns them with the oldest
// files retention deletes once batch is stored, if their size is more
// than its record needs, their mappings detached (copied: the slow part,
// without the gate); no file otherwise. d.wmu is held, so the plan holds
// until makeRoom.
func (d *DiskLog) planRoom(batch []Entry) roomPlan {
	plan := roomPlan{retired: d.mem.copyRetired()}
	floor := d.mem.floorAfter(batch)
	k := d.filesBefore(floor)
	if k == 0 {
		return plan
	}
	var size int64
	for _, s := range d.segs[:k] {
		if st, err := os.Stat(filepath.Join(d.dir, segName(s.base))); err == nil {
			size += st.Size()
		}
	}
	// The record, with a page for a new segment's header and one for
	// rounding.
	if size < int64(recordSize(batch))+2*cutPage {
		return plan
	}
	if d.mem.detachHeld(d.segs[k-1].last) != nil {
		return plan
	}
	plan.k, plan.floor = k, floor
	return plan
}

// makeRoom makes room for a record the disk refused for want of room
// (see above): it deletes the files of plan. It reports whether it freed
// any, so that the append is worth trying again. d.wmu is held, and the
// gate alone.
func (d *DiskLog) makeRoom(plan roomPlan) bool {
	// As retain does, once the checkpoint says so; their messages are
	// evicted after (detached by planRoom, they read the same
	// meanwhile).
	if plan.k == 0 || !d.dropFiles(plan.k, plan.floor) {
		return false
	}
	d.mem.evictBefore(plan.floor)
	return true
}

// floorAfter returns the first message the log would hold once batch,
// which follows on from its tail, is stored and retention applied, as
// retain would evict. The active segment, which the batch may join, is
// never counted evicted: the answer errs on the side of keeping.
func (l *Log) floorAfter(batch []Entry) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segs) == 0 {
		return l.lastSeq + 1
	}
	bytes := l.bytes.Load()
	for i := range batch {
		bytes += int64(len(batch[i].Body))
	}
	k := l.overLimits(l.held+len(batch), bytes, batch[len(batch)-1].Time, len(l.segs)-1)
	return l.segs[k].base
}

// evictBefore evicts the oldest segments while they end before floor,
// leaving the active one.
func (l *Log) evictBefore(floor uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for k < len(l.segs)-1 && l.segs[k].base+uint64(l.segs[k].n) <= floor {
		k++
	}
	l.evictOldest(k)
}

// copyRetired copies the mappings of files whose messages were all
// evicted and that wait out their grace (mapped.go), for placeCopies:
// their files are deleted, and their space comes back once the copies
// are in place.
func (l *Log) copyRetired() []mappingCopy {
	l.mu.Lock()
	var ms []*mapping
	for _, r := range l.retired {
		if r.m.detachable() {
			ms = append(ms, r.m)
		}
	}
	l.mu.Unlock()
	return l.copyMappings(ms)
}

// detachHeld detaches the mappings of the held messages up to last, so
// that deleting their files gives the space back at once.
func (l *Log) detachHeld(last uint64) error {
	l.mu.Lock()
	var ms []*mapping
	for _, s := range l.segs {
		if s.base > last {
			break
		}
		if s.mapped.detachable() && (len(ms) == 0 || ms[len(ms)-1] != s.mapped) {
			ms = append(ms, s.mapped)
		}
	}
	l.mu.Unlock()
	if _, err := l.detach(ms); err != nil {
		return fmt.Errorf("store: detach a mapping: %w", err)
	}
	return nil
}

// detach detaches the mappings ms, taken detachable under l.mu, and
// returns how many it detached and the first error. Each copy is made
// without l.mu, which the appends' lookups (Lookup, Tail) and a cell's
// status take: they waited for the copy of every file (50-240 ms for 64
// MiB on the loaded test machine). The copy is put in place under l.mu, unless the mapping
// was unmapped meanwhile (Close). The log's one writer (d.wmu) is the one
// detacher: nothing else marks a mapping detaching.
func (l *Log) detach(ms []*mapping) (n int, err error) {
	return l.placeCopies(l.copyMappings(ms))
}

// mappingCopy is a mapping's copy, made (or failed) and not yet in its
// place: the mapping is detaching until placeCopies.
type mappingCopy struct {
	m     *mapping
	place func() error
	drop  func()
	err   error
}

// copyMappings marks the mappings ms, taken detachable under l.mu,
// detaching, and copies each without l.mu; placeCopies must follow.
func (l *Log) copyMappings(ms []*mapping) []mappingCopy {
	l.mu.Lock()
	for _, m := range ms {
		m.detaching = true
	}
	l.mu.Unlock()
	cs := make([]mappingCopy, len(ms))
	for i, m := range ms {
		cs[i].m = m
		cs[i].place, cs[i].drop, cs[i].err = m.detach(m.valid) // m stays mapped: detaching
	}
	return cs
}

// placeCopies puts each copy of cs in its mapping's place, under l.mu,
// unless the mapping was unmapped meanwhile (Close): then the copy is
// dropped and the mapping released here. It returns how many it placed
// and the first error.
func (l *Log) placeCopies(cs []mappingCopy) (n int, err error) {
	for _, c := range cs {
		m, cerr := c.m, c.err
		l.mu.Lock()
		m.detaching = false
		switch {
		case cerr != nil:
		case m.done:
			c.drop()
		default:
			if cerr = c.place(); cerr != nil {
				c.drop()
			} else {
				m.detached = true
				n++
			}
		}
		if m.done {
			m.release() // unmapped meanwhile: released here, not there
		}
		l.mu.Unlock()
		if err == nil {
			err = cerr
		}
	}
	return n, err
}

// detachable reports whether m is a file mapping still in place, and not
// being detached. Log.mu is held.
func (m *mapping) detachable() bool {
	return m != nil && m.detach != nil && !m.detached && !m.detaching && !m.done
}

package store

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// A segment holds a run of consecutive messages starting at base, and the
// senders of those messages.
//
// Readers see it only through cols, loaded after the log's committed
// sequence number; they read slots below that number, which the writer has
// finished with. The remaining fields are the writer's, guarded by Log.mu,
// except base and firstTime, which are fixed before the segment is published.
type segment struct {
	base      uint64 // sequence number of slot 0
	firstTime int64  // time of slot 0
	cols      atomic.Pointer[columns]

	w        *columns // == cols.Load(), without the atomic load
	n        int      // slots written
	used     int      // slab bytes written
	lastTime int64    // time of slot n-1
	faulted  int      // slab bytes made resident ahead of the writes (see prefault)
	lastFrom uint32   // the index of slot n-1's sender in w.senders
	// mapped: the segment was read back from a disk log's file, whose
	// mapping its slab is; it is never written (see mapped.go).
	mapped *mapping
}

// prefaultChunk is how much of a slab is made resident at a time, ahead of
// the writes: large enough that the madvise call is rare, small enough that
// an idle group's slab is not made resident before it is used.
const prefaultChunk = 1 << 20

// minAhead is the least a prefaulter is given to make resident.
const minAhead = 64 << 10

// prefaultSlab makes c.slab resident up to at least need bytes, a chunk at
// a time; and once the writes are past half of what is resident, the next
// chunk on ahead's goroutine (nil: never ahead). The writer then rarely
// waits for the madvise: in a cell it is raft's apply goroutine, which
// every send waits for (BENCHMARKS.md, session 17). Writes that reach
// pages ahead's call has not made resident yet fault them in themselves.
func (s *segment) prefaultSlab(c *columns, need int, ahead *prefaulter) {
	if need > s.faulted {
		// The writes caught up (a new slab): what they need now, and
		// without a prefaulter the rest of the chunk too.
		end := min(len(c.slab), max(need, s.faulted+prefaultChunk))
		if ahead != nil {
			end = need
		}
		prefault(c.slab[s.faulted:end])
		s.faulted = end
	}
	if s.faulted-need < prefaultChunk/2 && ahead != nil {
		// (Not for a small slab's few pages: not worth a goroutine.)
		end := min(len(c.slab), s.faulted+prefaultChunk)
		if end-s.faulted >= minAhead && ahead.start(c.slab[s.faulted:end]) {
			s.faulted = end
		}
	}
}

// prefaulter makes memory resident on a goroutine of its own, one range
// at a time. The log that owns it waits for it at Close.
type prefaulter struct {
	busy atomic.Bool
	wg   sync.WaitGroup
	// mu orders a start's wg.Add before Close's wg.Wait: an Append racing
	// a memory log's Close (which callers are told not to do) started a
	// goroutine Close did not wait for, or reused the WaitGroup as Wait
	// returned. closed: started no more.
	mu     sync.Mutex
	closed bool
	// fault is prefault, but for the tests that hold it.
	fault func([]byte)
}

// start prefaults b on the prefaulter's goroutine, unless it is still at
// work on the last range, and reports whether it did.
func (p *prefaulter) start(b []byte) bool {
	if !p.busy.CompareAndSwap(false, true) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.busy.Store(false)
		return false
	}
	fault := p.fault
	if fault == nil {
		fault = prefault
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fault(b)
		p.busy.Store(false)
	}()
	return true
}

// wait returns once the prefaulter's goroutine, if any, has ended; it
// starts none after (the writes fault their pages in themselves).
func (p *prefaulter) wait() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
}

// prefaultColumns makes the arrays of c resident. They grow by doubling, so
// each allocation is prefaulted whole, once.
func prefaultColumns(c *columns) {
	prefault(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c.times))), len(c.times)*8))
	prefault(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c.ends))), len(c.ends)*4))
	prefault(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c.from))), len(c.from)*4))
	prefault(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(c.ids))), len(c.ids)*16))
}

// columns are a segment's arrays. Slots 0..n-1 (and slab[:ends[n-1]]) are
// never written again once stored, so readers may alias them; growing copies
// them into new arrays published as a new *columns.
//
// senders is the segment's sender dictionary (senders.go): each sender of
// its messages, once, in the order of their first message here; from[i] is
// the index of message i's sender in it. A sender is added (and a new
// *columns published) before the first message that names it is committed.
type columns struct {
	times []int64
	ends  []uint32 // body i is slab[ends[i-1]:ends[i]], with ends[-1] = 0
	// starts, in a mapped segment only, are where bodies start: body i is
	// slab[starts[i]:ends[i]] (the file holds more than bodies).
	starts  []uint32
	from    []uint32 // index in senders
	ids     [][16]byte
	slab    []byte
	senders []*sharedSender
}

// newSegment makes a segment whose slot 0 will hold a message at seq and t
// with a body of bodyLen bytes. prev, the segment before it (or nil), sizes it.
func newSegment(seq uint64, t int64, bodyLen int, prev *segment, lim *limits) *segment {
	slots, bytes := min(16, lim.segMessages), min(4096, lim.segBytes)
	if prev != nil {
		// A new segment opens only when the previous one filled up: assume
		// this one will fill the same way.
		slots = min(max(slots, prev.n), lim.segMessages)
		bytes = min(max(bytes, prev.used), lim.segBytes)
	}
	s := &segment{base: seq, firstTime: t}
	s.w = &columns{
		times: make([]int64, slots),
		ends:  make([]uint32, slots),
		from:  make([]uint32, slots),
		ids:   make([][16]byte, slots),
		slab:  make([]byte, max(bytes, bodyLen)),
	}
	prefaultColumns(s.w)
	s.cols.Store(s.w)
	return s
}

// fits reports whether a body of bodyLen bytes may go in s.
func (s *segment) fits(bodyLen int, lim *limits) bool {
	return s.mapped == nil && s.n < lim.segMessages && (s.used == 0 || s.used+bodyLen <= lim.segBytes)
}

// put stores a message from the sender at index from of the dictionary in
// the next slot, growing the arrays if needed; the caller has checked fits.
// Growth is published before the caller commits.
func (s *segment) put(e *Entry, from uint32, lim *limits, ahead *prefaulter) {
	c := s.w
	need := s.used + len(e.Body)
	if s.n == len(c.times) || need > len(c.slab) {
		c = s.grow(need, lim)
	}
	s.prefaultSlab(c, need, ahead)
	i := s.n
	copy(c.slab[s.used:need], e.Body)
	c.times[i] = e.Time
	c.ends[i] = uint32(need)
	c.from[i] = from
	c.ids[i] = e.ID
	s.n++
	s.used = need
	s.lastTime = e.Time
}

// grow copies s's columns into larger ones with room for one more slot and
// need slab bytes, and publishes them.
func (s *segment) grow(need int, lim *limits) *columns {
	old := s.w
	c := *old
	if s.n == len(old.times) {
		slots := min(max(2*s.n, 16), lim.segMessages)
		c.times = make([]int64, slots)
		c.ends = make([]uint32, slots)
		c.from = make([]uint32, slots)
		c.ids = make([][16]byte, slots)
		prefaultColumns(&c)
		copy(c.times, old.times[:s.n])
		copy(c.ends, old.ends[:s.n])
		copy(c.from, old.from[:s.n])
		copy(c.ids, old.ids[:s.n])
	}
	if need > len(old.slab) {
		size := max(need, 2*len(old.slab))
		if size > lim.segBytes && need <= lim.segBytes {
			size = lim.segBytes
		}
		c.slab = make([]byte, size)
		s.faulted = 0
		s.prefaultSlab(&c, need, nil) // before the copy below
		copy(c.slab, old.slab[:s.used])
	}
	s.w = &c
	s.cols.Store(s.w)
	return s.w
}

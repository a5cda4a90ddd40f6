package store

import "hash/maphash"

// dedup remembers the IDs of the last window stored messages, with the
// sequence number and time each was given.
//
// ring[(seq-1)%window] is the record of the message stored at seq; adding
// seq forgets seq-window. The index is two open-addressing hash tables with
// linear probing, each kept at most half full: cur, into which add
// inserts, and prev, the table cur was before it. Once cur has taken window
// IDs it becomes prev, and the old prev, emptied, becomes cur. So every ID
// of the last window is in one of the two, and a forgotten ID is never
// deleted from the index: it stays in a table until that table is emptied,
// and a lookup that finds it there checks the ring, whose record at that
// position has since been overwritten. Deleting each forgotten ID (backward
// shift) cost the leader a random access to the index and a walk of the
// probe run per message stored, 3-6% of its CPU in profiles; the two tables cost a
// lookup a second probe and the index twice the memory. IDs are chosen by
// clients, so they are hashed with a per-log random seed.
//
// The two tables are interleaved in one slice, slot i of each side by side
// (tab[2i+half]; which half is cur flips at each rotation): a lookup's
// probes of both, at the same slot, load one cache line, and one page for
// the TLB. Apart, a lookup of a new ID (a send's, the usual case) missed
// twice, once in each table of megabytes; session 17 measured the
// interleaving with BenchmarkAppendEvicted (BENCHMARKS.md).
//
// An index entry holds the ring position (plus one; 0 is empty) in its low
// 32 bits and the low 32 bits of the ID's hash in its high ones. Lookups
// compare the hash bits before reading the ring: the ring is 2 MiB at the
// default window, and reading it at random for every entry probed cost a
// cache miss each.
//
// The index is built at the first lookup, and kept from then on: a log
// whose IDs are never looked up pays for the ring alone. A cell's
// followers are such logs (the leader alone looks IDs up, before it
// stamps a send): keeping their index cost each follower random accesses
// to a table of megabytes per message, to no use. A follower that becomes
// leader builds it at its first send, from the ring (about a millisecond
// per 65,536 IDs).
//
// Memory: 32 B per ring record plus, once indexed, 32-64 B of index per
// ID: at most 96 B per remembered ID, 4 MiB at the default window.
type dedup struct {
	window  int
	seed    maphash.Seed
	ring    []firstAck
	indexed bool // the index is built and kept
	// tab holds the index's tables of mask+1 slots (a power of two),
	// interleaved: slot i of cur is tab[2i+cur], of prev tab[2i+1-cur].
	// prev is empty until cur first fills. taken counts the IDs inserted
	// into cur.
	tab    []uint64
	cur    uint64 // 0 or 1
	mask   uint64
	taken  int
	warmed uint64 // what warm loaded, kept so the compiler keeps its loads
	// runFrom is the first sequence number of the run of consecutive
	// adds that ends at lastAdded: what remembers reads.
	runFrom, lastAdded uint64
}

type firstAck struct {
	id   [16]byte
	seq  uint64
	time int64
}

func newDedup(window int) dedup {
	return dedup{window: window, seed: maphash.MakeSeed()}
}

func (d *dedup) hash(id *[16]byte) uint64 {
	return maphash.Comparable(d.seed, *id)
}

// indexEntry is the index entry of ring position pos for an ID hashed to h.
func indexEntry(pos int, h uint64) uint64 { return h<<32 | uint64(pos+1) }

// lookup finds id, whose hash is h, building the index if it is not.
func (d *dedup) lookup(id [16]byte, h uint64) (firstAck, bool) {
	if !d.indexed {
		d.build()
	}
	if a, ok := d.find(d.cur, id, h); ok {
		return a, true
	}
	return d.find(1-d.cur, id, h)
}

// find looks id, hashed to h, up in the index table half (cur or prev):
// an entry whose ring record holds another ID is one the window forgot.
func (d *dedup) find(half uint64, id [16]byte, h uint64) (firstAck, bool) {
	tag := h << 32
	for i := h & d.mask; ; i = (i + 1) & d.mask {
		e := d.tab[2*i+half]
		if e == 0 {
			return firstAck{}, false
		}
		if e&^0xffffffff == tag {
			if a := &d.ring[uint32(e)-1]; a.id == id && a.seq != 0 {
				return *a, true
			}
		}
	}
}

// add remembers id as stored at seq and t; seq must follow the previous
// add's, and id must not be remembered.
func (d *dedup) add(id [16]byte, seq uint64, t int64) {
	if seq != d.lastAdded+1 {
		d.runFrom = seq // a log read back from past its start, or reset
	}
	d.lastAdded = seq
	var pos int
	if len(d.ring) < d.window && uint64(len(d.ring)) != seq-1 {
		// A log that does not start at 1 (a disk log read back from
		// past its retention): take the whole window at once, so that
		// seq's place is (seq-1) % window from the first.
		d.fill()
	}
	if len(d.ring) < d.window {
		pos = len(d.ring)
		if pos == cap(d.ring) { // grow, but never past the window
			d.ring = append(make([]firstAck, 0, min(d.window, max(16, 2*pos))), d.ring...)
		}
		d.ring = d.ring[:pos+1]
		if d.indexed && 2*len(d.ring) > int(d.mask+1) {
			d.rehash(max(16, 2*int(d.mask+1)))
		}
	} else {
		pos = int((seq - 1) % uint64(d.window))
	}
	d.ring[pos] = firstAck{id: id, seq: seq, time: t}
	if d.indexed {
		if d.taken == d.window {
			d.rotate()
		}
		d.insert(pos, d.hash(&id))
	}
}

// remembers reports whether d holds the ID of every message stored after
// seq after, up to last, the log's tail: the run of adds reaches last,
// and its part within the window begins at or before after+1.
func (d *dedup) remembers(after, last uint64) bool {
	if after >= last {
		return true // nothing stored after it
	}
	if d.lastAdded != last {
		return false // the log stands past its adds (reset)
	}
	from := d.runFrom
	if w := uint64(d.window); d.lastAdded >= w {
		from = max(from, d.lastAdded-w+1)
	}
	return after+1 >= from
}

// rotate makes cur, which holds window IDs, prev, and the old prev,
// emptied, cur: what the old prev alone held, the window has forgotten.
func (d *dedup) rotate() {
	d.cur = 1 - d.cur
	for i := d.cur; i < uint64(len(d.tab)); i += 2 {
		d.tab[i] = 0
	}
	d.taken = 0
}

// warmLookups loads the index slots that the lookups of IDs hashed to hs
// will probe first. The loads do not depend on each other, so their cache
// misses overlap; one message after another, each lookup waited for its
// own. (The index and the ring are 4 MiB at the default window, and the
// daemon's other work leaves little of them in the caches.)
func (d *dedup) warmLookups(hs []uint64) {
	if len(d.tab) == 0 {
		return
	}
	var sink uint64
	for _, h := range hs {
		sink += d.tab[2*(h&d.mask)] // cur's and prev's: one line
	}
	d.warmed = sink
}

// insert indexes ring position pos, for an ID hashed to h, in cur.
func (d *dedup) insert(pos int, h uint64) {
	i := h & d.mask
	for d.tab[2*i+d.cur] != 0 {
		i = (i + 1) & d.mask
	}
	d.tab[2*i+d.cur] = indexEntry(pos, h)
	d.taken++
}

// fill grows the ring to the whole window, its empty records seq 0, and
// indexes it to match if it is indexed. Records already held stay where
// they are: the ring was filled from seq 1, so record i holds seq i+1 =
// (seq-1) % window + 1.
func (d *dedup) fill() {
	ring := make([]firstAck, d.window)
	copy(ring, d.ring)
	d.ring = ring
	if d.indexed {
		d.build()
	}
}

// build indexes every record of the ring, in a table at most half full,
// and keeps the index from then on.
func (d *dedup) build() {
	size := 16
	for size < 2*len(d.ring) {
		size *= 2
	}
	d.tab, d.cur = make([]uint64, 2*size), 0
	d.mask = uint64(size - 1)
	d.taken = 0
	for pos := range d.ring {
		if d.ring[pos].seq != 0 {
			d.insert(pos, d.hash(&d.ring[pos].id))
		}
	}
	d.indexed = true
}

// rehash indexes the ring anew in a table of size slots, but for its last
// record, which add is filling. It runs only while the window fills, when
// cur holds every ID remembered and prev is empty.
func (d *dedup) rehash(size int) {
	d.tab, d.cur = make([]uint64, 2*size), 0
	d.mask = uint64(size - 1)
	d.taken = 0
	for pos := range d.ring[:len(d.ring)-1] { // the last slot is being filled
		d.insert(pos, d.hash(&d.ring[pos].id))
	}
}

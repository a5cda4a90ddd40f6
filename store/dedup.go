package store

import "hash/maphash"

// dedup remembers the IDs of the last window stored messages, with the
// sequence number and time each was given.
//
// ring[(seq-1)%window] is the record of the message stored at seq; adding
// seq forgets seq-window. The index is an open-addressing hash table with
// linear probing, kept at most half full, and deletion by backward shift, so
// no tombstones pile up under the steady forget-one-remember-one churn (Go's
// map slows down under it). IDs are chosen by clients, so they are hashed
// with a per-log random seed.
//
// An index entry holds the ring position (plus one; 0 is empty) in its low
// 32 bits and the low 32 bits of the ID's hash in its high ones. Lookups
// compare the hash bits before reading the ring, and removals find each
// entry's home slot from them: the ring is 2 MiB at the default window, and
// reading it at random for every entry probed cost a cache miss each.
//
// The index is built at the first lookup, and kept from then on: a log
// whose IDs are never looked up pays for the ring alone. A cell's
// followers are such logs (the leader alone looks IDs up, before it
// stamps a send): keeping their index cost each follower two random
// accesses to a table of megabytes per message, to no use. A follower that
// becomes leader builds it at its first send, from the ring (about a
// millisecond per 65,536 IDs).
//
// Memory: 32 B per ring record plus, once indexed, 16–32 B of index per
// ID, allocated as the window fills: at most 64 B per remembered ID, 4 MiB
// at the default window.
type dedup struct {
	window  int
	seed    maphash.Seed
	ring    []firstAck
	indexed bool // index is built and kept
	index   []uint64
	mask    uint64
	warmed  uint64 // what warm loaded, kept so the compiler keeps its loads
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

// home is the slot an entry's probe run starts from.
func (d *dedup) home(e uint64) uint64 { return (e >> 32) & d.mask }

// lookup finds id, whose hash is h, building the index if it is not.
func (d *dedup) lookup(id [16]byte, h uint64) (firstAck, bool) {
	if !d.indexed {
		d.build()
	}
	if len(d.index) == 0 {
		return firstAck{}, false
	}
	tag := h << 32
	for i := h & d.mask; ; i = (i + 1) & d.mask {
		e := d.index[i]
		if e == 0 {
			return firstAck{}, false
		}
		if e&^0xffffffff == tag {
			if a := &d.ring[uint32(e)-1]; a.id == id {
				return *a, true
			}
		}
	}
}

// add remembers id as stored at seq and t; seq must follow the previous
// add's, and id must not be remembered.
func (d *dedup) add(id [16]byte, seq uint64, t int64) {
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
		if d.indexed && 2*len(d.ring) > len(d.index) {
			d.rehash(max(16, 2*len(d.index)))
		}
	} else {
		pos = int((seq - 1) % uint64(d.window))
		if d.indexed && d.ring[pos].seq != 0 {
			d.remove(pos)
		}
	}
	d.ring[pos] = firstAck{id: id, seq: seq, time: t}
	if d.indexed {
		d.insert(pos, d.hash(&id))
	}
}

// warmLookups loads the index slots that the lookups of IDs hashed to hs
// will probe first, and warmRemovals those of the n IDs the window will
// forget as messages from seq next on are added. The loads do not depend
// on each other, so their cache misses overlap; one message after another,
// each lookup and each removal waited for its own. (The index and the ring
// are 3 MiB at the default window, and the daemon's other work leaves
// little of them in the caches.)
func (d *dedup) warmLookups(hs []uint64) {
	if len(d.index) == 0 {
		return
	}
	var sink uint64
	for _, h := range hs {
		sink += d.index[h&d.mask]
	}
	d.warmed = sink
}

func (d *dedup) warmRemovals(next uint64, n int) {
	if !d.indexed || len(d.ring) < d.window {
		return
	}
	var sink uint64
	for i := range n {
		old := &d.ring[int((next+uint64(i)-1)%uint64(d.window))]
		sink += d.index[d.hash(&old.id)&d.mask]
	}
	d.warmed = sink
}

func (d *dedup) insert(pos int, h uint64) {
	i := h & d.mask
	for d.index[i] != 0 {
		i = (i + 1) & d.mask
	}
	d.index[i] = indexEntry(pos, h)
}

// remove drops ring position pos from the index, shifting later entries of
// its probe run back so lookups need no tombstones.
func (d *dedup) remove(pos int) {
	i := d.hash(&d.ring[pos].id) & d.mask
	for uint32(d.index[i]) != uint32(pos)+1 {
		i = (i + 1) & d.mask
	}
	for j := (i + 1) & d.mask; d.index[j] != 0; j = (j + 1) & d.mask {
		// The entry at j may move to the hole at i if its home slot is
		// not cyclically within (i, j].
		if (j-d.home(d.index[j]))&d.mask >= (j-i)&d.mask {
			d.index[i] = d.index[j]
			i = j
		}
	}
	d.index[i] = 0
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

// build indexes every record of the ring, in an index at most half full,
// and keeps the index from then on.
func (d *dedup) build() {
	size := 16
	for size < 2*len(d.ring) {
		size *= 2
	}
	d.index = make([]uint64, size)
	d.mask = uint64(size - 1)
	for pos := range d.ring {
		if d.ring[pos].seq != 0 {
			d.insert(pos, d.hash(&d.ring[pos].id))
		}
	}
	d.indexed = true
}

// rehash indexes the ring anew in an index of size slots, but for its last
// record, which add is filling.
func (d *dedup) rehash(size int) {
	d.index = make([]uint64, size)
	d.mask = uint64(size - 1)
	for pos := range d.ring[:len(d.ring)-1] { // the last slot is being filled
		d.insert(pos, d.hash(&d.ring[pos].id))
	}
}

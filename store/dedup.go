package store

import "hash/maphash"

// dedup remembers the IDs of the last window stored messages, with the
// sequence number and time each was given.
//
// ring[(seq-1)%window] is the record of the message stored at seq; adding
// seq forgets seq-window. The index is an open-addressing hash table of ring
// positions (plus one; 0 is empty) with linear probing, kept at most half
// full, and deletion by backward shift, so no tombstones pile up under the
// steady forget-one-remember-one churn (Go's map slows down under it). IDs
// are chosen by clients, so they are hashed with a per-log random seed.
//
// Memory: 32 B per ring record plus 8–16 B of index per ID, allocated as the
// window fills: at most 48 B per remembered ID, 3 MiB at the default window.
type dedup struct {
	window int
	seed   maphash.Seed
	ring   []firstAck
	index  []uint32
	mask   uint64
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

func (d *dedup) lookup(id [16]byte) (firstAck, bool) {
	if len(d.index) == 0 {
		return firstAck{}, false
	}
	for i := d.hash(&id) & d.mask; ; i = (i + 1) & d.mask {
		p := d.index[i]
		if p == 0 {
			return firstAck{}, false
		}
		if a := &d.ring[p-1]; a.id == id {
			return *a, true
		}
	}
}

// add remembers id as stored at seq and t; seq must follow the previous
// add's, and id must not be remembered.
func (d *dedup) add(id [16]byte, seq uint64, t int64) {
	var pos int
	if len(d.ring) < d.window {
		pos = len(d.ring)
		if pos == cap(d.ring) { // grow, but never past the window
			d.ring = append(make([]firstAck, 0, min(d.window, max(16, 2*pos))), d.ring...)
		}
		d.ring = d.ring[:pos+1]
		if 2*len(d.ring) > len(d.index) {
			d.rehash(max(16, 2*len(d.index)))
		}
	} else {
		pos = int((seq - 1) % uint64(d.window))
		d.remove(pos)
	}
	d.ring[pos] = firstAck{id: id, seq: seq, time: t}
	d.insert(pos, &id)
}

func (d *dedup) insert(pos int, id *[16]byte) {
	i := d.hash(id) & d.mask
	for d.index[i] != 0 {
		i = (i + 1) & d.mask
	}
	d.index[i] = uint32(pos) + 1
}

// remove drops ring position pos from the index, shifting later entries of
// its probe run back so lookups need no tombstones.
func (d *dedup) remove(pos int) {
	i := d.hash(&d.ring[pos].id) & d.mask
	for d.index[i] != uint32(pos)+1 {
		i = (i + 1) & d.mask
	}
	for j := (i + 1) & d.mask; d.index[j] != 0; j = (j + 1) & d.mask {
		// The entry at j may move to the hole at i if its home slot is
		// not cyclically within (i, j].
		home := d.hash(&d.ring[d.index[j]-1].id) & d.mask
		if (j-home)&d.mask >= (j-i)&d.mask {
			d.index[i] = d.index[j]
			i = j
		}
	}
	d.index[i] = 0
}

func (d *dedup) rehash(size int) {
	d.index = make([]uint32, size)
	d.mask = uint64(size - 1)
	for pos := range d.ring[:len(d.ring)-1] { // the last slot is being filled
		d.insert(pos, &d.ring[pos].id)
	}
}

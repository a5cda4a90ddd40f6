package store

import (
	"hash/maphash"
	"math/bits"
)

// A Sequencer is the sequencing step: the one place where messages are
// given their sequence numbers and timestamps. It stamps a batch from the
// position of the last message stamped: the next sequence numbers, gapless,
// and times max(now, previous+1), so that times strictly increase even when
// the clock steps back. now is the caller's clock reading, taken once per
// batch; nothing here reads a clock, so a batch stamped once (by a raft
// leader, say) is applied as the same bytes wherever it is applied.
//
// A Log stores what it is given: its Append checks that a batch follows on
// from its tail and does not stamp anything itself. A caller with one log
// serialises Lookup, Stamp and Append for a batch, and starts each batch's
// Sequencer at the log's Tail.
//
// A Sequencer keeps scratch space from one Stamp to the next; it is not
// safe for concurrent use. Its zero value stamps from the start of a log.
type Sequencer struct {
	Last     uint64 // the last sequence number stamped; 0: none
	LastTime int64  // its timestamp, Unix ns

	// Stamp finds repeated IDs in a batch larger than smallBatch with an
	// open-addressing table: index+1 in the batch's stamped prefix by ID
	// hash, 0 for an empty slot. IDs are the clients', hence the seed.
	table  []int32
	seed   maphash.Seed
	seeded bool
}

// smallBatch is the batch size up to which Stamp finds repeated IDs by
// comparing each ID with those before it.
const smallBatch = 16

// Stamp stamps batch at now. acks holds one ack per entry, as Log.Lookup
// returns them: an entry whose ack has Duplicate set is already stored and
// is not stamped again. Stamp moves the entries to store to the front of
// batch, in order, sets their Seq and Time, and returns how many there are;
// the caller appends batch[:n]. It fills the ack of every entry to store
// with its stamps, and the ack of an entry whose ID an earlier entry of the
// batch carries with that entry's stamps and Duplicate set. s then stands
// after the last entry stamped.
func (s *Sequencer) Stamp(now int64, batch []Entry, acks []Ack) (n int) {
	var table []int32
	if len(batch) > smallBatch {
		table = s.resetTable(len(batch))
	}
	for i := range batch {
		if acks[i].Duplicate {
			continue
		}
		slot := -1
		j, ok := 0, false
		if table != nil {
			slot, j, ok = s.find(table, batch, batch[i].ID)
		} else {
			j, ok = scan(batch[:n], batch[i].ID)
		}
		if ok {
			acks[i] = Ack{Seq: batch[j].Seq, Time: batch[j].Time, Duplicate: true}
			continue
		}
		s.Last++
		s.LastTime = max(now, s.LastTime+1)
		batch[i].Seq, batch[i].Time = s.Last, s.LastTime
		acks[i] = Ack{Seq: s.Last, Time: s.LastTime}
		if n != i {
			batch[n] = batch[i]
		}
		if slot >= 0 {
			table[slot] = int32(n + 1)
		}
		n++
	}
	return n
}

// scan finds id among the entries stamped so far by comparing.
func scan(stamped []Entry, id [16]byte) (int, bool) {
	for j := range stamped {
		if stamped[j].ID == id {
			return j, true
		}
	}
	return 0, false
}

// resetTable returns the table emptied, with room for a batch of n at
// most half full.
func (s *Sequencer) resetTable(n int) []int32 {
	size := 1 << bits.Len(uint(2*n-1))
	if cap(s.table) < size {
		s.table = make([]int32, size)
	}
	if !s.seeded {
		s.seed, s.seeded = maphash.MakeSeed(), true
	}
	t := s.table[:size]
	clear(t)
	return t
}

// find looks id up in table, which indexes the stamped prefix of batch: it
// returns the index of the entry that carries it, or the empty slot where
// it goes.
func (s *Sequencer) find(table []int32, batch []Entry, id [16]byte) (slot, j int, ok bool) {
	mask := uint64(len(table) - 1)
	for i := maphash.Comparable(s.seed, id) & mask; ; i = (i + 1) & mask {
		e := table[i]
		if e == 0 {
			return int(i), 0, false
		}
		if batch[e-1].ID == id {
			return 0, int(e - 1), true
		}
	}
}

package store

import (
	"fmt"
	"slices"
	"testing"
)

// TestStamp checks the sequencing step on its own: what it stamps, what it
// acknowledges as a duplicate, in small batches and in large ones (which
// find repeated IDs by map), and that it reads nothing but its arguments.
func TestStamp(t *testing.T) {
	for _, size := range []int{5, smallBatch + 7, 300} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			// Entry i has ID i%4+1 for the first half of the batch, then
			// new IDs; the log already holds ID 2.
			batch := make([]Entry, size)
			for i := range batch {
				n := i%4 + 1
				if i >= size/2 {
					n = 100 + i
				}
				batch[i] = entry(n, "x")
			}
			prior := make([]Ack, size)
			for i := range batch {
				if batch[i].ID == id(2) {
					prior[i] = Ack{Seq: 3, Time: 40, Duplicate: true}
				}
			}
			stamp := func() (*Sequencer, []Entry, []Ack, int) {
				s := &Sequencer{Last: 9, LastTime: 1000}
				b, a := slices.Clone(batch), slices.Clone(prior)
				n := s.Stamp(500, b, a) // the clock is behind the log
				return s, b, a, n
			}
			s, got, acks, n := stamp()

			seq, ts := uint64(9), int64(1000)
			var want []Entry
			first := map[[16]byte]Ack{id(2): {Seq: 3, Time: 40, Duplicate: true}}
			for i, e := range batch {
				a, dup := first[e.ID]
				if dup {
					a.Duplicate = true
				} else {
					seq, ts = seq+1, ts+1
					e.Seq, e.Time = seq, ts
					want = append(want, e)
					a = Ack{Seq: seq, Time: ts}
					first[e.ID] = a
				}
				if acks[i] != a {
					t.Fatalf("ack %d = %+v, want %+v", i, acks[i], a)
				}
			}
			if n != len(want) {
				t.Fatalf("Stamp = %d entries to store, want %d", n, len(want))
			}
			for i := range want {
				if got[i].Seq != want[i].Seq || got[i].Time != want[i].Time || got[i].ID != want[i].ID || got[i].From != want[i].From {
					t.Fatalf("entry %d to store = %+v, want %+v", i, got[i], want[i])
				}
			}
			if s.Last != seq || s.LastTime != ts {
				t.Fatalf("sequencer after = %+v, want %d, %d", s, seq, ts)
			}
			// Deterministic: the same inputs, the same stamps.
			s2, got2, acks2, n2 := stamp()
			if s2.Last != s.Last || s2.LastTime != s.LastTime || n2 != n || !slices.Equal(acks2, acks) {
				t.Fatal("Stamp twice on the same inputs stamped differently")
			}
			for i := range n {
				if got2[i].Seq != got[i].Seq || got2[i].Time != got[i].Time || got2[i].ID != got[i].ID {
					t.Fatal("Stamp twice on the same inputs stamped differently")
				}
			}
		})
	}
}

// TestStampClock checks max(now, last+1): a clock ahead is taken as is, one
// behind or stepped back gives last+1.
func TestStampClock(t *testing.T) {
	s := Sequencer{}
	for i, tc := range []struct {
		now  int64
		want []int64
	}{
		{-5, []int64{1, 2}}, // an empty log's last time is 0
		{100, []int64{100}},
		{50, []int64{101, 102}},
		{102, []int64{103}},
		{1 << 40, []int64{1 << 40}},
	} {
		batch := make([]Entry, len(tc.want))
		for j := range batch {
			batch[j].ID = id(10*i + j)
		}
		acks := make([]Ack, len(batch))
		n := s.Stamp(tc.now, batch, acks)
		var got []int64
		for j := range n {
			got = append(got, batch[j].Time)
		}
		if !slices.Equal(got, tc.want) {
			t.Fatalf("step %d: times %v, want %v", i, got, tc.want)
		}
	}
}

package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestDedupChurn checks the hash index against a plain map through many
// windows' worth of churn, probing both remembered and forgotten IDs. The
// index is built at the first lookup: from the start, with the ring half
// full, and after it has wrapped around several times.
func TestDedupChurn(t *testing.T) {
	for _, window := range []int{1, 7, 1000} {
		for _, first := range []uint64{1, uint64(window)/2 + 1, 3*uint64(window) + 5} {
			t.Run(fmt.Sprintf("window=%d/first-lookup=%d", window, first), func(t *testing.T) {
				d := newDedup(window)
				want := map[[16]byte]uint64{}
				var order [][16]byte
				rng := rand.New(rand.NewPCG(uint64(window), 9))
				for seq := uint64(1); seq <= 50_000; seq++ {
					var id [16]byte
					for i := range 2 {
						v := rng.Uint64()
						for k := range 8 {
							id[8*i+k] = byte(v >> (8 * k))
						}
					}
					d.add(id, seq, int64(seq)*10)
					want[id] = seq
					order = append(order, id)
					if len(order) > window {
						delete(want, order[len(order)-window-1])
					}
					if seq < first {
						if d.indexed || len(d.tab) != 0 {
							t.Fatalf("seq %d: indexed before the first lookup", seq)
						}
						continue
					}
					probe := order[rng.IntN(len(order))]
					got, ok := d.lookup(probe, d.hash(&probe))
					w, wok := want[probe]
					if ok != wok || (ok && (got.seq != w || got.time != int64(w)*10 || got.id != probe)) {
						t.Fatalf("seq %d: lookup = %+v %v, want seq %d %v", seq, got, ok, w, wok)
					}
				}
			})
		}
	}
}

// TestDedupFromPastOne: a log read back past its retention starts its
// window at a sequence number past 1 (fill); its index, built then or
// later, finds what it remembers.
func TestDedupFromPastOne(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprintf("indexed-first=%v", early), func(t *testing.T) {
			d := newDedup(100)
			if early {
				if _, ok := d.lookup([16]byte{1}, d.hash(&[16]byte{1})); ok {
					t.Fatal("an empty window remembers an ID")
				}
			}
			id := func(seq uint64) [16]byte { return [16]byte{byte(seq), byte(seq >> 8), 0xaa} }
			for seq := uint64(1042); seq < 1042+150; seq++ {
				d.add(id(seq), seq, int64(seq))
			}
			for seq := uint64(1042); seq < 1042+150; seq++ {
				k := id(seq)
				got, ok := d.lookup(k, d.hash(&k))
				if want := seq >= 1042+50; ok != want || (ok && got.seq != seq) {
					t.Fatalf("seq %d: lookup = %+v %v, want found %v", seq, got, ok, want)
				}
			}
		})
	}
}

// TestDedupReusedID: an ID the window forgot may be stored again; the
// index then finds its new record, never the old one's position (whose
// record another message's overwrote), through many turns of the index's
// two tables.
func TestDedupReusedID(t *testing.T) {
	for _, window := range []int{1, 7, 64} {
		t.Run(fmt.Sprintf("window=%d", window), func(t *testing.T) {
			d := newDedup(window)
			ids := window + 3 // each ID is forgotten 3 messages before it comes back
			id := func(n int) [16]byte { return [16]byte{byte(n), byte(n >> 8), 0x5e} }
			last := map[int]uint64{} // ID -> the seq it was last stored at
			for seq := uint64(1); seq <= uint64(50*ids); seq++ {
				n := int(seq-1) % ids
				k := id(n)
				if _, ok := d.lookup(k, d.hash(&k)); ok {
					t.Fatalf("seq %d: ID %d, stored last at %d, is remembered", seq, n, last[n])
				}
				d.add(k, seq, int64(seq))
				last[n] = seq
				for m, at := range last {
					k := id(m)
					got, ok := d.lookup(k, d.hash(&k))
					if want := at+uint64(window) > seq; ok != want || (ok && (got.seq != at || got.id != k)) {
						t.Fatalf("seq %d: ID %d stored at %d: lookup = %+v %v, want found %v", seq, m, at, got, ok, want)
					}
				}
			}
		})
	}
}

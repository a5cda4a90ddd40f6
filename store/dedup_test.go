package store

import (
	"math/rand/v2"
	"testing"
)

// TestDedupChurn checks the hash index against a plain map through many
// windows' worth of churn, probing both remembered and forgotten IDs.
func TestDedupChurn(t *testing.T) {
	for _, window := range []int{1, 7, 1000} {
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
			d.add(id, d.hash(&id), seq, int64(seq)*10)
			want[id] = seq
			order = append(order, id)
			if len(order) > window {
				delete(want, order[len(order)-window-1])
			}
			probe := order[rng.IntN(len(order))]
			got, ok := d.lookup(probe, d.hash(&probe))
			w, wok := want[probe]
			if ok != wok || (ok && (got.seq != w || got.time != int64(w)*10 || got.id != probe)) {
				t.Fatalf("window %d, seq %d: lookup = %+v %v, want seq %d %v", window, seq, got, ok, w, wok)
			}
		}
	}
}

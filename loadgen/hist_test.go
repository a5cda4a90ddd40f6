package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestHistQuantiles compares the histogram's quantiles with the exact ones
// of the same latencies: equal below 256 ns, within 0.4% above.
func TestHistQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		draw func() time.Duration
	}{
		{"tiny", func() time.Duration { return time.Duration(rng.IntN(256)) }},
		{"uniform", func() time.Duration { return time.Duration(rng.Int64N(int64(10 * time.Millisecond))) }},
		{"lognormal", func() time.Duration { return time.Duration(math.Exp(rng.NormFloat64()*2 + 12)) }},
		{"two modes", func() time.Duration {
			if rng.IntN(100) == 0 {
				return 40*time.Millisecond + time.Duration(rng.IntN(1e6))
			}
			return 180*time.Microsecond + time.Duration(rng.IntN(4e4))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Several workers' histograms, merged, as fill does; half
			// counted one at a time, half buffered as the send loop does.
			var all hist
			var exact []time.Duration
			for w := range 4 {
				var h hist
				buf := make([]time.Duration, 0, 512)
				for range 25_000 {
					d := tc.draw()
					exact = append(exact, d)
					if w%2 == 0 {
						h.add(d)
					} else if buf = append(buf, d); len(buf) == cap(buf) {
						h.addAll(buf)
						buf = buf[:0]
					}
				}
				h.addAll(buf)
				all.merge(&h)
			}
			slices.Sort(exact)
			if all.n != int64(len(exact)) {
				t.Fatalf("n = %d, want %d", all.n, len(exact))
			}
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				want := float64(exact[int(q*float64(len(exact)-1))]) / 1e3
				got := all.quantile(q)
				if tolerance := want * 0.004; math.Abs(got-want) > tolerance {
					t.Errorf("q%v = %.4f µs, want %.4f µs ± %.4f", q, got, want, tolerance)
				}
			}
		})
	}
}

// TestHistBuckets checks the bucket boundaries: every bucket's middle maps
// back to it, buckets are contiguous and ordered, and what is out of range
// lands at the ends.
func TestHistBuckets(t *testing.T) {
	for i := range histBuckets {
		if got := bucket(mid(i)); got != i {
			t.Fatalf("bucket(mid(%d) = %d) = %d", i, mid(i), got)
		}
		if i > 0 && mid(i) <= mid(i-1) {
			t.Fatalf("mid(%d) = %d is not above mid(%d) = %d", i, mid(i), i-1, mid(i-1))
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{-5, 0},
		{0, 0},
		{255, 255},
		{256, 256},
		{257, 256},
		{258, 257},
		{1<<41 - 1, histBuckets - 1},
		{1 << 41, histBuckets - 1},
		{math.MaxInt64, histBuckets - 1},
	} {
		if got := bucket(tc.d); got != tc.want {
			t.Errorf("bucket(%d) = %d, want %d", tc.d, got, tc.want)
		}
	}
	var empty hist
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty histogram's p50 = %v, want 0", got)
	}
}

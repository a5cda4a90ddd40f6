package loadgen

import (
	"math/bits"
	"time"
)

// hist counts latencies in log-linear buckets: exact below 256 ns, then 128
// buckets to each power of two, so a quantile read from it is within 0.4% of
// the latency it stands for. It takes the same 34 KiB however long the run,
// where keeping every latency took 8 bytes per operation (2.4 GB for a
// ten-minute run at 500,000 msgs/s), and storing into that cold slice
// showed in the load's profile. Each worker keeps its own; merge adds them
// up after the workers stop.
type hist struct {
	n      int64
	counts [histBuckets]uint64
}

const (
	histSubBits = 7 // 128 buckets per power of two
	histSub     = 1 << histSubBits
	// histBuckets covers latencies up to 2^41 ns (36 minutes); anything
	// longer counts in the last bucket.
	histBuckets = (41 - histSubBits) * histSub
)

// bucket returns the bucket that counts d.
func bucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	return min((shift+1)*histSub+int(v>>shift)-histSub, histBuckets-1)
}

// mid returns the latency bucket i stands for: the middle of its range.
func mid(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	shift := i/histSub - 1
	low := uint64(histSub+i%histSub) << shift
	return time.Duration(low + 1<<shift/2)
}

func (h *hist) add(d time.Duration) {
	h.counts[bucket(d)]++
	h.n++
}

// addAll adds a worker's buffered latencies. A worker that runs between
// hundreds of others finds its histogram out of cache, and an increment
// waits for the load where a store into a buffer does not (BENCHMARKS.md
// has what counting them one at a time cost).
func (h *hist) addAll(ds []time.Duration) {
	for _, d := range ds {
		h.counts[bucket(d)]++
	}
	h.n += int64(len(ds))
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile in microseconds: the latency of the
// operation ranked q*(n-1) from the fastest.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n-1))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			return float64(mid(i)) / 1e3
		}
	}
	return float64(mid(histBuckets-1)) / 1e3
}

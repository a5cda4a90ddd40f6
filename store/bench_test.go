package store

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

const benchBody = 256

// benchClock is a clock that moves 1 ns..10 µs per reading, like the
// anchors' mem suite, so timestamps are spread as in a busy log.
func benchClock() func() time.Time {
	rng := rand.New(rand.NewPCG(1, 2))
	ns := time.Now().UnixNano()
	return func() time.Time {
		ns += 1 + rng.Int64N(10_000)
		return time.Unix(0, ns)
	}
}

// benchSenders are the senders of the benchmarks' messages: each batch
// comes from one of them, in turn, as each send comes from one member.
var benchSenders = func() []Sender {
	s := make([]Sender, 16)
	for i := range s {
		s[i].Fingerprint[0], s[i].Name = byte(i), "member-"+strconv.Itoa(i)
	}
	return s
}()

// sequence is what the group daemon does with a send's batch: the log's
// duplicates, the sequencing step at now, and Append.
func sequence(tb testing.TB, l *Log, sq *Sequencer, now int64, batch []Entry, acks []Ack) []Ack {
	acks = l.Lookup(batch, acks[:0])
	sq.Last, sq.LastTime = l.Tail()
	n := sq.Stamp(now, batch, acks)
	if err := l.Append(batch[:n]); err != nil {
		tb.Fatal(err)
	}
	return acks
}

// load appends n messages of benchBody bytes with distinct IDs, 64 a batch,
// at the times of clock.
func load(tb testing.TB, l *Log, n int, clock func() time.Time) {
	tb.Helper()
	body := make([]byte, benchBody)
	batch := make([]Entry, 0, 64)
	var acks []Ack
	var sq Sequencer
	for i := 0; i < n; {
		batch = batch[:0]
		from := benchSenders[(i/64)%len(benchSenders)]
		for ; len(batch) < 64 && i < n; i++ {
			e := Entry{From: from, Body: body}
			binary.LittleEndian.PutUint64(e.ID[:], uint64(i)+1)
			batch = append(batch, e)
		}
		acks = sequence(tb, l, &sq, clock().UnixNano(), batch, acks)
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			l, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			body := make([]byte, benchBody)
			batch := make([]Entry, size)
			acks := make([]Ack, 0, size)
			var sq Sequencer
			var n uint64
			b.ReportAllocs()
			b.SetBytes(int64(size * benchBody))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for range b.N {
				from := benchSenders[n%uint64(len(benchSenders))]
				for i := range batch {
					n++
					batch[i] = Entry{From: from, Body: body}
					binary.LittleEndian.PutUint64(batch[i].ID[:], n)
				}
				acks = sequence(b, l, &sq, time.Now().UnixNano(), batch, acks)
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			msgs := float64(b.N * size)
			b.ReportMetric(msgs/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/msgs, "allocs/msg")
		})
	}
}

// million is a log of 1,000,000 messages of 256 B, built once.
var (
	millionOnce sync.Once
	millionLog  *Log
)

func million(tb testing.TB) *Log {
	tb.Helper()
	millionOnce.Do(func() {
		l, err := New(Config{})
		if err != nil {
			tb.Fatal(err)
		}
		load(tb, l, 1_000_000, benchClock())
		runtime.GC()
		millionLog = l
	})
	return millionLog
}

func BenchmarkSince1M(b *testing.B) {
	l := million(b)
	all, _, _ := l.After(0, 1_000_000, nil)
	if len(all) != 1_000_000 {
		b.Fatalf("log holds %d messages, want 1,000,000", len(all))
	}
	const want = 10_000 // the last 1%
	T := all[len(all)-want].Time
	rng := rand.New(rand.NewPCG(3, 4))
	targets := make([]int64, 1<<16)
	for i := range targets {
		targets[i] = all[rng.IntN(len(all))].Time
	}
	all = nil

	b.Run("find/fixed", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]Message, 0, 1)
		for range b.N {
			dst, _, _ = l.Since(T, 1, dst[:0])
		}
		if dst[0].Time != T {
			b.Fatalf("found time %d, want %d", dst[0].Time, T)
		}
	})
	b.Run("find/random", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]Message, 0, 1)
		for i := range b.N {
			dst, _, _ = l.Since(targets[i&(len(targets)-1)], 1, dst[:0])
		}
	})
	b.Run("copy-last-1%", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(want * benchBody)
		dst := make([]Message, 0, want)
		buf := make([]byte, want*benchBody)
		for range b.N {
			var cur Cursor
			dst, cur, _ = l.Since(T, want, dst[:0])
			off := 0
			for i := range dst {
				n := copy(buf[off:], dst[i].Body)
				dst[i].Body = buf[off : off+n : off+n]
				off += n
			}
			if len(dst) != want || cur.More {
				b.Fatalf("got %d messages, More %v", len(dst), cur.More)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/query")
	})
}

// BenchmarkOverhead measures the heap a log spends per message beyond its
// body. The store's own overhead uses a dedup window of 1; the dedup map and
// ring at the default window are measured apart, as they are bounded by the
// window, not the log.
func BenchmarkOverhead(b *testing.B) {
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("store", func(b *testing.B) {
		const n = 1_000_000
		var per float64
		for range b.N {
			base := heap()
			l, err := New(Config{DedupWindow: 1})
			if err != nil {
				b.Fatal(err)
			}
			load(b, l, n, benchClock())
			per = (float64(heap()) - float64(base) - n*benchBody) / n
			runtime.KeepAlive(l)
		}
		b.ReportMetric(per, "overhead-B/msg")
	})
	// Many senders in every segment: a thousand members sending one
	// message each in turn, and the worst case, every message from a
	// sender (or a name) of its own. Names are 12 bytes, each its own
	// string.
	for _, senders := range []int{1000, 1_000_000} {
		b.Run(fmt.Sprintf("store/senders=%d,in-turn", senders), func(b *testing.B) {
			const n = 1_000_000
			from := make([]Sender, senders)
			for i := range from {
				from[i].Name = fmt.Sprintf("member-%05d", i%100_000)
				binary.LittleEndian.PutUint64(from[i].Fingerprint[:], uint64(i))
			}
			var per float64
			for range b.N {
				base := heap()
				l, err := New(Config{DedupWindow: 1})
				if err != nil {
					b.Fatal(err)
				}
				body := make([]byte, benchBody)
				clock := benchClock()
				var sq Sequencer
				batch := make([]Entry, 1)
				var acks []Ack
				for i := range n {
					batch[0] = Entry{From: from[i%senders], Body: body}
					binary.LittleEndian.PutUint64(batch[0].ID[:], uint64(i)+1)
					acks = sequence(b, l, &sq, clock().UnixNano(), batch, acks)
				}
				// The senders' names are the members', not the log's.
				per = (float64(heap()) - float64(base) - n*benchBody) / n
				runtime.KeepAlive(l)
			}
			b.ReportMetric(per, "overhead-B/msg")
		})
	}
	b.Run("dedup", func(b *testing.B) {
		const n = 3 * DefaultDedupWindow // well past the window: steady state
		var per float64
		for range b.N {
			size := func(window int) float64 {
				base := heap()
				l, err := New(Config{DedupWindow: window})
				if err != nil {
					b.Fatal(err)
				}
				load(b, l, n, benchClock())
				h := heap()
				runtime.KeepAlive(l)
				return float64(h) - float64(base)
			}
			per = (size(DefaultDedupWindow) - size(1)) / DefaultDedupWindow
		}
		b.ReportMetric(per, "dedup-B/id")
	})
}

// BenchmarkAppendEvicted is a cell leader's use of a log: Lookup a batch
// of new IDs when a send is stamped (32, or 1: an unbatched send), Append
// it when raft applies it, with the default dedup window full, and 8 MiB
// of other memory walked (not timed) before each step, as the daemon's
// other work evicts the dedup index and ring from the caches in between.
// Warm, as in BenchmarkAppend, the index's cost hardly shows.
func BenchmarkAppendEvicted(b *testing.B) {
	for _, size := range []int{32, 1} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) { benchAppendEvicted(b, size) })
	}
}

func benchAppendEvicted(b *testing.B, size int) {
	l, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, benchBody)
	batch := make([]Entry, size)
	acks := make([]Ack, 0, size)
	other := make([]byte, 8<<20)
	var sq Sequencer
	var n uint64
	next := func() {
		for i := range batch {
			n++
			batch[i] = Entry{From: benchSenders[0], Body: body}
			binary.LittleEndian.PutUint64(batch[i].ID[:], n*0x9e3779b97f4a7c15) // spread over the index
		}
	}
	for range 2 * DefaultDedupWindow / size {
		next()
		acks = sequence(b, l, &sq, time.Now().UnixNano(), batch, acks)
	}
	// The steps are timed one by one, the walks between them not: the
	// benchmark's timer, stopped and started around each walk, cost more
	// than a step of one message (it reads the memory statistics). The
	// median step is reported too, which the preemptions of a loaded
	// machine hardly move.
	evict := func() {
		for i := 0; i < len(other); i += 64 {
			other[i]++
		}
	}
	steps := make([]time.Duration, 0, b.N)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		next()
		evict()
		start := time.Now()
		acks = l.Lookup(batch, acks[:0])
		sq.Last, sq.LastTime = l.Tail()
		k := sq.Stamp(time.Now().UnixNano(), batch, acks)
		lookup := time.Since(start)
		evict()
		start = time.Now()
		if err := l.Append(batch[:k]); err != nil {
			b.Fatal(err)
		}
		step := lookup + time.Since(start)
		steps = append(steps, step)
		total += step
	}
	slices.Sort(steps)
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*size), "ns/msg")
	b.ReportMetric(float64(steps[len(steps)/2].Nanoseconds())/float64(size), "median-ns/msg")
}

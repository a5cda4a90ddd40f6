package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// benchBatch is a batch of k 256-byte messages stamped after seq, t, from
// one sender, with IDs from n on.
func benchBatch(dst []Entry, k int, seq uint64, t int64, n int) []Entry {
	dst = dst[:0]
	for i := range k {
		seq++
		t += 1000
		dst = append(dst, Entry{Seq: seq, Time: t, ID: id(n + i), From: sender(1), Body: diskBody[:]})
	}
	return dst
}

var diskBody [256]byte

// BenchmarkDiskAppend appends batches of 256-byte messages under the
// default policy (written to the OS before Append returns), and reports
// the bytes on disk per message beyond its body.
func BenchmarkDiskAppend(b *testing.B) {
	for _, k := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			dir := b.TempDir()
			d, _, err := Open(DiskConfig{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			var batch []Entry
			b.ReportAllocs()
			b.SetBytes(int64(k * len(diskBody)))
			n := 0
			for b.Loop() {
				seq, t := d.Tail()
				batch = benchBatch(batch, k, seq, t, n)
				n += k
				if err := d.Append(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
			if over := dirBytes(b, dir) - int64(n*len(diskBody)); n >= 1000 {
				b.ReportMetric(float64(over)/float64(n), "disk-B/msg-overhead")
			}
		})
	}
}

// BenchmarkDiskAlways appends from 64 goroutines under fsync always, each
// waiting for its batch to be synced: group commit makes one fsync serve
// many.
func BenchmarkDiskAlways(b *testing.B) {
	for _, k := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			d, _, err := Open(DiskConfig{Dir: b.TempDir(), Fsync: FsyncPolicy{Always: true}})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			var mu sync.Mutex
			n := 0
			syncs := d.syncs.Load()
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var batch []Entry
				for pb.Next() {
					mu.Lock()
					seq, t := d.Tail()
					batch = benchBatch(batch, k, seq, t, n)
					n += k
					err := d.Append(batch)
					mu.Unlock()
					if err == nil {
						err = d.Durable(batch[k-1].Seq)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(n)/float64(max(1, d.syncs.Load()-syncs)), "msgs/fsync")
		})
	}
}

// BenchmarkDiskOpen reopens a log of 100,000 messages of 256 bytes, as a
// restart after a crash does (the files in the page cache).
func BenchmarkDiskOpen(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	d, _, err := Open(DiskConfig{Dir: dir, Fsync: FsyncPolicy{Interval: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	var batch []Entry
	for i := 0; i < n; i += 16 {
		seq, t := d.Tail()
		batch = benchBatch(batch, 16, seq, t, i)
		if err := d.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
	d.crash()
	b.ReportAllocs()
	for b.Loop() {
		d, rec, err := Open(DiskConfig{Dir: dir, Fsync: FsyncPolicy{Interval: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		if rec.Messages != n {
			b.Fatalf("%d messages recovered, want %d", rec.Messages, n)
		}
		d.crash()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDiskSeal appends batches of 16 messages of 256 bytes to a log
// as a cell's group log is configured (WriteBehind 256 KiB, fsync every
// second), with 16 MiB segments so that several are sealed, and reports how
// long the appends that sealed a segment took (in a cell, raft's apply
// goroutine, which every send waits for), on average and at most.
func BenchmarkDiskSeal(b *testing.B) {
	d, _, err := Open(DiskConfig{Dir: b.TempDir(), SegmentBytes: 16 << 20, WriteBehind: 256 << 10})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	fbase := func() uint64 {
		d.wmu.Lock()
		defer d.wmu.Unlock()
		return d.fbase
	}
	var batch []Entry
	var seals int
	var sealing, most time.Duration
	b.SetBytes(16 * int64(len(diskBody)))
	n := 0
	for b.Loop() {
		seq, t := d.Tail()
		batch = benchBatch(batch, 16, seq, t, n)
		n += 16
		base := fbase()
		start := time.Now()
		if err := d.Append(batch); err != nil {
			b.Fatal(err)
		}
		if took := time.Since(start); fbase() != base {
			seals++
			sealing += took
			most = max(most, took)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	if seals > 0 {
		b.ReportMetric(float64(sealing.Microseconds())/1000/float64(seals), "ms/seal")
		b.ReportMetric(float64(most.Microseconds())/1000, "ms-max-seal")
		b.ReportMetric(float64(seals), "seals")
	}
}

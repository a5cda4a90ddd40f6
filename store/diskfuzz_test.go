package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// segmentSeeds returns segment files written by a disk log: one small,
// one with many senders, and the first cut short.
func segmentSeeds(f *testing.F) [][]byte {
	f.Helper()
	var seeds [][]byte
	for i, n := range []int{3, 40} {
		dir := f.TempDir()
		d, _, err := Open(DiskConfig{Dir: dir, Fsync: FsyncPolicy{Interval: time.Hour}})
		if err != nil {
			f.Fatal(err)
		}
		w := newWriter(uint64(20 + i))
		for range n {
			seq, ts := d.Tail()
			if err := d.Append(w.batch(1+w.rng.IntN(3), 40, seq, ts)); err != nil {
				f.Fatal(err)
			}
		}
		d.Close()
		data, err := os.ReadFile(filepath.Join(dir, segName(1)))
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	seeds = append(seeds, seeds[0][:len(seeds[0])-5], seeds[0][:segHeaderSize])
	return seeds
}

// FuzzOpenSegment opens a log whose only segment holds the input: it
// opens or fails with ErrCorrupt or ErrFutureVersion, never panics, and
// what it opens it opens the same again (the torn tail cut once).
func FuzzOpenSegment(f *testing.F) {
	for _, s := range segmentSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := DiskConfig{Dir: dir, Fsync: FsyncPolicy{Interval: time.Hour}}
		d, _, err := Open(cfg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFutureVersion) {
				t.Fatalf("Open: %v, want ErrCorrupt or ErrFutureVersion", err)
			}
			return
		}
		first, _, _ := d.After(0, 1<<20, nil)
		for i := range first {
			// Bodies read back are the file's mapping, which Close unmaps.
			first[i].Body = bytes.Clone(first[i].Body)
		}
		d.Close()
		d2, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("opened once, then: %v", err)
		}
		defer d2.Close()
		again, _, _ := d2.After(0, 1<<20, nil)
		if rec.TornBytes != 0 || len(again) != len(first) {
			t.Fatalf("second open: %+v, %d messages, want nothing torn and %d", rec, len(again), len(first))
		}
		for i := range first {
			a, b := &first[i], &again[i]
			if a.Seq != b.Seq || a.Time != b.Time || a.ID != b.ID || *a.From != *b.From || !bytes.Equal(a.Body, b.Body) {
				t.Fatalf("message %d differs between opens", i)
			}
		}
	})
}

// FuzzDecodeIndex: an index decodes or fails with ErrCorrupt or
// ErrFutureVersion; one that decodes encodes back to the same bytes.
func FuzzDecodeIndex(f *testing.F) {
	x := segIndex{base: 5, last: 90, segLen: 1 << 20, entries: []idxEntry{{5, 100, 48}, {40, 200, 5000}, {77, 300, 9100}}}
	f.Add(x.encode(nil))
	f.Add((&segIndex{base: 1, last: 0, segLen: 48}).encode(nil))
	f.Fuzz(func(t *testing.T, p []byte) {
		x, err := decodeIndex(p)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFutureVersion) {
				t.Fatalf("decodeIndex: %v", err)
			}
			return
		}
		if got := x.encode(nil); !bytes.Equal(got, p) {
			t.Fatalf("decoded %+v, encodes to %x, want %x", x, got, p)
		}
	})
}

// FuzzDecodeSmall: the fixed-size header and checkpoint decode or fail
// with ErrCorrupt or ErrFutureVersion; what decodes encodes back the same.
func FuzzDecodeSmall(f *testing.F) {
	c := checkpoint{epoch: 7, synced: 100, first: 3}
	p := c.encode()
	f.Add(p[:])
	f.Add((&segHeader{epoch: 7, base: 1}).encode(nil))
	f.Fuzz(func(t *testing.T, p []byte) {
		if c, err := decodeCheckpoint(p); err == nil {
			if q := c.encode(); !bytes.Equal(q[:], p) {
				t.Fatalf("checkpoint %+v encodes to %x, want %x", c, q, p)
			}
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFutureVersion) {
			t.Fatalf("decodeCheckpoint: %v", err)
		}
		if h, err := decodeSegHeader(p); err == nil {
			if q := h.encode(nil); !bytes.Equal(q, p[:segHeaderSize]) {
				t.Fatalf("header %+v encodes to %x, want %x", h, q, p[:segHeaderSize])
			}
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFutureVersion) {
			t.Fatalf("decodeSegHeader: %v", err)
		}
	})
}

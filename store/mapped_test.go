package store

import (
	"testing"
	"time"
)

// mappings returns the distinct mappings of l's held segments, and how
// many segments are in the heap.
func mappings(l *Log) (ms []*mapping, heap int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		switch {
		case s.mapped == nil:
			heap++
		case len(ms) == 0 || ms[len(ms)-1] != s.mapped:
			ms = append(ms, s.mapped)
		}
	}
	return ms, heap
}

// TestDiskMapped: the history read back at open stays in the files'
// mappings, cut into segments as appends cut them; queries run across
// mapped and heap segments alike; a file's mapping outlives the eviction
// of its last segment by mapGrace, and Close unmaps the rest.
func TestDiskMapped(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{MaxMessages: 4000, SegmentSize: 100}}
	d, _ := diskLog(t, cfg)
	w := newWriter(11)
	all := w.fill(t, d, 3000, 100)
	d.crash()

	d2, rec := diskLog(t, cfg)
	ms, heap := mappings(d2.mem)
	// Files hold MaxMessages/8 = 500 messages (and a record more): six
	// of them, each cut into segments of 100 (SegmentSize).
	if len(ms) != rec.Segments || len(ms) < 6 || heap != 0 {
		t.Fatalf("after reopening: %d mappings, %d heap segments, %d files read, want a mapping per file and no heap segment", len(ms), heap, rec.Segments)
	}
	if got := d2.mem.Stats().Segments; got < 30 {
		t.Fatalf("%d segments for 3000 messages, want them cut at 100 messages (30 or more)", got)
	}
	checkHolds(t, d2, all)
	more := w.fill(t, d2, 600, 100)
	all = append(all, more...)
	checkHolds(t, d2, all)
	// A since-query from inside the mapped history into the heap.
	from := all[2950]
	got, cur, _ := d2.Since(from.Time, 100, nil)
	if len(got) != 100 || got[0].Seq != from.Seq || got[99].Seq != all[3049].Seq || string(got[99].Body) != string(all[3049].Body) || !cur.More {
		t.Fatalf("since %d: %d messages from %d, more %v; want 100 from %d", from.Time, len(got), got[0].Seq, cur.More, from.Seq)
	}

	// Retention (4000) evicts the oldest file's segments: its mapping is
	// retired, not unmapped, and a body taken before is still readable.
	old, _, _ := d2.After(0, 1, nil)
	oldest := ms[0]
	w.fill(t, d2, 1000, 100)
	if st := d2.Stats(); st.First <= all[515].Seq {
		t.Fatalf("first held %d, want the first file's messages (at most 516) evicted", st.First)
	}
	d2.mem.mu.Lock()
	retiredN, done := len(d2.mem.retired), oldest.done
	d2.mem.mu.Unlock()
	if retiredN == 0 || done {
		t.Fatalf("the evicted file's mapping: %d retired, unmapped %v; want it retired, still mapped", retiredN, done)
	}
	if string(old[0].Body) != string(all[0].Body) {
		t.Fatal("a body read before the eviction changed")
	}
	// Once the grace is over, the next eviction unmaps it.
	d2.mem.mu.Lock()
	for i := range d2.mem.retired {
		d2.mem.retired[i].at = d2.mem.retired[i].at.Add(-mapGrace - time.Second)
	}
	d2.mem.mu.Unlock()
	w.fill(t, d2, 500, 100)
	d2.mem.mu.Lock()
	done = oldest.done
	d2.mem.mu.Unlock()
	if !done {
		t.Fatal("the evicted file's mapping is still mapped after its grace and another eviction")
	}
	rest, _ := mappings(d2.mem)
	if len(rest) == 0 {
		t.Fatal("no mapped segment left to check Close with")
	}
	d2.Close()
	for _, m := range rest {
		if !m.done {
			t.Fatal("a mapping is still mapped after Close")
		}
	}
}

// TestDiskMappedRetentionShrunk: a log reopened under a retention far
// smaller than its files keeps what the new retention allows, at the
// granularity of its segments, as appends would.
func TestDiskMappedRetentionShrunk(t *testing.T) {
	dir := t.TempDir()
	d, _ := diskLog(t, DiskConfig{Dir: dir})
	w := newWriter(12)
	all := w.fill(t, d, 2000, 100)
	d.crash()
	d2, _ := diskLog(t, DiskConfig{Dir: dir, Config: Config{MaxMessages: 400, SegmentSize: 50}})
	st := d2.Stats()
	if st.Messages > 400 || st.Messages < 350 || st.Last != all[len(all)-1].Seq {
		t.Fatalf("holds %d messages to %d, want 350..400 to %d", st.Messages, st.Last, all[len(all)-1].Seq)
	}
	checkHolds(t, d2, all[st.First-1:])
}

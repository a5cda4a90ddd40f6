package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// clock is an injectable clock the test moves by hand.
type clock struct{ ns int64 }

func (c *clock) now() time.Time { return time.Unix(0, c.ns) }

// testLog is a Log with the sequencing step in front of it, as the group
// daemon puts it: under one lock, the log's Lookup, a Sequencer from the
// log's Tail stamping at the clock's reading, and Append of what is new.
type testLog struct {
	*Log
	clock *clock // nil: time.Now

	mu      sync.Mutex
	seq     Sequencer
	dups    int // entries acknowledged as duplicates
	stamped []Entry
}

// newLog returns a log on cfg whose clock starts at 1e9 ns, with its clock.
func newLog(t *testing.T, cfg Config) (*testLog, *clock) {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	c := &clock{ns: 1e9}
	return &testLog{Log: l, clock: c}, c
}

// appendTo sequences and appends batch, leaving it as it was, and appends
// one ack per entry to acks. On error, acks and the log are unchanged.
func (l *testLog) appendTo(acks []Ack, batch []Entry) ([]Ack, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().UnixNano()
	if l.clock != nil {
		now = l.clock.ns
	}
	start := len(acks)
	acks = l.Lookup(batch, acks)
	l.stamped = append(l.stamped[:0], batch...)
	l.seq.Last, l.seq.LastTime = l.Tail()
	n := l.seq.Stamp(now, l.stamped, acks[start:])
	if n > 0 {
		if err := l.Append(l.stamped[:n]); err != nil {
			return acks[:start], err
		}
	}
	l.dups += len(batch) - n
	return acks, nil
}

func (l *testLog) append(batch []Entry) ([]Ack, error) {
	return l.appendTo(make([]Ack, 0, len(batch)), batch)
}

func id(n int) [16]byte {
	var b [16]byte
	b[0], b[1], b[2] = byte(n), byte(n>>8), byte(n>>16)
	b[15] = 0xee
	return b
}

// sender is the n-th of a few senders.
func sender(n int) Sender {
	s := Sender{Name: fmt.Sprintf("user %d", n%5)}
	s.Fingerprint[0] = byte(n % 5)
	return s
}

func entry(n int, body string) Entry { return Entry{ID: id(n), From: sender(n), Body: []byte(body)} }

func mustAppend(t *testing.T, l *testLog, batch ...Entry) []Ack {
	t.Helper()
	acks, err := l.append(batch)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return acks
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"all set", Config{MaxMessages: 10, MaxBytes: 100, MaxAge: time.Hour, SegmentSize: 2, DedupWindow: 5}, true},
		{"negative MaxMessages", Config{MaxMessages: -1}, false},
		{"negative MaxBytes", Config{MaxBytes: -1}, false},
		{"negative MaxAge", Config{MaxAge: -time.Second}, false},
		{"negative SegmentSize", Config{SegmentSize: -1}, false},
		{"negative DedupWindow", Config{DedupWindow: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if got := err == nil; got != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, not ErrInvalidConfig", err)
			}
			if _, nerr := New(tt.cfg); (nerr == nil) != tt.ok {
				t.Fatalf("New() = %v, want ok=%v", nerr, tt.ok)
			}
		})
	}
}

func TestLimitsDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want limits
	}{
		{"zero", Config{}, limits{maxMessages: 1_000_000, maxBytes: 256 << 20, segMessages: 4096, segBytes: 32 << 20, dedupWindow: 65536}},
		{"small count caps segment", Config{MaxMessages: 80}, limits{maxMessages: 80, maxBytes: 256 << 20, segMessages: 10, segBytes: 32 << 20, dedupWindow: 65536}},
		{"tiny count", Config{MaxMessages: 3, MaxBytes: 5, SegmentSize: 7, DedupWindow: 2}, limits{maxMessages: 3, maxBytes: 5, segMessages: 1, segBytes: 1, dedupWindow: 2}},
		{"huge bytes", Config{MaxBytes: 1 << 40}, limits{maxMessages: 1_000_000, maxBytes: 1 << 40, segMessages: 4096, segBytes: 1 << 30, dedupWindow: 65536}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cfg.limits()
			if got.maxMessages != tt.want.maxMessages || got.maxBytes != tt.want.maxBytes || got.maxAge != tt.want.maxAge ||
				got.segMessages != tt.want.segMessages || got.segBytes != tt.want.segBytes || got.dedupWindow != tt.want.dedupWindow {
				t.Fatalf("limits() = %+v, want %+v", got, tt.want)
			}
			if m, b := tt.cfg.Retains(); m != tt.want.maxMessages || b != tt.want.maxBytes {
				t.Fatalf("Retains() = %d, %d; want %d, %d", m, b, tt.want.maxMessages, tt.want.maxBytes)
			}
		})
	}
}

func TestAppendErrors(t *testing.T) {
	big := make([]byte, 101)
	// stamped stamps entries from 2 on, after the one appended first.
	stamped := func(es ...Entry) []Entry {
		for i := range es {
			es[i].Seq, es[i].Time = uint64(2+i), int64(2e9+i)
		}
		return es
	}
	tests := []struct {
		name  string
		batch []Entry
		want  error
	}{
		{"empty", nil, ErrEmptyBatch},
		{"empty slice", []Entry{}, ErrEmptyBatch},
		{"too many", stamped(entry(1, ""), entry(2, ""), entry(3, ""), entry(4, ""), entry(5, ""), entry(6, ""), entry(7, ""), entry(8, ""), entry(9, ""), entry(10, ""), entry(11, "")), ErrBatchTooLarge},
		{"body too large", stamped(entry(1, "ok"), Entry{ID: id(2), Body: big}), ErrBodyTooLarge},
		{"bytes too many", stamped(Entry{ID: id(1), Body: big[:60]}, Entry{ID: id(2), Body: big[:41]}), ErrBatchTooLarge},
		{"not the next seq", []Entry{{Seq: 3, Time: 2e9, ID: id(1)}}, ErrOutOfOrder},
		{"seq again", []Entry{{Seq: 1, Time: 2e9, ID: id(1)}}, ErrOutOfOrder},
		{"seq 0", []Entry{{Time: 2e9, ID: id(1)}}, ErrOutOfOrder},
		{"a gap within", []Entry{{Seq: 2, Time: 2e9, ID: id(1)}, {Seq: 4, Time: 3e9, ID: id(2)}}, ErrOutOfOrder},
		{"time not after the tail", []Entry{{Seq: 2, Time: 1e9, ID: id(1)}}, ErrOutOfOrder},
		{"time not increasing", []Entry{{Seq: 2, Time: 2e9, ID: id(1)}, {Seq: 3, Time: 2e9, ID: id(2)}}, ErrOutOfOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLog(t, Config{MaxMessages: 10, MaxBytes: 100})
			mustAppend(t, l, entry(100, "before"))
			if err := l.Append(tt.batch); !errors.Is(err, tt.want) {
				t.Fatalf("Append() error = %v, want %v", err, tt.want)
			}
			got := l.Stats()
			want := Stats{Messages: 1, Bytes: 6, Segments: 1, First: 1, Last: 1, AppendedBytes: 6}
			if got != want {
				t.Fatalf("Stats() after failed append = %+v, want %+v", got, want)
			}
			if seq, ts := l.Tail(); seq != 1 || ts != 1e9 {
				t.Fatalf("Tail() after failed append = %d, %d, want 1, 1e9", seq, ts)
			}
			for i, a := range l.Lookup(tt.batch, nil) {
				if a.Duplicate && tt.batch[i].ID != id(100) {
					t.Fatalf("a failed append left entry %d's ID remembered: %+v", i, a)
				}
			}
		})
	}
}

func TestTimeStrictlyIncreasing(t *testing.T) {
	l, c := newLog(t, Config{})
	steps := []struct {
		clock int64 // clock before the append
		batch int
		want  []Ack
	}{
		{1000, 1, []Ack{{Seq: 1, Time: 1000}}},
		{1000, 2, []Ack{{Seq: 2, Time: 1001}, {Seq: 3, Time: 1002}}},
		{500, 1, []Ack{{Seq: 4, Time: 1003}}}, // clock stepped back
		{1003, 1, []Ack{{Seq: 5, Time: 1004}}},
		{5000, 2, []Ack{{Seq: 6, Time: 5000}, {Seq: 7, Time: 5001}}},
		{-7, 1, []Ack{{Seq: 8, Time: 5002}}},
	}
	n := 0
	for i, st := range steps {
		c.ns = st.clock
		var batch []Entry
		for range st.batch {
			n++
			batch = append(batch, entry(n, "x"))
		}
		got := mustAppend(t, l, batch...)
		if !equalAcks(got, st.want) {
			t.Fatalf("step %d: acks = %v, want %v", i, got, st.want)
		}
	}
	msgs, cur, _ := l.After(0, 100, nil)
	if len(msgs) != 8 || cur != (Cursor{Next: 8, First: 1, Last: 8}) {
		t.Fatalf("After(0) = %d msgs, %+v", len(msgs), cur)
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Time <= msgs[i-1].Time || msgs[i].Seq != msgs[i-1].Seq+1 {
			t.Fatalf("messages %d and %d out of order: %+v %+v", i-1, i, msgs[i-1], msgs[i])
		}
	}
}

func equalAcks(a, b []Ack) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDuplicates(t *testing.T) {
	l, c := newLog(t, Config{DedupWindow: 3})
	c.ns = 100
	steps := []struct {
		ids  []int
		want []Ack
	}{
		{[]int{1, 2, 1}, []Ack{{1, 100, false}, {2, 101, false}, {1, 100, true}}},
		{[]int{2}, []Ack{{2, 101, true}}},
		{[]int{3, 4}, []Ack{{3, 102, false}, {4, 103, false}}}, // 1 leaves the window
		{[]int{1, 4}, []Ack{{5, 104, false}, {4, 103, true}}},
		// 2 is forgotten; 3 is remembered when the batch is looked up,
		// though storing 6 forgets it.
		{[]int{2, 3, 3}, []Ack{{6, 105, false}, {3, 102, true}, {3, 102, true}}},
		{[]int{3}, []Ack{{7, 106, false}}},
	}
	for i, st := range steps {
		var batch []Entry
		for _, n := range st.ids {
			batch = append(batch, entry(n, "b"))
		}
		if got := mustAppend(t, l, batch...); !equalAcks(got, st.want) {
			t.Fatalf("step %d: acks = %v, want %v", i, got, st.want)
		}
	}
	if got := l.Stats(); l.dups != 5 || got.Messages != 7 {
		t.Fatalf("Stats() = %+v, %d duplicates, want 5 duplicates, 7 messages", got, l.dups)
	}
}

func TestQueries(t *testing.T) {
	l, c := newLog(t, Config{SegmentSize: 3, MaxMessages: 1000})
	// 10 messages at times 10, 20, ..., 100 across 4 segments.
	for i := 1; i <= 10; i++ {
		c.ns = int64(10 * i)
		mustAppend(t, l, entry(i, string(rune('a'+i-1))))
	}
	seqs := func(ms []Message) string {
		var b []byte
		for _, m := range ms {
			b = append(b, m.Body...)
		}
		return string(b)
	}
	t.Run("After", func(t *testing.T) {
		tests := []struct {
			after uint64
			limit int
			want  string
			cur   Cursor
		}{
			{0, 100, "abcdefghij", Cursor{Next: 10, First: 1, Last: 10}},
			{0, 4, "abcd", Cursor{Next: 4, More: true, First: 1, Last: 10}},
			{3, 3, "def", Cursor{Next: 6, More: true, First: 1, Last: 10}},
			{9, 5, "j", Cursor{Next: 10, First: 1, Last: 10}},
			{10, 5, "", Cursor{Next: 10, First: 1, Last: 10}},
			{50, 5, "", Cursor{Next: 50, First: 1, Last: 10}},
			{math.MaxUint64, 5, "", Cursor{Next: math.MaxUint64, First: 1, Last: 10}}, // seq+1 must not wrap to 0
			{math.MaxUint64 - 1, 5, "", Cursor{Next: math.MaxUint64 - 1, First: 1, Last: 10}},
			{2, 0, "", Cursor{Next: 2, More: true, First: 1, Last: 10}},
		}
		for _, tt := range tests {
			got, cur, _ := l.After(tt.after, tt.limit, nil)
			if seqs(got) != tt.want || cur != tt.cur {
				t.Errorf("After(%d, %d) = %q %+v, want %q %+v", tt.after, tt.limit, seqs(got), cur, tt.want, tt.cur)
			}
		}
	})
	t.Run("Since", func(t *testing.T) {
		tests := []struct {
			ts    int64
			limit int
			want  string
			cur   Cursor
		}{
			{0, 100, "abcdefghij", Cursor{Next: 10, First: 1, Last: 10}},
			{10, 2, "ab", Cursor{Next: 2, More: true, First: 1, Last: 10}},
			{11, 2, "bc", Cursor{Next: 3, More: true, First: 1, Last: 10}},
			{30, 3, "cde", Cursor{Next: 5, More: true, First: 1, Last: 10}},
			{40, 100, "defghij", Cursor{Next: 10, First: 1, Last: 10}},
			{91, 100, "j", Cursor{Next: 10, First: 1, Last: 10}},
			{101, 100, "", Cursor{Next: 10, First: 1, Last: 10}},
			{70, 0, "", Cursor{Next: 6, More: true, First: 1, Last: 10}},
		}
		for _, tt := range tests {
			got, cur, _ := l.Since(tt.ts, tt.limit, nil)
			if seqs(got) != tt.want || cur != tt.cur {
				t.Errorf("Since(%d, %d) = %q %+v, want %q %+v", tt.ts, tt.limit, seqs(got), cur, tt.want, tt.cur)
			}
		}
	})
	t.Run("fields", func(t *testing.T) {
		dst := make([]Message, 1, 4)
		got, _, _ := l.After(6, 1, dst)
		from := sender(7)
		want := Message{Seq: 7, Time: 70, ID: id(7), From: &from, Body: []byte("g")}
		if len(got) != 2 || got[1].Seq != want.Seq || got[1].Time != want.Time || got[1].ID != want.ID ||
			*got[1].From != *want.From || !bytes.Equal(got[1].Body, want.Body) {
			t.Fatalf("After(6, 1) = %+v, want %+v appended", got, want)
		}
		if cap(got[1].Body) != len(got[1].Body) {
			t.Fatalf("Body cap %d, want %d: appending would overwrite the slab", cap(got[1].Body), len(got[1].Body))
		}
	})
}

func TestEmptyLog(t *testing.T) {
	l, _ := newLog(t, Config{})
	if got, cur, _ := l.After(0, 10, nil); len(got) != 0 || cur != (Cursor{}) {
		t.Fatalf("After on empty log = %v %+v", got, cur)
	}
	if got, cur, _ := l.Since(0, 10, nil); len(got) != 0 || cur != (Cursor{}) {
		t.Fatalf("Since on empty log = %v %+v", got, cur)
	}
	if got := l.Stats(); got != (Stats{}) {
		t.Fatalf("Stats on empty log = %+v", got)
	}
}

func TestRetention(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		// MaxMessages 16 caps segments at 2 messages.
		l, _ := newLog(t, Config{MaxMessages: 16})
		for i := 1; i <= 17; i++ {
			mustAppend(t, l, entry(i, "x"))
		}
		got := l.Stats()
		want := Stats{Messages: 15, Bytes: 15, Segments: 8, First: 3, Last: 17, Evicted: 2, AppendedBytes: 17}
		if got != want {
			t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
		_, cur, _ := l.After(0, 1, nil)
		if cur.Next != 3 || cur.First != 3 {
			t.Fatalf("After(0) cursor %+v: want the gap reported (First 3)", cur)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		// MaxBytes 80: segments seal past 10 bytes.
		l, _ := newLog(t, Config{MaxBytes: 80})
		for i := 1; i <= 9; i++ {
			mustAppend(t, l, entry(i, "0123456789"))
		}
		got := l.Stats()
		want := Stats{Messages: 8, Bytes: 80, Segments: 8, First: 2, Last: 9, Evicted: 1, AppendedBytes: 90}
		if got != want {
			t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
		// A body bigger than a segment's quota gets its own segment, and
		// evicts what it must.
		mustAppend(t, l, Entry{ID: id(50), Body: make([]byte, 75)})
		got = l.Stats()
		want = Stats{Messages: 1, Bytes: 75, Segments: 1, First: 10, Last: 10, Evicted: 9, AppendedBytes: 165}
		if got != want {
			t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
	})
	t.Run("age", func(t *testing.T) {
		l, c := newLog(t, Config{MaxAge: 100, SegmentSize: 2})
		for i := 1; i <= 5; i++ {
			c.ns = int64(i * 10)
			mustAppend(t, l, entry(i, "x"))
		}
		c.ns = 131 // messages older than 31 are expired; segment [1,2] ends at 20
		l.Expire(c.now())
		if got := l.Stats(); got.First != 3 || got.Messages != 3 {
			t.Fatalf("Stats() = %+v, want First 3, 3 messages", got)
		}
		c.ns = 1000
		l.Expire(c.now())
		got := l.Stats()
		want := Stats{First: 6, Last: 5, Evicted: 5, AppendedBytes: 5}
		if got != want {
			t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
		if _, cur, _ := l.After(2, 10, nil); cur != (Cursor{Next: 2, First: 6, Last: 5}) {
			t.Fatalf("After(2) = %+v on an emptied log", cur)
		}
		acks := mustAppend(t, l, entry(6, "y"))
		if acks[0].Seq != 6 {
			t.Fatalf("Append after everything expired: seq %d, want 6", acks[0].Seq)
		}
		if got, cur, _ := l.After(0, 10, nil); len(got) != 1 || cur != (Cursor{Next: 6, First: 6, Last: 6}) {
			t.Fatalf("After(0) = %v %+v", got, cur)
		}
	})
}

func TestChanged(t *testing.T) {
	l, _ := newLog(t, Config{})
	c1 := l.Changed()
	c2 := l.Changed()
	if c1 != c2 {
		t.Fatal("Changed() between appends returned different channels")
	}
	select {
	case <-c1:
		t.Fatal("Changed() closed before any append")
	default:
	}
	done := make(chan uint64)
	go func() {
		<-c1
		msgs, _, _ := l.After(0, 10, nil)
		done <- msgs[0].Seq
	}()
	mustAppend(t, l, entry(1, "x"))
	if got := <-done; got != 1 {
		t.Fatalf("watcher saw seq %d, want 1", got)
	}
	c3 := l.Changed()
	if c3 == c1 {
		t.Fatal("Changed() after an append returned the closed channel")
	}
	// A duplicate stores nothing and wakes nobody.
	mustAppend(t, l, entry(1, "x"))
	select {
	case <-c3:
		t.Fatal("duplicate-only append closed Changed()")
	default:
	}
	mustAppend(t, l, entry(2, "x"))
	select {
	case <-c3:
	default:
		t.Fatal("append did not close Changed()")
	}
}

func TestAppendNoAllocs(t *testing.T) {
	l, err := New(Config{SegmentSize: 1 << 20, MaxMessages: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 256)
	batch := make([]Entry, 64) // large enough for Stamp's table
	acks := make([]Ack, 0, len(batch))
	senders := []Sender{sender(1), sender(2), sender(3)}
	var sq Sequencer
	n := 0
	// Each round is what the group daemon does for a send: Lookup, Stamp
	// and Append.
	round := func() {
		from := senders[n%len(senders)]
		for i := range batch {
			n++
			batch[i] = Entry{ID: id(n), From: from, Body: body}
		}
		acks = l.Lookup(batch, acks[:0])
		sq.Last, sq.LastTime = l.Tail()
		k := sq.Stamp(int64(n), batch, acks)
		if err := l.Append(batch[:k]); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: let the segment, slab and dedup map grow past what the
	// measured appends need.
	for range 2000 {
		round()
	}
	if allocs := testing.AllocsPerRun(100, round); allocs > 0.5 {
		t.Fatalf("Lookup, Stamp, Append: %.1f allocs per batch of 64, want ~0", allocs)
	}
}

// heldSenders counts the sender dictionary entries of the segments held.
func heldSenders(l *Log) int {
	n := 0
	for _, s := range l.view.Load().segs {
		n += len(s.cols.Load().senders)
	}
	return n
}

// TestSenders checks that every message keeps the sender it was appended
// with, a renamed sender's older messages their old name included, and that
// the dictionaries the log keeps for them are bounded by the messages held:
// a member that renames itself before every message, thousands of times,
// costs the log no more than the messages retention keeps. (This was the
// daemon's sender table and its TestSenderTableBounded.)
func TestSenders(t *testing.T) {
	l, _ := newLog(t, Config{MaxMessages: 80}) // segments of 10
	fp := [32]byte{7}
	for i := range 2000 {
		name := fmt.Sprintf("loud-%d", i)
		mustAppend(t, l, Entry{ID: id(i), From: Sender{Fingerprint: fp, Name: name}, Body: []byte(name)})
	}
	msgs, _, _ := l.After(0, 1000, nil)
	if len(msgs) < 70 || len(msgs) > 80 {
		t.Fatalf("%d messages held, want 70..80", len(msgs))
	}
	for _, m := range msgs {
		if m.From.Name != string(m.Body) || m.From.Fingerprint != fp {
			t.Fatalf("message %d from %q (%x), want %q", m.Seq, m.From.Name, m.From.Fingerprint[:2], m.Body)
		}
	}
	if n, interned := heldSenders(l.Log), len(l.senders); n != len(msgs) || interned != len(msgs) {
		t.Fatalf("%d senders in dictionaries, %d interned, for %d messages each from another name", n, interned, len(msgs))
	}

	// Many messages from few senders: a few entries per segment.
	for i := range 2000 {
		mustAppend(t, l, entry(10_000+i, "x"))
	}
	st := l.Stats()
	if n, interned := heldSenders(l.Log), len(l.senders); n > 5*st.Segments || interned != 5 {
		t.Fatalf("%d senders in the dictionaries of %d segments, %d interned, from 5 senders", n, st.Segments, interned)
	}
	msgs, _, _ = l.After(0, 1000, nil)
	for _, m := range msgs {
		if n := int(m.ID[0]) | int(m.ID[1])<<8 | int(m.ID[2])<<16; *m.From != sender(n) {
			t.Fatalf("message %d from %+v, want %+v", m.Seq, m.From, sender(n))
		}
	}
}

// TestEpoch checks that each log has its own nonzero epoch, kept for its
// life.
func TestEpoch(t *testing.T) {
	a, _ := newLog(t, Config{})
	b, _ := newLog(t, Config{})
	if a.Epoch() == 0 || a.Epoch() == b.Epoch() {
		t.Fatalf("epochs %d and %d: want two nonzero, different", a.Epoch(), b.Epoch())
	}
	e := a.Epoch()
	mustAppend(t, a, entry(1, "x"))
	a.Expire(time.Unix(1e6, 0))
	if a.Epoch() != e {
		t.Fatalf("epoch changed from %d to %d", e, a.Epoch())
	}
}

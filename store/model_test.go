package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is what the log promises, kept as plain slices: held segments of
// messages, every stored (ID, seq, time) for the dedup window, counters.
type model struct {
	maxMessages int
	maxBytes    int64
	maxAge      int64
	segMessages int // quotas as Config documents them
	segBytes    int64
	window      int

	segs       [][]Message
	stored     []Message // every message ever stored, for dedup
	lastSeq    uint64
	lastTime   int64
	evicted    uint64
	duplicates uint64
}

func newModel(cfg Config) *model {
	m := &model{maxMessages: cfg.MaxMessages, maxBytes: cfg.MaxBytes, maxAge: int64(cfg.MaxAge),
		segMessages: cfg.SegmentSize, window: cfg.DedupWindow}
	if m.maxMessages == 0 {
		m.maxMessages = 1_000_000
	}
	if m.maxBytes == 0 {
		m.maxBytes = 256 << 20
	}
	if m.segMessages == 0 {
		m.segMessages = 4096
	}
	m.segMessages = min(m.segMessages, max(1, m.maxMessages/8))
	m.segBytes = min(max(1, m.maxBytes/8), 1<<30)
	if m.window == 0 {
		m.window = 65536
	}
	return m
}

func segBytes(seg []Message) (n int64) {
	for _, msg := range seg {
		n += int64(len(msg.Body))
	}
	return n
}

func (m *model) held() (msgs []Message) {
	for _, s := range m.segs {
		msgs = append(msgs, s...)
	}
	return msgs
}

// append is the log's append as the sequencing step feeds it: entries whose
// ID is remembered, in the log or earlier in the batch, are acknowledged as
// duplicates; the others are checked (all or none stored), stamped and
// stored.
func (m *model) append(now int64, batch []Entry) ([]Ack, error) {
	var acks []Ack
	var fresh []Message
	seq, t := m.lastSeq, m.lastTime
next:
	for _, e := range batch {
		recent := slices.Concat(m.stored[max(0, len(m.stored)-m.window):], fresh)
		for _, s := range recent {
			if s.ID == e.ID {
				acks = append(acks, Ack{Seq: s.Seq, Time: s.Time, Duplicate: true})
				continue next
			}
		}
		seq++
		t = max(now, t+1)
		from := e.From
		fresh = append(fresh, Message{Seq: seq, Time: t, ID: e.ID, From: &from, Body: bytes.Clone(e.Body)})
		acks = append(acks, Ack{Seq: seq, Time: t})
	}
	if len(fresh) == 0 {
		m.duplicates += uint64(len(batch))
		return acks, nil
	}
	if len(fresh) > m.maxMessages {
		return nil, ErrBatchTooLarge
	}
	var total int64
	for _, msg := range fresh {
		if int64(len(msg.Body)) > m.maxBytes {
			return nil, ErrBodyTooLarge
		}
		total += int64(len(msg.Body))
	}
	if total > m.maxBytes {
		return nil, ErrBatchTooLarge
	}
	m.duplicates += uint64(len(batch) - len(fresh))
	m.lastSeq, m.lastTime = seq, t
	for _, msg := range fresh {
		m.stored = append(m.stored, msg)
		n := len(m.segs)
		if n == 0 || len(m.segs[n-1]) == m.segMessages ||
			(segBytes(m.segs[n-1]) > 0 && segBytes(m.segs[n-1])+int64(len(msg.Body)) > m.segBytes) {
			m.segs = append(m.segs, nil)
			n++
		}
		m.segs[n-1] = append(m.segs[n-1], msg)
	}
	m.retain(t)
	return acks, nil
}

func (m *model) retain(now int64) {
	for len(m.segs) > 0 {
		held, bytes := len(m.held()), segBytes(m.held())
		s := m.segs[0]
		old := m.maxAge > 0 && s[len(s)-1].Time < now-m.maxAge
		if held <= m.maxMessages && bytes <= m.maxBytes && !old {
			return
		}
		m.evicted += uint64(len(s))
		m.segs = m.segs[1:]
	}
}

func (m *model) first() uint64 {
	switch {
	case m.lastSeq == 0:
		return 0
	case len(m.segs) == 0:
		return m.lastSeq + 1
	}
	return m.segs[0][0].Seq
}

// page cuts a query's matches to limit and builds its cursor; before is the
// query's position when nothing is returned.
func (m *model) page(matches []Message, limit int, before uint64) ([]Message, Cursor) {
	cur := Cursor{Next: before, First: m.first(), Last: m.lastSeq}
	out := matches[:max(0, min(limit, len(matches)))]
	if len(out) > 0 {
		cur.Next = out[len(out)-1].Seq
	}
	cur.More = len(out) < len(matches)
	return out, cur
}

func (m *model) after(seq uint64, limit int) ([]Message, Cursor) {
	var matches []Message
	for _, msg := range m.held() {
		if msg.Seq > seq {
			matches = append(matches, msg)
		}
	}
	return m.page(matches, limit, seq)
}

func (m *model) since(ts int64, limit int) ([]Message, Cursor) {
	var matches []Message
	for _, msg := range m.held() {
		if msg.Time >= ts {
			matches = append(matches, msg)
		}
	}
	before := m.lastSeq
	if len(matches) > 0 {
		before = matches[0].Seq - 1
	}
	return m.page(matches, limit, before)
}

func (m *model) stats() Stats {
	held := m.held()
	var appended uint64
	for _, s := range m.stored {
		appended += uint64(len(s.Body))
	}
	return Stats{Messages: len(held), Bytes: segBytes(held), Segments: len(m.segs), First: m.first(),
		Last: m.lastSeq, Evicted: m.evicted, AppendedBytes: appended}
}

func sameMessages(got, want []Message) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d messages, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Time != w.Time || g.ID != w.ID || *g.From != *w.From || !bytes.Equal(g.Body, w.Body) {
			return fmt.Errorf("message %d = %+v, want %+v", i, g, w)
		}
		if cap(g.Body) != len(g.Body) {
			return fmt.Errorf("message %d body cap %d > len %d", i, cap(g.Body), len(g.Body))
		}
	}
	return nil
}

// TestModel runs random appends (with repeated IDs), queries, clock steps
// (backwards too) and expiries against the log and the model, and checks
// they agree on every result.
func TestModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := Config{
			MaxMessages: rapid.SampledFrom([]int{0, 1, 5, 16, 40}).Draw(t, "MaxMessages"),
			MaxBytes:    rapid.SampledFrom([]int64{0, 20, 100, 800}).Draw(t, "MaxBytes"),
			MaxAge:      time.Duration(rapid.SampledFrom([]int64{0, 50, 400}).Draw(t, "MaxAge")),
			SegmentSize: rapid.IntRange(0, 6).Draw(t, "SegmentSize"),
			DedupWindow: rapid.IntRange(0, 8).Draw(t, "DedupWindow"),
		}
		clk := &clock{ns: rapid.Int64Range(-100, 1000).Draw(t, "clock")}
		log, err := New(cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		l := &testLog{Log: log, clock: clk}
		m := newModel(cfg)
		var acks []Ack // reused, as the daemon would
		entryGen := rapid.Custom(func(t *rapid.T) Entry {
			n := rapid.IntRange(0, 12).Draw(t, "id")
			body := make([]byte, rapid.IntRange(0, 30).Draw(t, "len"))
			for i := range body {
				body[i] = byte(n + i)
			}
			return Entry{ID: id(n), From: sender(n), Body: body}
		})
		t.Repeat(map[string]func(*rapid.T){
			"append": func(t *rapid.T) {
				batch := rapid.SliceOfN(entryGen, 0, 8).Draw(t, "batch")
				want, wantErr := m.append(clk.ns, batch)
				got, err := l.appendTo(acks[:0], batch)
				acks = got
				if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
					t.Fatalf("append error %v, want %v", err, wantErr)
				}
				if err == nil && !equalAcks(got, want) {
					t.Fatalf("append = %v, want %v", got, want)
				}
			},
			"clock": func(t *rapid.T) {
				clk.ns += rapid.Int64Range(-300, 300).Draw(t, "step")
			},
			"expire": func(t *rapid.T) {
				m.retain(clk.ns)
				l.Expire(clk.now())
			},
			"after": func(t *rapid.T) {
				seq := rapid.Uint64Range(0, m.lastSeq+2).Draw(t, "seq")
				limit := rapid.IntRange(-1, 12).Draw(t, "limit")
				want, wantCur := m.after(seq, limit)
				got, cur, _ := l.After(seq, limit, nil)
				if err := sameMessages(got, want); err != nil || cur != wantCur {
					t.Fatalf("After(%d, %d): %v; cursor %+v, want %+v", seq, limit, err, cur, wantCur)
				}
			},
			"since": func(t *rapid.T) {
				ts := rapid.Int64Range(-200, m.lastTime+5).Draw(t, "ts")
				limit := rapid.IntRange(-1, 12).Draw(t, "limit")
				want, wantCur := m.since(ts, limit)
				prefix := []Message{{Seq: 12345}}
				got, cur, _ := l.Since(ts, limit, prefix)
				if len(got) == 0 || got[0].Seq != 12345 {
					t.Fatalf("Since(%d, %d) dropped dst's contents", ts, limit)
				}
				if err := sameMessages(got[1:], want); err != nil || cur != wantCur {
					t.Fatalf("Since(%d, %d): %v; cursor %+v, want %+v", ts, limit, err, cur, wantCur)
				}
			},
			"": func(t *rapid.T) {
				if got, want := l.Stats(), m.stats(); got != want {
					t.Fatalf("Stats() = %+v, want %+v", got, want)
				}
				if l.dups != int(m.duplicates) {
					t.Fatalf("%d duplicates acknowledged, want %d", l.dups, m.duplicates)
				}
				if err := sameMessages(func() []Message { g, _, _ := l.After(0, 1<<20, nil); return g }(), m.held()); err != nil {
					t.Fatalf("After(0): %v", err)
				}
			},
		})
	})
}

// TestModelDefaults checks the model's quota formula against the one
// Config documents, so the model cannot drift from the docs unnoticed.
func TestModelDefaults(t *testing.T) {
	for _, cfg := range []Config{{}, {MaxMessages: 5, MaxBytes: 20, SegmentSize: 3}, {MaxBytes: 1 << 40}} {
		m, lim := newModel(cfg), cfg.limits()
		if m.segMessages != lim.segMessages || m.segBytes != int64(lim.segBytes) || m.window != lim.dedupWindow {
			t.Errorf("%+v: model quotas %d/%d/%d, log %d/%d/%d", cfg, m.segMessages, m.segBytes, m.window,
				lim.segMessages, lim.segBytes, lim.dedupWindow)
		}
	}
}

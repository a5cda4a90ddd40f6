package store

import (
	"slices"
	"sort"
)

// Cursor says where a page of messages ends and what the log holds.
type Cursor struct {
	// Next is the value to pass to After to continue: the last returned
	// sequence number, or if none was returned, the query's position (After's
	// seq; for Since, the sequence number before the first match, or Last if
	// nothing matched).
	Next uint64
	// More is true when messages beyond Next are held: the page was cut
	// short by its limit.
	More bool
	// First is the first sequence number still held: 0 if nothing was ever
	// appended, Last+1 if everything was evicted. Messages between the
	// caller's position and First are gone.
	First uint64
	// Last is the last sequence number assigned.
	Last uint64
}

// snap is a consistent view of the log: segs hold exactly first..last.
type snap struct {
	segs        []*segment // segments holding first..last
	first, last uint64
}

// snapshot loads the segment list and the committed sequence number such
// that the list was current when the number was loaded. Segments are added
// before their messages are committed, so the list covers every committed
// message; it may also hold an uncommitted segment at the end, trimmed here.
func (l *Log) snapshot() snap {
	for {
		v := l.view.Load()
		last := l.last.Load()
		if l.view.Load() != v {
			continue // a segment was added or evicted meanwhile; rare
		}
		s := snap{segs: v.segs, first: v.next, last: last}
		for len(s.segs) > 0 && s.segs[len(s.segs)-1].base > last {
			s.segs = s.segs[:len(s.segs)-1]
		}
		if len(s.segs) > 0 {
			s.first = s.segs[0].base
		}
		if last == 0 {
			s.first = 0
		}
		return s
	}
}

func (s *snap) held() int {
	if s.last == 0 {
		return 0
	}
	return int(s.last + 1 - s.first)
}

// count returns how many committed messages segment k holds.
func (s *snap) count(k int) int {
	end := s.last + 1
	if k+1 < len(s.segs) {
		end = s.segs[k+1].base
	}
	return int(end - s.segs[k].base)
}

// After appends to dst the messages with Seq > seq, oldest first, at most
// limit of them (none if limit <= 0), and says where the page ends. If
// messages after seq were evicted, the page starts at Cursor.First. It
// takes no lock and costs O(log n) to the first message.
//
// After [Log.Close] it returns ErrClosed, dst as it was and the zero
// Cursor but Next (seq). An empty page of an open log says its reader is
// caught up; a closed log's cannot (see closedQuery).
func (l *Log) After(seq uint64, limit int, dst []Message) ([]Message, Cursor, error) {
	if l.closed.Load() {
		return closedQuery(dst, seq)
	}
	msgs, cur := l.after(seq, limit, dst)
	return msgs, cur, nil
}

// after is After on a log not known to be closed.
func (l *Log) after(seq uint64, limit int, dst []Message) ([]Message, Cursor) {
	s := l.snapshot()
	cur := Cursor{Next: seq, First: s.first, Last: s.last}
	// seq >= last is checked before seq+1 is computed: seq = 2^64-1 would
	// wrap to 0 and select the whole log.
	if s.held() == 0 || seq >= s.last {
		return dst, cur
	}
	start := max(seq+1, s.first)
	if start > s.last {
		return dst, cur
	}
	k := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > start }) - 1
	return s.page(k, int(start-s.segs[k].base), limit, dst, cur)
}

// closedQuery is a query's answer from a closed log: no message, and
// ErrClosed. Until session 19 a closed log answered an empty page with no
// error, which a reader cannot tell from being caught up: a fetch ended its
// reply as if it had everything, a watch waited for messages that would
// never come, a catch-up served ended its copy there. (A disk log's
// history read back at Open is the files' mappings, unmapped by Close: a
// message returned would fault where its body is read, a crash.)
func closedQuery(dst []Message, next uint64) ([]Message, Cursor, error) {
	return dst, Cursor{Next: next}, ErrClosed
}

// Since appends to dst the messages with Time >= ts, oldest first, at most
// limit of them (none if limit <= 0), and says where the page ends; continue
// with After(cursor.Next). It takes no lock and costs O(log n) to the first
// message. After [Log.Close] it returns ErrClosed, as After does.
func (l *Log) Since(ts int64, limit int, dst []Message) ([]Message, Cursor, error) {
	if l.closed.Load() {
		return closedQuery(dst, 0)
	}
	msgs, cur := l.since(ts, limit, dst)
	return msgs, cur, nil
}

// since is Since on a log not known to be closed.
func (l *Log) since(ts int64, limit int, dst []Message) ([]Message, Cursor) {
	s := l.snapshot()
	cur := Cursor{Next: s.last, First: s.first, Last: s.last}
	if s.held() == 0 {
		return dst, cur
	}
	// The last segment starting at or before ts holds the first match, or
	// the next one starts with it.
	k := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].firstTime > ts }) - 1
	j := 0
	if k >= 0 {
		times := s.segs[k].cols.Load().times[:s.count(k)]
		j = sort.Search(len(times), func(i int) bool { return times[i] >= ts })
		if j == len(times) {
			k, j = k+1, 0
		}
	} else {
		k = 0
	}
	if k == len(s.segs) {
		return dst, cur
	}
	cur.Next = s.segs[k].base + uint64(j) - 1
	return s.page(k, j, limit, dst, cur)
}

// page appends up to limit messages from slot j of segment k on.
func (s *snap) page(k, j, limit int, dst []Message, cur Cursor) ([]Message, Cursor) {
	remain := s.last - (s.segs[k].base + uint64(j)) + 1
	if limit <= 0 {
		cur.More = true
		return dst, cur
	}
	want := int(min(uint64(limit), remain))
	dst = slices.Grow(dst, want)
	for ; want > 0 && k < len(s.segs); k, j = k+1, 0 {
		seg := s.segs[k]
		c := seg.cols.Load()
		n := min(s.count(k), j+want)
		start := uint32(0)
		if j > 0 {
			start = c.ends[j-1]
		}
		if c.starts != nil {
			dst = s.mappedPage(dst, seg, c, j, n)
			want -= n - j
			cur.Next = seg.base + uint64(n) - 1
			continue
		}
		// Slice every column to the run first, so the loop has no bounds
		// checks, and fill dst in place rather than append one by one.
		times, ends, from, ids, senders := c.times[j:n], c.ends[j:n], c.from[j:n], c.ids[j:n], c.senders
		base := len(dst)
		dst = dst[:base+len(times)]
		out := dst[base:]
		out = out[:len(times)]
		ends, from, ids = ends[:len(times)], from[:len(times)], ids[:len(times)]
		seq := seg.base + uint64(j)
		for i := range out {
			end := ends[i]
			m := &out[i]
			m.Seq = seq + uint64(i)
			m.Time = times[i]
			m.ID = ids[i]
			m.From = &senders[from[i]].Sender
			m.Body = c.slab[start:end:end]
			start = end
		}
		want -= n - j
		cur.Next = seg.base + uint64(n) - 1
	}
	cur.More = cur.Next < s.last
	return dst, cur
}

// mappedPage appends slots j..n-1 of a mapped segment (bodies at starts).
func (s *snap) mappedPage(dst []Message, seg *segment, c *columns, j, n int) []Message {
	for i := j; i < n; i++ {
		start, end := c.starts[i], c.ends[i]
		dst = append(dst, Message{Seq: seg.base + uint64(i), Time: c.times[i], ID: c.ids[i],
			From: &c.senders[c.from[i]].Sender, Body: c.slab[start:end:end]})
	}
	return dst
}

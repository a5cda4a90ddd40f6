package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Errors returned by [Log.Append] and [Log.AppendTo]. On any error the log is
// unchanged.
var (
	// ErrEmptyBatch: the batch has no entries.
	ErrEmptyBatch = errors.New("store: empty batch")
	// ErrBatchTooLarge: the batch has more entries than MaxMessages, or its
	// bodies (duplicates included) sum to more than MaxBytes, so retention
	// could not hold it whole.
	ErrBatchTooLarge = errors.New("store: batch larger than the log may hold")
	// ErrBodyTooLarge: an entry's body is longer than MaxBytes or
	// MaxBodySize. The error names the entry's index in the batch.
	ErrBodyTooLarge = errors.New("store: body larger than the log may hold")
)

// Entry is a message as a caller appends it.
type Entry struct {
	// ID identifies the message for idempotency; the sender chooses it.
	ID [16]byte
	// From is an opaque sender index, interpreted by the caller.
	From uint32
	// Body is copied into the log; the caller may reuse it after Append.
	Body []byte
}

// Ack is the log's answer to one appended entry.
type Ack struct {
	Seq       uint64 // sequence number given to the message
	Time      int64  // server timestamp, Unix ns
	Duplicate bool   // the ID was already stored: Seq and Time are the original's
}

// Message is a stored message.
type Message struct {
	Seq  uint64
	Time int64 // server timestamp, Unix ns
	ID   [16]byte
	From uint32
	// Body aliases the log's memory: read-only, valid for as long as the
	// caller holds it. Its capacity ends at its length, so appending to it
	// copies.
	Body []byte
}

// Stats are counters for metrics. Each field is read atomically; under
// concurrent appends they may come from slightly different instants.
type Stats struct {
	Messages   int    // messages held
	Bytes      int64  // body bytes held
	Segments   int    // segments held
	First      uint64 // first sequence number held (see Cursor.First)
	Last       uint64 // last sequence number assigned
	Evicted    uint64 // messages evicted by retention, ever
	Duplicates uint64 // entries acknowledged as duplicates, ever
	// AppendedBytes is the body bytes of every message ever stored,
	// evicted ones included (a counter, for metrics).
	AppendedBytes uint64
}

// Log is the log of one group. Its methods are safe for concurrent use.
// Appends serialise among themselves; queries take no lock.
type Log struct {
	lim limits

	mu       sync.Mutex // serialises writers; guards the fields below
	segs     []*segment // == view.Load().segs
	held     int
	lastSeq  uint64
	lastTime int64
	dedup    dedup
	hashes   []uint64 // the batch's ID hashes, reused from one append to the next

	// Published to readers.
	view       atomic.Pointer[view]
	last       atomic.Uint64 // last committed sequence number
	bytes      atomic.Int64
	evicted    atomic.Uint64
	duplicates atomic.Uint64
	appended   atomic.Uint64 // body bytes ever stored
	notify     atomic.Pointer[notifier]
}

// view is an immutable list of segments, oldest first.
type view struct {
	segs []*segment
	next uint64 // when segs is empty: the sequence number the next message gets
}

// notifier is the channel the next append closes, if anyone took it.
type notifier struct {
	c     chan struct{}
	taken atomic.Bool
}

// New returns an empty log. It starts no goroutine and does no I/O.
// It returns cfg.Validate's error, which wraps ErrInvalidConfig.
func New(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{lim: cfg.limits()}
	l.dedup = newDedup(l.lim.dedupWindow)
	l.view.Store(&view{next: 1})
	l.notify.Store(&notifier{c: make(chan struct{})})
	return l, nil
}

// Append appends batch atomically and returns one Ack per entry, in order.
// See AppendTo.
func (l *Log) Append(batch []Entry) ([]Ack, error) {
	return l.AppendTo(make([]Ack, 0, len(batch)), batch)
}

// AppendTo appends batch atomically and appends one Ack per entry, in order,
// to acks. Stored messages get the next sequence numbers (gapless from 1)
// and times max(now, previous+1), so times strictly increase even if the
// clock steps back. An entry whose ID is among the last DedupWindow stored
// is not stored: its Ack carries the original's Seq and Time and
// Duplicate set; this holds within the batch too. Readers see the whole
// batch or none of it. Retention is then applied.
//
// It returns ErrEmptyBatch, ErrBatchTooLarge or (wrapped, naming the entry)
// ErrBodyTooLarge, with acks unchanged and the log untouched.
func (l *Log) AppendTo(acks []Ack, batch []Entry) ([]Ack, error) {
	if err := l.check(batch); err != nil {
		return acks, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.lim.now().UnixNano()
	seq, t := l.lastSeq, l.lastTime
	if cap(l.hashes) < len(batch) {
		l.hashes = make([]uint64, len(batch))
	}
	hs := l.hashes[:len(batch)]
	l.dedup.warm(batch, seq+1, hs)
	var stored, bytes, dups int
	for i := range batch {
		e := &batch[i]
		if a, ok := l.dedup.lookup(e.ID, hs[i]); ok {
			acks = append(acks, Ack{Seq: a.seq, Time: a.time, Duplicate: true})
			dups++
			continue
		}
		seq++
		t = max(now, t+1)
		l.put(seq, t, e)
		l.dedup.add(e.ID, hs[i], seq, t)
		acks = append(acks, Ack{Seq: seq, Time: t})
		stored++
		bytes += len(e.Body)
	}
	if dups > 0 {
		l.duplicates.Add(uint64(dups))
	}
	if stored > 0 {
		l.lastSeq, l.lastTime = seq, t
		l.held += stored
		l.bytes.Add(int64(bytes))
		l.appended.Add(uint64(bytes))
		l.last.Store(seq) // commit: readers now see the batch
		l.wake()
	}
	l.retain(now)
	return acks, nil
}

// check validates a batch before anything changes.
func (l *Log) check(batch []Entry) error {
	if len(batch) == 0 {
		return ErrEmptyBatch
	}
	if len(batch) > l.lim.maxMessages {
		return fmt.Errorf("store: append %d entries, MaxMessages %d: %w", len(batch), l.lim.maxMessages, ErrBatchTooLarge)
	}
	var total int64
	for i := range batch {
		n := len(batch[i].Body)
		if int64(n) > l.lim.maxBytes || uint64(n) > MaxBodySize {
			return fmt.Errorf("store: append: entry %d has %d bytes: %w", i, n, ErrBodyTooLarge)
		}
		total += int64(n)
	}
	if total > l.lim.maxBytes {
		return fmt.Errorf("store: append %d body bytes, MaxBytes %d: %w", total, l.lim.maxBytes, ErrBatchTooLarge)
	}
	return nil
}

// put stores one message, opening (and publishing) a new segment if the
// active one is full. l.mu is held.
func (l *Log) put(seq uint64, t int64, e *Entry) {
	var s *segment
	if n := len(l.segs); n > 0 {
		s = l.segs[n-1]
	}
	if s == nil || s.base+uint64(s.n) != seq || !s.fits(len(e.Body), &l.lim) {
		s = newSegment(seq, t, len(e.Body), s, &l.lim)
		// Appending in place is safe: readers' lists end before the new slot.
		l.publish(append(l.segs, s))
	}
	s.put(t, e, &l.lim)
}

// publish makes segs the readers' list. l.mu is held.
func (l *Log) publish(segs []*segment) {
	l.segs = segs
	l.view.Store(&view{segs: segs, next: l.lastSeq + 1})
}

// wake closes the channel handed out by Changed, if any. l.mu is held, so
// there is one waker at a time.
func (l *Log) wake() {
	n := l.notify.Load()
	if n.taken.Load() {
		l.notify.Store(&notifier{c: make(chan struct{})})
		close(n.c)
	}
}

// Changed returns a channel closed by the next append that stores a message
// after the call (or one in progress). All callers between two appends share
// one channel, so many watchers cost one allocation per append. A watcher
// calls Changed, then After with its cursor, and waits on the channel only if
// that returned nothing new.
func (l *Log) Changed() <-chan struct{} {
	n := l.notify.Load()
	if !n.taken.Load() {
		n.taken.Store(true)
	}
	return n.c
}

// Last returns the last committed sequence number (0: none yet). It is one
// atomic load: a watcher uses it to tell whether it is caught up.
func (l *Log) Last() uint64 { return l.last.Load() }

// Expire applies MaxAge now: it evicts every segment whose newest message is
// older than MaxAge, the active one included. Append applies it too; the
// caller runs Expire periodically so that an idle log forgets.
func (l *Log) Expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retain(l.lim.now().UnixNano())
}

// retain evicts the oldest segments while a limit is exceeded. The active
// segment alone never exceeds the count or byte limit (its quotas are below
// them), so only age can evict it. l.mu is held.
func (l *Log) retain(now int64) {
	cutoff := now - l.lim.maxAge
	k, bytes, msgs := 0, l.bytes.Load(), 0
	for k < len(l.segs) {
		s := l.segs[k]
		old := l.lim.maxAge > 0 && s.lastTime < cutoff
		if l.held-msgs <= l.lim.maxMessages && bytes <= l.lim.maxBytes && !old {
			break
		}
		msgs += s.n
		bytes -= int64(s.used)
		k++
	}
	if k == 0 {
		return
	}
	l.held -= msgs
	l.bytes.Store(bytes)
	l.evicted.Add(uint64(msgs))
	// Copy rather than reslice, so the evicted segments can be collected
	// once no reader holds them.
	segs := make([]*segment, len(l.segs)-k, len(l.segs)-k+(len(l.segs)-k)/4+1)
	copy(segs, l.segs[k:])
	l.publish(segs)
}

// Stats returns counters for metrics.
func (l *Log) Stats() Stats {
	s := l.snapshot()
	return Stats{
		Messages:      s.held(),
		Bytes:         l.bytes.Load(),
		Segments:      len(s.segs),
		First:         s.first,
		Last:          s.last,
		Evicted:       l.evicted.Load(),
		Duplicates:    l.duplicates.Load(),
		AppendedBytes: l.appended.Load(),
	}
}

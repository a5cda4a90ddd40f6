package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by [Log.Append]. On any error the log is unchanged.
var (
	// ErrEmptyBatch: the batch has no entries.
	ErrEmptyBatch = errors.New("store: empty batch")
	// ErrBatchTooLarge: the batch has more entries than MaxMessages, or its
	// bodies sum to more than MaxBytes, so retention could not hold it
	// whole.
	ErrBatchTooLarge = errors.New("store: batch larger than the log may hold")
	// ErrBodyTooLarge: an entry's body is longer than MaxBytes or
	// MaxBodySize. The error names the entry's index in the batch.
	ErrBodyTooLarge = errors.New("store: body larger than the log may hold")
	// ErrOutOfOrder: the batch does not follow on from the log's tail: its
	// sequence numbers are not the next ones, gapless, or its times do not
	// strictly increase from the last one stored. The error names the
	// entry. Only a sequencing bug gets it (see [Sequencer]).
	ErrOutOfOrder = errors.New("store: batch out of order")
)

// Sender is who sent a message, as it was when they sent it: the
// fingerprint of their key and the display name they had then. The log
// keeps both with the message, so that what it holds means the same
// wherever it is read, written or replayed.
type Sender struct {
	Fingerprint [32]byte
	Name        string
}

// Entry is a message as it is appended: stamped by a [Sequencer], with
// its sender.
type Entry struct {
	Seq  uint64 // its sequence number: the log's last + 1, and so on
	Time int64  // its timestamp, Unix ns: after the log's last
	// ID identifies the message for idempotency; the sender chooses it.
	ID   [16]byte
	From Sender
	// Body is copied into the log; the caller may reuse it after Append.
	Body []byte
}

// Ack is what a sender is told of one message it sent: where the log holds
// it, and whether it was held already.
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
	// From is who sent it: the log's own copy, shared by the messages it
	// holds from that sender; read-only.
	From *Sender
	// Body aliases the log's memory: read-only, valid for as long as the
	// caller holds it. Its capacity ends at its length, so appending to it
	// copies.
	Body []byte
}

// Stats are counters for metrics. Each field is read atomically; under
// concurrent appends they may come from slightly different instants.
type Stats struct {
	Messages int    // messages held
	Bytes    int64  // body bytes held
	Segments int    // segments held
	First    uint64 // first sequence number held (see Cursor.First)
	Last     uint64 // last sequence number stored
	Evicted  uint64 // messages evicted by retention, ever
	// AppendedBytes is the body bytes of every message ever stored,
	// evicted ones included (a counter, for metrics).
	AppendedBytes uint64
}

// Log is the log of one group. Its methods are safe for concurrent use.
// Appends serialise among themselves; queries take no lock.
type Log struct {
	lim   limits
	epoch uint64

	mu       sync.Mutex // serialises writers; guards the fields below
	segs     []*segment // == view.Load().segs
	held     int
	lastSeq  uint64
	lastTime int64
	dedup    dedup
	hashes   []uint64                 // a batch's ID hashes, reused from one call to the next
	senders  map[Sender]*sharedSender // the held messages' senders (senders.go)
	// held back: Append stores a batch without publishing it to readers;
	// commit publishes. A disk log syncing before each ack sets it, so
	// that readers see only what is on the device.
	holdBack bool
	// dedupFrom: messages before it are not remembered for Lookup. A
	// disk log reading itself back sets it to skip what falls out of the
	// window anyway.
	dedupFrom uint64
	// retired: mappings of files read back whose segments were all
	// evicted, oldest first, unmapped after a grace (mapped.go).
	retired []retired
	// ahead makes slabs resident ahead of the writes (segment.go).
	ahead prefaulter

	// Published to readers.
	view     atomic.Pointer[view]
	last     atomic.Uint64 // last committed sequence number
	bytes    atomic.Int64
	evicted  atomic.Uint64
	appended atomic.Uint64 // body bytes ever stored
	notify   atomic.Pointer[notifier]
	closed   atomic.Bool // Close was called: queries answer ErrClosed
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

// New returns an empty log with a new random epoch, or cfg.Epoch. It starts no
// goroutine and does no I/O. It returns cfg.Validate's error, which wraps
// ErrInvalidConfig.
func New(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	epoch := cfg.Epoch
	if epoch == 0 {
		epoch = newEpoch()
	}
	l := &Log{lim: cfg.limits(), epoch: epoch, senders: make(map[Sender]*sharedSender)}
	l.dedup = newDedup(l.lim.dedupWindow)
	l.view.Store(&view{next: 1})
	l.notify.Store(&notifier{c: make(chan struct{})})
	return l, nil
}

// newEpoch returns a random nonzero epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// Epoch identifies the log's history: a client's cursor (a sequence
// number) means something only within the epoch it was given in. This log
// lives in memory, so each New is a new history and a new random epoch.
func (l *Log) Epoch() uint64 { return l.epoch }

// Tail returns the sequence number and time of the last message stored (0,
// 0 for none), evicted or not: where the next batch's stamps start from
// (see Sequencer).
func (l *Log) Tail() (seq uint64, time int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastSeq, l.lastTime
}

// Lookup appends to acks one ack per entry of batch: if the log remembers
// a stored message with the entry's ID (among the last DedupWindow stored,
// even if since evicted), that message's Seq and Time with Duplicate set;
// if not, the zero Ack. It does not look within the batch: Stamp does.
// The first Lookup indexes the IDs the log remembers, which it then keeps
// indexed: until then, appends only record them (a cell's followers never
// look up).
func (l *Log) Lookup(batch []Entry, acks []Ack) []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	hs := l.hashBatch(batch)
	l.dedup.warmLookups(hs)
	for i := range batch {
		a, ok := l.dedup.lookup(batch[i].ID, hs[i])
		if !ok {
			acks = append(acks, Ack{})
			continue
		}
		acks = append(acks, Ack{Seq: a.seq, Time: a.time, Duplicate: true})
	}
	return acks
}

// Remembers reports whether Lookup finds the ID of every message stored
// after sequence number after: the dedup window has forgotten none of
// them. If so, an ID Lookup does not find was not stored after after; if
// not, it may have been, and forgotten since (a send's `after`,
// PROTOCOL.md §8.5). A log read back after a restart remembers only what
// it read back; one Reset, nothing before the reset.
func (l *Log) Remembers(after uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dedup.remembers(after, l.lastSeq)
}

// hashBatch returns the dedup hashes of batch's IDs, in l.hashes. l.mu is
// held.
func (l *Log) hashBatch(batch []Entry) []uint64 {
	if cap(l.hashes) < len(batch) {
		l.hashes = make([]uint64, len(batch))
	}
	hs := l.hashes[:len(batch)]
	for i := range batch {
		hs[i] = l.dedup.hash(&batch[i].ID)
	}
	return hs
}

// Append stores batch, stamped, as it is: it does not assign sequence
// numbers or times, nor look for duplicates (see Sequencer). The batch
// must follow on from the log's tail: batch[0].Seq is Tail's seq + 1, each
// next entry's one more, and the times strictly increase from Tail's. Each
// entry's ID is then remembered for Lookup. Readers see the whole batch or
// none of it. Retention is then applied, the age limit as of the batch's
// last time.
//
// It returns ErrEmptyBatch, ErrBatchTooLarge, or (wrapped, naming the
// entry) ErrBodyTooLarge or ErrOutOfOrder, with the log untouched.
func (l *Log) Append(batch []Entry) error {
	if err := l.check(batch); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.follows(batch); err != nil {
		return err
	}
	l.add(batch)
	return nil
}

// appendChecked is Append for a batch the caller has checked (check and
// follows), with nothing appended since.
func (l *Log) appendChecked(batch []Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(batch)
}

// add stores a checked batch. l.mu is held.
func (l *Log) add(batch []Entry) {
	var bytes int
	for i := range batch {
		e := &batch[i]
		l.put(e)
		if e.Seq >= l.dedupFrom {
			l.dedup.add(e.ID, e.Seq, e.Time)
		}
		bytes += len(e.Body)
	}
	last := &batch[len(batch)-1]
	l.lastSeq, l.lastTime = last.Seq, last.Time
	l.held += len(batch)
	l.bytes.Add(int64(bytes))
	l.appended.Add(uint64(bytes))
	if !l.holdBack {
		l.last.Store(last.Seq) // commit: readers now see the batch
		l.wake()
	}
	l.retain(last.Time)
}

// commit publishes to readers the messages up to seq, which Append has
// stored, if they are not published yet (see holdBack).
func (l *Log) commit(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.last.Load() && seq <= l.lastSeq {
		l.last.Store(seq)
		l.wake()
	}
}

// startAt evicts everything the log holds and makes it stand after seq,
// stamped t: the next message appended is seq+1, after t. A disk log whose
// retained history begins past 1 starts its memory there; seq is at least
// the log's tail. Watchers waiting on Changed are woken: the log's last
// sequence number moved on, and what they had not read is gone (a gap
// they report at once, not at the next append).
func (l *Log) startAt(seq uint64, t int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		l.forgetSenders(s)
		l.evictedSeg(s)
	}
	l.evicted.Add(uint64(l.held))
	l.held = 0
	l.bytes.Store(0)
	l.lastSeq, l.lastTime = seq, t
	l.last.Store(seq)
	l.publish(nil)
	l.wake()
}

// firstHeld returns the first sequence number the log holds, published
// or not; the next one if it holds none.
func (l *Log) firstHeld() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segs) == 0 {
		return l.lastSeq + 1
	}
	return l.segs[0].base
}

// check validates a batch's sizes before anything changes.
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

// follows checks that batch follows on from the log's tail. l.mu is held.
func (l *Log) follows(batch []Entry) error {
	seq, t := l.lastSeq, l.lastTime
	for i := range batch {
		e := &batch[i]
		if e.Seq != seq+1 || e.Time <= t {
			return fmt.Errorf("store: append: entry %d has seq %d at %d, want seq %d after %d: %w", i, e.Seq, e.Time, seq+1, t, ErrOutOfOrder)
		}
		seq, t = e.Seq, e.Time
	}
	return nil
}

// put stores one message, opening (and publishing) a new segment if the
// active one is full. l.mu is held.
func (l *Log) put(e *Entry) {
	var s *segment
	if n := len(l.segs); n > 0 {
		s = l.segs[n-1]
	}
	if s == nil || s.base+uint64(s.n) != e.Seq || !s.fits(len(e.Body), &l.lim) {
		s = newSegment(e.Seq, e.Time, len(e.Body), s, &l.lim)
		// Appending in place is safe: readers' lists end before the new slot.
		l.publish(append(l.segs, s))
	}
	s.put(e, l.senderIndex(s, &e.From), &l.lim, &l.ahead)
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
// after the call (or one in progress), by the next Reset, or by Close. All callers between two appends share
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

// Expire applies MaxAge as of now: it evicts every segment whose newest
// message is older than MaxAge, the active one included. Append applies it
// too; the caller runs Expire periodically so that an idle log forgets. It
// also unmaps the files read back whose messages were all evicted, once
// their grace is over (mapped.go): an idle log's deleted files then give
// their space back (a full disk's, where no append evicts).
func (l *Log) Expire(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retain(now.UnixNano())
	l.unmapRetired(time.Now())
}

// retain evicts the oldest segments while a limit is exceeded. The active
// segment alone never exceeds the count or byte limit (its quotas are below
// them), so only age can evict it. l.mu is held.
func (l *Log) retain(now int64) {
	l.evictOldest(l.overLimits(l.held, l.bytes.Load(), now, len(l.segs)))
}

// overLimits counts the oldest segments, of the first within, that retention
// evicts from a log of held messages and bytes as of now: oldest first,
// while a limit is exceeded. It is the one statement of the rule, for
// retain and for makeRoom's forecast of it (floorAfter). l.mu is held.
func (l *Log) overLimits(held int, bytes, now int64, within int) int {
	cutoff := now - l.lim.maxAge
	k := 0
	for ; k < within; k++ {
		s := l.segs[k]
		old := l.lim.maxAge > 0 && s.lastTime < cutoff
		if held <= l.lim.maxMessages && bytes <= l.lim.maxBytes && !old {
			break
		}
		held -= s.n
		bytes -= int64(s.used)
	}
	return k
}

// evictOldest evicts the k oldest segments. l.mu is held.
func (l *Log) evictOldest(k int) {
	if k == 0 {
		return
	}
	msgs, bytes := 0, l.bytes.Load()
	for _, s := range l.segs[:k] {
		msgs += s.n
		bytes -= int64(s.used)
		l.forgetSenders(s)
		l.evictedSeg(s)
	}
	l.dropped(k, msgs, bytes)
}

// dropped takes the k oldest segments, evicted (forgetSenders,
// evictedSeg), out of the log: msgs messages, leaving bytes. l.mu is held.
func (l *Log) dropped(k, msgs int, bytes int64) {
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
		AppendedBytes: l.appended.Load(),
	}
}

// Durable returns nil at once: what a memory log holds is as durable as
// it will ever be once Append returns (see [DiskLog.Durable]).
func (l *Log) Durable(seq uint64) error { return nil }

// Close waits for the goroutine that makes memory resident ahead of the
// appends, if one is at work, and returns nil: a memory log holds no files.
// After it, queries ([Log.After], [Log.Since]) return ErrClosed, and a
// watcher waiting on Changed is woken to query again and learn it: else
// it would wait for an append that never comes, as if caught up.
func (l *Log) Close() error {
	l.mu.Lock()
	l.closed.Store(true)
	l.wake()
	l.mu.Unlock()
	l.ahead.wait()
	return nil
}

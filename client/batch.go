package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Send batching.
//
// Concurrent Group.Send calls on one Group handle are gathered into one send
// operation carrying many messages, each caller still getting its own Ack.
// The rules, in the order the batcher applies them:
//
//   - A Send with nothing in flight and nothing queued goes out at once, on
//     the caller's goroutine: a lone sender pays nothing for batching.
//   - Otherwise it joins the queue. The queue is sent as one operation when
//     it holds the group's max_batch messages or a frame's worth of bytes;
//     when its oldest message has waited Config.BatchLinger while another
//     batch is in flight; and, with none in flight, at once, except right
//     after a batch of several messages. Then the next waits for those
//     messages' callers to send again: for all of them, regroupWait (or
//     the linger, if shorter) at most and no longer than its oldest
//     message's linger (awaitReturning), and for half of them (half the
//     batch's size plus what was queued when it ended) until regroupWait
//     (or the linger) has passed since the batch ended (take).
//   - Every message keeps its own ID, so the operation is retried as safely
//     as a single send. A batch the daemon refuses as too large is split in
//     halves and each half sent again (nothing of a refused batch was
//     stored), so a too-large message fails its own caller only; once the
//     group's limits are known (asked once per handle), such a message is
//     refused before it is queued.
//
// The batcher's goroutine and the goroutines of batches in flight belong to
// the Group handle: its Close, or the Client's, ends them and waits for them.

// DefaultBatchLinger is how long a queued Send waits for company while
// another batch is in flight, unless Config.BatchLinger says otherwise.
const DefaultBatchLinger = 500 * time.Microsecond

// regroupWait bounds how long, after a batch of several messages ends, the
// next batch waits for that batch's callers to send again (the linger, if
// it is shorter).
//
// Sending as soon as the first caller was back made the batches of 16
// callers alternate between one message and fifteen under load, when the
// callers return over hundreds of microseconds. Waiting for half of them
// kept a single connection's two batches in flight where waiting for all
// made its client and daemon take turns (session 5); waiting for all of
// them within the linger then replaced a yield (session 6). Where the
// callers come back well within the linger, as on a single connection on
// a quiet machine, each batch now carries them all, one batch at a time:
// on session 9's machine 1x16 sent nothing but batches of 16, 16x16 14.6
// messages a batch. Longer waits made 16x16's batches fuller but its
// messages no cheaper, and on session 8's machine slowed a single
// connection whose callers came back slowly (BENCHMARKS.md has the
// figures). A caller that does not come back costs the others this wait,
// once.
const regroupWait = 500 * time.Microsecond

const (
	// defaultMaxBatch is the protocol's default max_batch (PROTOCOL.md §10),
	// used until the group's own limits are known.
	defaultMaxBatch = 256
	// batchFrameBudget bounds the encoded size of one batch, leaving room
	// for the envelope under wire.MaxFrameSize.
	batchFrameBudget = wire.MaxFrameSize - 4096
	// outgoingOverhead bounds from above the encoding of one Outgoing
	// besides its body: map header, keys, a 16-byte ID, a byte string header.
	outgoingOverhead = 32
)

// batcher gathers one Group handle's concurrent sends.
type batcher struct {
	g      *Group
	linger time.Duration
	wake   chan struct{} // capacity 1: "look at the queue"
	// flights counts run's goroutines (the limits query, the batches in
	// flight): run waits for them before it ends, and done is closed once
	// it has, so the Group's Close can wait for them all.
	flights sync.WaitGroup
	done    chan struct{}

	mu       sync.Mutex
	queue    []*queuedSend
	bytes    int  // encoded size of the queue, estimated
	inflight int  // operations in flight, direct sends included
	warm     bool // the last operation carried several messages: sends are concurrent
	// expect is how many queued messages the next batch waits for, for
	// at most regroupWait from idleAt (when the last batch of several
	// ended with none in flight): half of that batch's callers coming back.
	expect int
	idleAt time.Time
	// returning counts the callers of ended batches that have not queued
	// again: woken by their acks, they are on their way back (sendBatch
	// adds them, send counts them back).
	returning int
	closed    bool
	maxBatch  int // messages per operation: the group's max_batch once known
	maxBody   int // the group's max_message_bytes; 0 until known
}

type queuedSend struct {
	ctx context.Context
	msg wire.Outgoing
	// at is when the message joined an empty queue, or, behind others, the
	// at of the one before it: the clock is read once per busy spell, not
	// per message. Only the oldest message's at counts (the linger), and a
	// message that becomes the oldest when those before it leave without it
	// has an at no later than when it joined, so it never waits longer.
	at   time.Time
	done chan sendResult // capacity 1: the batch never waits for its caller
	// flight is the batch the message went out in (take), under b.mu;
	// nil while it is queued.
	flight *flight
}

// flight is a batch in flight: how many of its callers there are, and
// how many have given up waiting for it; once every one has, its
// operation is cancelled (cancel, set by fly; nil until then). Under b.mu.
//
// Why: a batch ran until the latest of its callers' deadlines, and with a
// caller without one until the daemon answered, or the Client closed,
// though every caller had gone (until session 18). A program whose sends
// give up by cancelling (no deadline) left a batch behind at each, holding
// its messages and its request frame (up to a frame, 16 MiB): a daemon
// that answered none (or read the requests slowly, or withheld its QUIC
// acknowledgements) made the client hold one more at every send given up,
// without bound.
type flight struct {
	n, gone int
	cancel  context.CancelFunc
}

// queuedSends recycles queued sends with their channels: a batched send
// used to allocate both per message. A queued send is recycled only once
// its result has been received, so no batch can write to it afterwards.
var queuedSends = sync.Pool{New: func() any { return &queuedSend{done: make(chan sendResult, 1)} }}

func (q *queuedSend) recycle() {
	q.ctx, q.msg, q.flight = nil, wire.Outgoing{}, nil
	queuedSends.Put(q)
}

type sendResult struct {
	ack Ack
	err error
}

func newBatcher(g *Group) *batcher {
	return &batcher{g: g, linger: g.cl.cfg.BatchLinger, wake: make(chan struct{}, 1), done: make(chan struct{}), maxBatch: defaultMaxBatch}
}

// send sends m alone or with others, and returns its own acknowledgement
// (with m's ID, whatever the error).
func (b *batcher) send(ctx context.Context, m wire.Outgoing) (Ack, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return Ack{ID: m.ID}, b.g.fail("send", b.g.doubts.outcome([]wire.Outgoing{m}, ErrClosed))
	case b.maxBody > 0 && len(m.Body) > b.maxBody:
		max := b.maxBody
		b.mu.Unlock()
		return Ack{ID: m.ID}, b.g.fail("send", fmt.Errorf("%w: message of %d bytes, the group's limit is %d", ErrTooLarge, len(m.Body), max))
	case b.inflight == 0 && len(b.queue) == 0 && !b.warm:
		b.inflight++
		b.mu.Unlock()
		ack, err := b.g.sendOne(ctx, m)
		b.finished(1)
		return ack, err
	}
	q := queuedSends.Get().(*queuedSend)
	q.ctx, q.msg = ctx, m
	if n := len(b.queue); n > 0 {
		q.at = b.queue[n-1].at
	} else {
		q.at = time.Now()
	}
	b.queue = append(b.queue, q)
	b.bytes += len(m.Body) + outgoingOverhead
	back := false
	if b.returning > 0 {
		b.returning--
		back = b.returning == 0
	}
	// The batcher looks at the queue when it is woken, when a batch in
	// flight ends, and when the linger it set for the oldest message is
	// over: it needs waking only for a queue that was empty (to set that
	// linger), that has just filled up, that now holds the messages a
	// regroup waits for, or whose last caller on its way back came.
	wake := back || len(b.queue) == 1 || len(b.queue) == b.expect || len(b.queue) >= b.maxBatch || b.bytes >= batchFrameBudget
	b.mu.Unlock()
	if wake {
		b.signal()
	}
	done := ctx.Done()
	if done == nil {
		r := <-q.done
		q.recycle()
		return r.ack, r.err
	}
	select {
	case r := <-q.done:
		q.recycle()
		return r.ack, r.err
	case <-done:
		var cancel context.CancelFunc
		flying := false
		b.mu.Lock()
		if i := slices.Index(b.queue, q); i >= 0 {
			// Not sent yet, and now never will be.
			b.queue = slices.Delete(b.queue, i, i+1)
			b.bytes -= len(m.Body) + outgoingOverhead
		} else if f := q.flight; f != nil {
			flying = true
			if f.gone++; f.gone == f.n {
				cancel = f.cancel // the last of its callers: nil if fly has not begun
			}
		}
		last := flying && q.flight.gone == q.flight.n
		b.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		if last {
			// The batch's last caller: cancelled, it ends at once, and
			// its error tells whether its request went out (in doubt)
			// or not (its connection not made yet, say: nothing sent).
			// Every caller that left a batch in flight was told in
			// doubt (session 19 until H's fix), one whose batch had
			// sent nothing among them.
			r := <-q.done
			q.recycle()
			if r.err == nil {
				return r.ack, nil // stored all the same
			}
			return Ack{ID: m.ID}, b.g.fail("send", b.g.doubts.outcome([]wire.Outgoing{m}, inDoubtIf(errors.Is(r.err, ErrInDoubt), ctx.Err())))
		}
		// If the batch is in flight for other callers, the message may
		// be stored or not (ErrInDoubt): as with an unbatched send, a
		// retry with its ID tells. Until session 19 the error was the
		// context's alone, whether the message had gone out or was
		// withdrawn unsent.
		return Ack{ID: m.ID}, b.g.fail("send", b.g.doubts.outcome([]wire.Outgoing{m}, inDoubtIf(flying, ctx.Err())))
	}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// finished records the end of an operation of n messages.
func (b *batcher) finished(n int) {
	b.mu.Lock()
	b.inflight--
	b.warm = n > 1
	if b.warm && b.inflight == 0 {
		b.expect, b.idleAt = min(n+len(b.queue), b.maxBatch)/2, time.Now()
	}
	more := len(b.queue) > 0
	b.mu.Unlock()
	if more {
		b.signal()
	}
}

// run sends the queue as batches until ctx ends (the Group or the Client
// closes), then fails what is still queued with ErrClosed, waits for the
// goroutines it started and closes b.done.
func (b *batcher) run(ctx context.Context) {
	defer close(b.done)
	defer b.flights.Wait()
	b.flights.Go(func() { b.learnLimits(ctx) })
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	back := time.NewTimer(time.Hour)
	back.Stop()
	defer back.Stop()
	for {
		select {
		case <-b.wake:
		case <-timer.C:
		case <-ctx.Done():
			b.close()
			return
		}
		b.awaitReturning(ctx, back)
		for {
			batch, wait := b.take(time.Now())
			if batch == nil {
				if wait > 0 {
					timer.Reset(wait)
				}
				break
			}
			b.flights.Go(func() { b.fly(ctx, batch) })
		}
	}
}

// awaitReturning waits until the callers woken by the last batches' acks
// have queued their next sends, regroupWait (or the linger, if shorter) at
// most and no longer than the queue's oldest message has left of the
// linger, so that the next batch takes them all rather than one message
// now and the rest after the linger. The regroup in take does not replace
// this (BENCHMARKS.md: what send-batched lost without it).
//
// It used to yield once (runtime.Gosched) for them instead, but a yield
// puts the batcher behind every goroutine of the program that is ready,
// not only those callers: under send-batched 16x16, sixteen clients in one
// process, a batch was taken ~215 us after its last message was queued,
// ~400 us after its first (BENCHMARKS.md, issue 20, session 6).
func (b *batcher) awaitReturning(ctx context.Context, t *time.Timer) {
	wait := b.returnWait(time.Now())
	if wait <= 0 {
		return
	}
	t.Reset(wait)
	defer t.Stop()
	for {
		select {
		case <-b.wake:
			if b.returnWait(time.Now()) <= 0 {
				return
			}
		case <-t.C:
			b.mu.Lock()
			b.returning = 0 // those not back by now are not waited for again
			b.mu.Unlock()
			return
		case <-ctx.Done():
			return
		}
	}
}

// returnWait is how long awaitReturning may still wait at now: 0 once
// every caller of the ended batches is back or the queue is full;
// otherwise regroupWait (or the linger, if shorter), and no longer than
// the queue's oldest message has left of the linger, so that no message
// waits longer than Config.BatchLinger says.
func (b *batcher) returnWait(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.returning == 0 || len(b.queue) >= b.maxBatch || b.bytes >= batchFrameBudget {
		return 0
	}
	wait := min(b.linger, regroupWait)
	if len(b.queue) > 0 {
		wait = min(wait, b.linger-now.Sub(b.queue[0].at))
	}
	return wait
}

// take returns the next batch to send, or how long until the queue's
// oldest message has waited the linger (0: nothing queued).
func (b *batcher) take(now time.Time) ([]*queuedSend, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return nil, 0
	}
	full := len(b.queue) >= b.maxBatch || b.bytes >= batchFrameBudget
	switch waited := now.Sub(b.queue[0].at); {
	case full:
	case b.inflight > 0 && waited < b.linger:
		return nil, b.linger - waited
	case b.inflight == 0 && len(b.queue) < b.expect:
		if idle, wait := now.Sub(b.idleAt), min(b.linger, regroupWait); idle < wait {
			return nil, wait - idle
		}
	}
	b.expect = 0
	n, size := 0, 0
	for n < len(b.queue) && n < b.maxBatch {
		s := len(b.queue[n].msg.Body) + outgoingOverhead
		if n > 0 && size+s > batchFrameBudget {
			break
		}
		size += s
		n++
	}
	batch := slices.Clone(b.queue[:n])
	f := &flight{n: n}
	for _, q := range batch {
		q.flight = f
	}
	b.queue = slices.Delete(b.queue, 0, n)
	b.bytes -= size
	b.inflight++
	return batch, 0
}

// fly sends one batch and hands each caller its result. The operation runs
// until the latest of its callers' deadlines (or the handle or the Client
// closes: ctx, run's, ends), or until every one of its callers has given
// up (flight): a caller that gives up sooner has had its answer (its
// context's error), and its message may be stored or not, as with an
// unbatched send it abandoned. A caller whose context never ends keeps
// the operation going.
func (b *batcher) fly(ctx context.Context, batch []*queuedSend) {
	defer b.finished(len(batch))
	closing := ctx
	var cancel context.CancelFunc
	if d, ok := latestDeadline(batch); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	} else if slices.ContainsFunc(batch, func(q *queuedSend) bool { return q.ctx.Done() != nil }) {
		// A context of its own only where a caller may give up without
		// a deadline: under one shared, the attempts' clock watches one
		// context for all of them (attempts.go).
		ctx, cancel = context.WithCancel(ctx)
	}
	if cancel != nil {
		defer cancel()
		f := batch[0].flight
		b.mu.Lock()
		f.cancel = cancel
		gone := f.gone == f.n
		b.mu.Unlock()
		if gone {
			cancel() // every caller gave up before it flew
		}
	}
	b.sendBatch(ctx, closing, batch)
}

// latestDeadline returns the latest deadline of the batch's callers, or
// false if one of them has none.
func latestDeadline(batch []*queuedSend) (time.Time, bool) {
	var latest time.Time
	for _, q := range batch {
		d, ok := q.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest, true
}

// sendBatch sends batch as one operation, splitting it when the daemon
// refuses it as too large. A batch that fails once closing has ended (the
// handle's Close, or the Client's, stopped it) fails ErrClosed: its
// callers were told "context canceled", of a context none of theirs,
// when only the handle closed (until session 18).
func (b *batcher) sendBatch(ctx, closing context.Context, batch []*queuedSend) {
	msgs := make([]wire.Outgoing, len(batch))
	for i, q := range batch {
		msgs[i] = q.msg
	}
	s, err := b.g.send(ctx, msgs)
	if err != nil && len(batch) > 1 && errors.Is(err, ErrTooLarge) {
		half := len(batch) / 2
		b.sendBatch(ctx, closing, batch[:half])
		b.sendBatch(ctx, closing, batch[half:])
		return
	}
	if err != nil && closing.Err() != nil {
		// In doubt still, if its request had gone out.
		err = b.g.fail("send", inDoubtIf(errors.Is(err, ErrInDoubt), ErrClosed))
	}
	b.mu.Lock()
	b.returning += len(batch)
	b.mu.Unlock()
	for i, q := range batch {
		if err != nil {
			q.done <- sendResult{ack: Ack{ID: q.msg.ID}, err: err}
		} else {
			q.done <- sendResult{ack: ackOf(q.msg.ID, s.Acks[i], s.Epoch)}
		}
	}
}

// learnLimits asks the group's limits once, so that batches respect its
// max_batch and too-large messages are refused before they are queued.
// Until it answers (or if it never does), batches hold at most the
// protocol's default max_batch and the daemon's refusals are split.
func (b *batcher) learnLimits(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, b.g.cl.cfg.DialTimeout)
	defer cancel()
	info, err := b.g.Info(ctx)
	if err != nil {
		b.g.cl.cfg.Logger.Debug("batching without the group's limits", "group", b.g.id, "err", err)
		return
	}
	b.mu.Lock()
	if m := info.Limits.MaxBatch; m > 0 && m <= wire.MaxBatch {
		b.maxBatch = int(m)
	}
	if m := info.Limits.MaxMessageBytes; m > 0 && m <= wire.MaxFrameSize {
		b.maxBody = int(m)
	}
	b.mu.Unlock()
}

// close fails every queued send with ErrClosed; sends after it fail too.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	queue := b.queue
	b.queue, b.bytes = nil, 0
	b.mu.Unlock()
	for _, q := range queue {
		q.done <- sendResult{ack: Ack{ID: q.msg.ID}, err: b.g.fail("send", b.g.doubts.outcome([]wire.Outgoing{q.msg}, ErrClosed))}
	}
}

package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// EventKind says what a watch Event carries.
type EventKind int

// Watch events.
const (
	// EventMessage: Message is the next message, in sequence order.
	EventMessage EventKind = iota + 1
	// EventGap: messages From..To were dropped by retention before this
	// watcher could read them; delivery goes on after To.
	EventGap
	// EventReset: the group's history was lost (its daemon restarted with
	// an in-memory log); sequence numbers start again under Epoch, and the
	// watch follows the new log from its beginning.
	EventReset
	// EventLive (only with Query.Status): the daemon accepted the watch,
	// at its start and again each time it resumes after EventInterrupted.
	EventLive
	// EventInterrupted (only with Query.Status): the watch lost its stream
	// (Err says why) and is reconnecting; it resumes after the last event
	// it delivered.
	EventInterrupted
)

// Event is one thing a watch reports.
type Event struct {
	Kind     EventKind // what happened; the fields below it fills are marked
	Message  Message   // EventMessage
	From, To uint64    // EventGap
	Epoch    uint64    // the log epoch the event belongs to
	Err      error     // EventInterrupted: why
}

// maxHeartbeat is the longest heartbeat interval a watch takes from its
// daemon's Start; three of them without a frame end the watch.
const maxHeartbeat = time.Hour

// Backoff bounds for reconnecting watches. The wait doubles from
// watchBackoffMin to watchBackoffMax with each stream that ends without
// progress, jittered, and falls back to watchBackoffMin after one that
// made some: a daemon that accepts each watch and ends it at once (a
// hostile one, or one failing as it starts) is asked again at most every
// few seconds, not ten times a second.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// Watch follows the group: the messages q selects (q.Limit is not used),
// then live messages as they arrive, as a sequence of events. Range over
// it; breaking out of the loop ends the watch and its stream.
//
// It survives a dropped connection or a restarted daemon: it reconnects
// with backoff (asking the registry for the daemon's current address when
// the group was opened through one, and another member of a cell when its
// own stops serving) and resumes after the last message it delivered. So
// across reconnects:
//   - nothing is repeated and nothing is skipped while the group still
//     holds it: each Seq comes once, in order;
//   - messages retention dropped while the watch was away (or before it
//     began) come as one EventGap, From..To, then delivery goes on after To;
//   - a daemon that restarted without its log (an in-memory log) comes as
//     EventReset with the new Epoch, and the watch follows the new log from
//     its first message: sequence numbers start again, and a program that
//     keeps a cursor keeps it with its epoch. A q.Epoch that is not the
//     log's current one gives EventReset first in the same way (Fetch fails
//     with ErrEpochMismatch instead);
//   - a cell's group moving to another member is none of these: same
//     epoch, same sequence, no event (EventInterrupted and EventLive with
//     q.Status).
//
// A heartbeat late by a quarter of its interval makes the watch probe the
// daemon, so a daemon that restarted is noticed within seconds, not after
// three heartbeats of silence.
//
// The iteration ends when ctx ends (with no error) or on an error no retry
// can fix, which is yielded last: ErrNotMember (including after leaving the
// group from elsewhere), ErrNotFound, ErrUnauthorized, ErrBadRequest,
// ErrClosed (the Client was closed), ErrProtocol (the daemon broke the
// protocol). Everything else (ErrUnavailable, ErrRateLimited, ErrInternal,
// ErrUnreachable) is retried, for as long as ctx lasts.
func (g *Group) Watch(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := g.enter(); err != nil {
			yield(Event{}, g.fail("watch", err))
			return
		}
		defer g.exit()
		w := watcher{g: g, epoch: q.Epoch, status: q.Status}
		since, after, err := q.selection()
		if err != nil {
			yield(Event{}, g.fail("watch", err))
			return
		}
		w.since, w.after = since, after
		w.run(ctx, yield)
	}
}

type watcher struct {
	g     *Group
	since *int64  // the original selection, until a message is delivered
	after *uint64 // the resume cursor
	epoch uint64  // the epoch the cursor belongs to (0: not known yet)
	// status asks for EventLive and EventInterrupted.
	status bool
}

func (w *watcher) run(ctx context.Context, yield func(Event, error) bool) {
	backoff := watchBackoffMin
	resets := 0 // EventResets since the last progress
	for ctx.Err() == nil {
		began, cursor := time.Now(), w.cursor()
		started, stop, err := w.attempt(ctx, yield)
		if stop || ctx.Err() != nil {
			return
		}
		// Progress: the stream moved the cursor (a message or a gap), or
		// the daemon kept it open longer than the longest wait (a daemon
		// that ran a while and restarted is asked again at once). A
		// stream that was only accepted is not: backoff goes on growing.
		if started && (w.cursor() != cursor || time.Since(began) >= watchBackoffMax) {
			backoff, resets = watchBackoffMin, 0
		}
		var we *wire.Error
		switch {
		case errors.Is(err, ErrEpochMismatch):
			epoch, _ := EpochOf(err)
			if epoch == 0 || epoch == w.epoch {
				// No new log: the epoch the watch asked for, or none. Taken
				// as a reset, the watch delivered the same messages again
				// in the same epoch, and again at once with each reset
				// that followed them, in a loop as fast as the connection.
				yield(Event{}, w.g.fail("watch", fmt.Errorf("%w: epoch_mismatch naming epoch %d, the watch's own (or none)", ErrProtocol, epoch)))
				return
			}
			w.epoch, w.since, w.after = epoch, nil, nil
			if !yield(Event{Kind: EventReset, Epoch: epoch}, nil) {
				return
			}
			if resets++; resets == 1 {
				continue // a daemon restarted with a new log: followed at once
			}
			// A new log at every stream, with nothing delivered between:
			// waited for as any other failure, or it would be asked again
			// at once, for ever.
			w.g.cl.cfg.Logger.Debug("watch reset again; resuming", "group", w.g.id, "in", backoff)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, watchBackoffMax)
			continue
		case errors.As(err, &we) && !retryable(we):
			yield(Event{}, w.g.fail("watch", err))
			return
		case errors.Is(err, ErrProtocol), errors.Is(err, ErrClosed):
			yield(Event{}, w.g.fail("watch", err))
			return
		}
		wait := backoff
		if d, ok := RetryAfter(err); ok && d > wait {
			wait = d
		}
		if w.status && !yield(Event{Kind: EventInterrupted, Epoch: w.epoch, Err: err}, nil) {
			return
		}
		w.g.cl.cfg.Logger.Debug("watch interrupted; resuming", "group", w.g.id, "err", err, "in", wait)
		if !sleep(ctx, jitter(wait)) {
			return
		}
		backoff = min(2*backoff, watchBackoffMax)
		switch {
		case w.g.replicated() && w.g.cellRetryable(err):
			// Any replica serves the watch, from the same cursor in the
			// same epoch: no gap, no repeat, no reset; a member that no
			// longer serves the group named those that do.
			w.g.learnFrom(err, w.g.peer().pin)
			w.g.nextReplica()
		case errors.Is(err, ErrUnreachable):
			w.g.refresh(ctx)
		}
	}
}

// cursor returns the sequence the watch resumes after (0: none yet).
func (w *watcher) cursor() uint64 {
	if w.after == nil {
		return 0
	}
	return *w.after
}

// retryable reports whether a server error may go away by trying again.
func retryable(we *wire.Error) bool {
	switch we.Code {
	case wire.CodeUnavailable, wire.CodeRateLimited, wire.CodeInternal:
		return true
	}
	return false
}

// attempt runs one watch stream. started reports that the server accepted
// the watch; stop that the consumer stopped iterating.
func (w *watcher) attempt(ctx context.Context, yield func(Event, error) bool) (started, stop bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Liveness: the server sends a frame at least every heartbeat; three
	// missed heartbeats mean the daemon or the path is gone.
	silence := 30 * time.Second
	timer := time.AfterFunc(silence, cancel)
	defer timer.Stop()
	deadAfter := silence

	req := wire.Watch{Group: w.g.id, Since: w.since, After: w.after, Epoch: w.epoch, MinSeq: w.g.minSeq(w.epoch)}
	p := w.g.use()
	defer w.g.done(p) // after the probes (late.stop)
	// A heartbeat that is late by a quarter starts a probe (see latePing);
	// it is armed once Start says how often heartbeats come.
	late := newLatePing(actx, w, p)
	defer late.stop()
	var md wire.MessagesDecoder
	var msgs []wire.Message // reused from frame to frame; bodies are not
	err = p.call(actx, wire.OpWatch, req, func(kind wire.Kind, raw wire.Frame) (bool, error) {
		timer.Reset(deadAfter)
		late.heard()
		if kind != wire.KindStart && !started {
			// Start says the epoch, which the daemon checked against the
			// watch's: messages before it belong to a log not named.
			return true, fmt.Errorf("%w: frame kind %d before the watch's Start", ErrProtocol, kind)
		}
		switch kind {
		case wire.KindStart:
			if started {
				// Start is a watch's first frame, once: a daemon sending
				// more had each taken as the watch's start again (an
				// EventLive each, with Query.Status; its heartbeat and
				// epoch anew) until session 17.
				return true, fmt.Errorf("%w: a second Start in the watch", ErrProtocol)
			}
			var s wire.Start
			if err := raw.Decode(&s); err != nil {
				return true, badFrame(err)
			}
			if s.Epoch == 0 || w.epoch != 0 && s.Epoch != w.epoch {
				// A log of another epoch answers a cursor of this one
				// with epoch_mismatch (a reset the program is told of):
				// a Start naming it moved the watch into the new log
				// silently, its cursor read against its numbers.
				return true, fmt.Errorf("%w: a watch of epoch %d started in epoch %d", ErrProtocol, w.epoch, s.Epoch)
			}
			started = true
			w.epoch = s.Epoch
			if w.status && !yield(Event{Kind: EventLive, Epoch: s.Epoch}, nil) {
				stop = true
				return true, nil
			}
			if s.HeartbeatMS > 0 {
				// Any uint from the daemon: one past maxHeartbeat, converted
				// as it came, could wrap to a negative wait.
				hb := time.Duration(min(s.HeartbeatMS, uint64(maxHeartbeat/time.Millisecond))) * time.Millisecond
				deadAfter = 3 * hb
				timer.Reset(deadAfter)
				late.arm(hb + hb/4)
			}
			// What retention dropped after the cursor comes as a Gap frame
			// next: the daemon reports it, once (PROTOCOL.md §8.7).
			return false, nil
		case wire.KindMessages:
			var err error
			if msgs, err = md.Decode(raw, msgs); err != nil {
				return true, badFrame(err)
			}
			for i := range msgs {
				m := &msgs[i]
				if w.after != nil && m.Seq <= *w.after {
					continue // never deliver twice, whatever the server sends
				}
				if w.after != nil && m.Seq-1 > *w.after {
					// Sequence numbers are gapless, and what retention
					// dropped comes as a Gap from the cursor on: a
					// message past the next one was delivered as if it
					// followed, the program never told of those it
					// missed (until session 17).
					return true, fmt.Errorf("%w: message %d after message %d, no gap reported between", ErrProtocol, m.Seq, *w.after)
				}
				seq := m.Seq
				w.after, w.since = &seq, nil
				w.g.saw(Position{Epoch: w.epoch, Seq: seq})
				if !yield(Event{Kind: EventMessage, Message: messageFrom(m), Epoch: w.epoch}, nil) {
					stop = true
					return true, nil
				}
			}
			return false, nil
		case wire.KindGap:
			var gp wire.Gap
			if err := raw.Decode(&gp); err != nil {
				return true, badFrame(err)
			}
			// A gap reports messages from..to dropped after the cursor:
			// one ending at or before it would move the cursor back (and
			// what followed be delivered twice), one ending before it
			// begins reports nothing.
			// And one beginning past the message after the cursor leaves
			// the messages between unreported.
			if gp.From > gp.To || w.after != nil && (gp.To <= *w.after || gp.From-1 > *w.after) {
				return true, fmt.Errorf("%w: gap %d..%d after message %d", ErrProtocol, gp.From, gp.To, w.cursor())
			}
			to := gp.To
			w.after, w.since = &to, nil
			if !yield(Event{Kind: EventGap, From: gp.From, To: gp.To, Epoch: w.epoch}, nil) {
				stop = true
				return true, nil
			}
			return false, nil
		case wire.KindHeartbeat:
			var hb wire.Heartbeat
			if err := raw.Decode(&hb); err != nil {
				return true, badFrame(err)
			}
			return false, nil
		}
		return true, fmt.Errorf("unexpected frame kind %d: %w", kind, ErrProtocol)
	})
	if stop {
		return started, true, nil
	}
	// The leader refusing the acknowledgement asked for: the next stream
	// asks without it (ackRefuted).
	w.g.ackRefuted(err, req.MinSeq, p.pin)
	if err == nil {
		err = fmt.Errorf("watch ended by the server: %w", ErrUnavailable)
	}
	if actx.Err() != nil && ctx.Err() == nil {
		// Our liveness timer fired: the connection is silent, so drop it
		// rather than wait out QUIC's idle timeout.
		p.dropCurrent()
		err = fmt.Errorf("no word from the daemon for %v: %w", deadAfter, ErrUnreachable)
	}
	return started, false, err
}

// latePing probes a watch's connection when a heartbeat is late.
//
// A daemon killed and restarted on the same address ignores the old
// connection: the watcher, which only receives, learned of it from its last
// resort, three heartbeats of silence (15 s by default; issue 15.15). When
// no frame has come for a heartbeat and a quarter, latePing asks the daemon
// for the group's info on the same connection. A live daemon answers (and
// the watch carries on; the probe is armed again); a restarted one answers
// the request's packet with a stateless reset, which ends the connection
// and the watch at once; a dead or unreachable one stays silent, and the
// call's own silence check (silentAfter) closes the connection. Either way
// the watch reconnects seconds sooner. A probe costs one small operation,
// only while a heartbeat is overdue.
type latePing struct {
	w      *watcher
	p      *peer
	ctx    context.Context // ends with the watch attempt, or stop
	cancel context.CancelFunc

	mu      sync.Mutex
	after   time.Duration // 0 until armed
	timer   *time.Timer
	stopped bool
	probes  sync.WaitGroup
}

func newLatePing(ctx context.Context, w *watcher, p *peer) *latePing {
	l := &latePing{w: w, p: p}
	l.ctx, l.cancel = context.WithCancel(ctx)
	return l
}

// arm starts probing after a silence of after.
func (l *latePing) arm(after time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.after = after
	if l.timer == nil {
		l.timer = time.AfterFunc(after, l.fire)
	} else {
		l.timer.Reset(after)
	}
}

// heard pushes the probe back: a frame arrived.
func (l *latePing) heard() {
	l.mu.Lock()
	if l.timer != nil && !l.stopped {
		l.timer.Reset(l.after)
	}
	l.mu.Unlock()
}

func (l *latePing) fire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.probes.Go(func() {
		ctx, cancel := context.WithTimeout(l.ctx, l.after)
		defer cancel()
		var info wire.Info
		err := l.p.single(ctx, wire.OpInfo, wire.GroupRef{Group: l.w.g.id}, &info)
		l.w.g.cl.cfg.Logger.Debug("watch heartbeat late; probed the daemon", "group", l.w.g.id, "err", err)
		if err == nil {
			l.heard() // alive: probe again if the silence goes on
		}
	})
}

// stop ends probing, and a probe in flight, and waits for it.
func (l *latePing) stop() {
	l.mu.Lock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.cancel()
	l.probes.Wait()
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// errAttemptEnd is why an attempt ended when its time was up.
var errAttemptEnd = errors.New("the attempt's time is up")

// attemptCtx is the context of one attempt on a cell's member: the
// caller's context, ended sooner by the client's attemptClock, at
// silentFor (errSilent) if conn was given and not one packet arrived on it
// meanwhile (counted from when its stream opened, if it had to wait for
// stream credit), and at end (errAttemptEnd, with the error of a passed
// deadline, as a deadline context's). The time it waits for stream credit
// does not count against its bound either, while the member is heard
// from (extend). The stream the call runs on is
// registered with it (cancelOnEnd) and cancelled when the attempt ends:
// context.AfterFunc there cost a registration, a done channel and a
// closure per send.
//
// Its Err is the caller's context's if that ended first; context.Cause
// does not know it (ended says why it ended). A context derived from it
// (a dial's, when the connection was lost) is watched by a goroutine of
// package context, which only such rare paths pay for.
type attemptCtx struct {
	context.Context // the caller's: its values, and the end of the attempt if it ends first
	watched         bool
	clock           *attemptClock
	bound           time.Duration // the attempt's own time, from when its stream opens
	limit           time.Time     // zero, or a bound of the caller's that end never passes

	// end is when the attempt ends: written under clock.mu and mu both
	// (extend), read under either.
	end time.Time

	// Under clock.mu: the attempt's place in the clock's list, what the
	// clock still has to check, and the watch of the caller's context it
	// counts in.
	prev, next *attemptCtx
	silence    *quic.Conn // the connection to check for silence at silentAt; nil once checked
	silentAt   time.Time
	silentFor  time.Duration // silentAt's bound, from the start
	heard      uint64        // packets received on silence when the attempt began
	over       bool          // the clock has ended it
	watch      *parentWatch
	conn       *quic.Conn // the connection the call uses (nil: not known); read by extend
	seen       uint64     // packets received on conn when the attempt began, or extend last looked

	mu       sync.Mutex
	done     chan struct{} // made by the first Done
	err      error         // set once the attempt ended
	cause    error         // errSilent, errAttemptEnd, or the caller's context's cause
	str      *quic.Stream  // cancelled when the attempt ends
	opened   time.Time     // when str opened
	released bool
}

func (a *attemptCtx) Deadline() (time.Time, bool) {
	a.mu.Lock()
	end := a.end
	a.mu.Unlock()
	if d, ok := a.Context.Deadline(); ok && d.Before(end) {
		return d, true
	}
	return end, true
}

func (a *attemptCtx) Done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
		if a.err != nil {
			close(a.done)
		}
	}
	return a.done
}

func (a *attemptCtx) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *attemptCtx) Value(key any) any {
	if key == (silenceWatched{}) && a.watched {
		return true
	}
	return a.Context.Value(key)
}

// ended returns why the attempt ended, or nil if it has not.
func (a *attemptCtx) ended() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cause
}

// cancelOnEnd has the attempt cancel st (nil: none) when it ends; st is
// cancelled at once if it has ended already.
func (a *attemptCtx) cancelOnEnd(st *quic.Stream) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.str = st
	if st != nil {
		a.opened = a.clock.time()
		if a.err != nil {
			cancelStream(st)
		}
	}
}

// streaming reports whether the attempt's call has its stream open
// (cancelOnEnd). Under clock.mu, which is taken before a.mu.
func (a *attemptCtx) streaming() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.str != nil
}

// atLimit reports whether the attempt's end is its limit: a bound of the
// caller's, not its own.
func (a *attemptCtx) atLimit() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.limit.IsZero() && !a.end.Before(a.limit)
}

// extend moves the end of an attempt whose time is up (now) if it spent
// some of it waiting for stream credit, and reports whether it did: the
// attempt's bound is counted from when its stream opened; while it still
// waits, it gets its bound again from now if the member was heard from
// since it began (or extend last looked), as a live member is while it
// answers the calls holding its streams. An attempt that waited for a
// bound in which not one packet came ends: the member is taken for gone,
// as before. Never past limit. Under clock.mu.
//
// Why: with more calls than the member's max_streams, those queued for
// credit were ended at their bound (errAttemptTimeout), the connection
// dropped and every call on it failing over, when a slow but live leader
// answered each call within its bound once it had its stream: the client
// abandoned a healthy leader for followers that refuse sends.
func (a *attemptCtx) extend(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	var end time.Time
	switch {
	case a.released || a.err != nil:
		return false
	case a.str != nil:
		end = a.opened.Add(a.bound)
	case a.conn == nil:
		return false
	default:
		heard := a.conn.ConnectionStats().PacketsReceived
		if heard == a.seen {
			return false
		}
		a.seen, end = heard, now.Add(a.bound)
	}
	if !a.limit.IsZero() && a.limit.Before(end) {
		end = a.limit
	}
	if !now.Before(end) {
		return false
	}
	a.end = end
	return true
}

func (a *attemptCtx) finish(err, cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.released {
		return
	}
	a.err, a.cause = err, cause
	if a.done != nil {
		close(a.done)
	}
	if a.str != nil {
		cancelStream(a.str)
	}
}

// release ends the attempt: the clock forgets it.
func (a *attemptCtx) release() {
	a.mu.Lock()
	a.released = true
	a.str = nil
	a.mu.Unlock()
	a.clock.remove(a)
}

// dueAt is when the clock must next look at a: its silence check, or its
// end. Under clock.mu.
func (a *attemptCtx) dueAt() time.Time {
	if a.silence != nil && a.silentAt.Before(a.end) {
		return a.silentAt
	}
	return a.end
}

// attemptClock times a client's attempts on cells' members and watches
// their callers' contexts: one timer for all of them, armed for the
// earliest moment one of them is due (an attempt's silence check or its
// end), and one registration (context.AfterFunc) per caller's context
// with attempts in flight, which they share. Attempts normally end long
// before they are due, so the timer fires about once per cellSilentFor
// while calls go on, whatever their rate. A timer and a registration of
// each attempt's own were ~6% of the bench client's CPU under unbatched
// send 16x16 to a cell, and a tenth of the bytes it allocated (every
// caller shares one context there, so each registration also took that
// context's lock; BENCHMARKS.md, issue 20, session 7).
type attemptClock struct {
	// now is the clock's time, time.Now if nil: a test sets it before
	// the first attempt, and moves it and calls tick itself, so that an
	// attempt's end is a moment the test chooses, not one of the
	// machine's load (until session 18 such tests slept for the bound).
	now func() time.Time

	mu         sync.Mutex
	head, tail *attemptCtx // attempts in flight, oldest first
	timer      *time.Timer // nil until first armed
	armedAt    time.Time   // when timer fires; zero once it has
	watches    map[<-chan struct{}]*parentWatch
}

// time returns the clock's time now.
func (c *attemptClock) time() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// parentWatch is the registration with a caller's context that ends the
// attempts made under it when it ends.
type parentWatch struct {
	done  <-chan struct{}
	n     int  // attempts counting on it
	fired bool // the context ended: the watch is out of the map
	stop  func() bool
}

// start begins an attempt under parent that ends bound from now (from
// when its stream opens, if it waits for stream credit: extend), and
// never after limit (if set), checked for silence on conn (nil: not) at
// silentFor its path (whose last handshake took handshake), if that comes
// before its end. Its caller releases it.
func (c *attemptClock) start(parent context.Context, bound time.Duration, limit time.Time, conn *quic.Conn, handshake time.Duration) *attemptCtx {
	now := c.time()
	end := now.Add(bound)
	if !limit.IsZero() && limit.Before(end) {
		end = limit
	}
	a := &attemptCtx{Context: parent, end: end, clock: c, bound: bound, limit: limit, conn: conn}
	if conn != nil {
		stats := conn.ConnectionStats()
		a.seen = stats.PacketsReceived
		d := silentFor(stats, handshake)
		if at := now.Add(d); at.Before(end) {
			a.watched, a.silence, a.heard, a.silentAt, a.silentFor = true, conn, stats.PacketsReceived, at, d
		}
	}
	pdone := parent.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	a.prev = c.tail
	if c.tail != nil {
		c.tail.next = a
	} else {
		c.head = a
	}
	c.tail = a
	if pdone != nil {
		w := c.watches[pdone]
		if w == nil {
			// An AfterFunc on a context that has ended already runs at
			// once, on a goroutine of its own: the clock's lock may be
			// held here.
			w = &parentWatch{done: pdone}
			w.stop = context.AfterFunc(parent, func() { c.parentEnded(w, parent) })
			if c.watches == nil {
				c.watches = make(map[<-chan struct{}]*parentWatch)
			}
			c.watches[pdone] = w
		}
		w.n++
		a.watch = w
	}
	if due := a.dueAt(); c.armedAt.IsZero() || due.Before(c.armedAt) {
		c.arm(due)
	}
	return a
}

// arm has the timer fire at at. Under c.mu.
func (c *attemptClock) arm(at time.Time) {
	c.armedAt = at
	if c.timer == nil {
		c.timer = time.AfterFunc(at.Sub(c.time()), c.tick)
		return
	}
	c.timer.Reset(at.Sub(c.time()))
}

// remove forgets a, and its context's watch if a was the last attempt
// counting on it.
func (c *attemptClock) remove(a *attemptCtx) {
	c.mu.Lock()
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		c.head = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	} else {
		c.tail = a.prev
	}
	a.prev, a.next = nil, nil
	w := a.watch
	last := w != nil && !w.fired
	if last {
		w.n--
		last = w.n == 0
	}
	if last {
		delete(c.watches, w.done)
	}
	c.mu.Unlock()
	if last {
		w.stop()
	}
}

// tick ends the attempts that are due: silent ones, and those whose time
// is up; and arms the timer for the next one due.
func (c *attemptClock) tick() {
	now := c.time()
	var silent, over []*attemptCtx
	c.mu.Lock()
	c.armedAt = time.Time{}
	var next time.Time
	for a := c.head; a != nil; a = a.next {
		if a.over {
			continue
		}
		if a.silence != nil && !now.Before(a.dueAt()) {
			switch heard := a.silence.ConnectionStats().PacketsReceived; {
			case heard != a.heard:
				a.silence = nil // heard from: the attempt runs to its end
			case !a.streaming():
				// Its stream is not open yet: it waits for stream credit
				// (every stream the member allows is a call's), and has
				// asked nothing the member owes an acknowledgement. Its
				// silence is counted from now: it was ended as silent and
				// its connection dropped, every call on it failing over,
				// when a slow member had more calls than max_streams.
				a.heard, a.silentAt = heard, now.Add(a.silentFor)
			default:
				a.over = true
				silent = append(silent, a)
				continue
			}
		}
		if !now.Before(a.end) && !a.extend(now) {
			a.over = true
			over = append(over, a)
			continue
		}
		if due := a.dueAt(); next.IsZero() || due.Before(next) {
			next = due
		}
	}
	if !next.IsZero() {
		c.arm(next)
	}
	c.mu.Unlock()
	for _, a := range silent {
		a.finish(context.Canceled, errSilent)
	}
	for _, a := range over {
		a.finish(context.DeadlineExceeded, errAttemptEnd)
	}
}

// parentEnded ends the attempts made under w's context, which has ended.
func (c *attemptClock) parentEnded(w *parentWatch, parent context.Context) {
	err, cause := parent.Err(), context.Cause(parent)
	var ended []*attemptCtx
	c.mu.Lock()
	w.fired = true
	if c.watches[w.done] == w {
		delete(c.watches, w.done)
	}
	for a := c.head; a != nil; a = a.next {
		if a.watch == w {
			ended = append(ended, a)
		}
	}
	c.mu.Unlock()
	for _, a := range ended {
		a.finish(err, cause)
	}
}

// stop stops the timer (Client.Close): the attempts still in flight end
// with their connections.
func (c *attemptClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.armedAt = time.Time{}
	}
}

package client

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAttemptClockCallersContext: attempts made under one caller's context
// share one watch of it, which the last of them to end gives up; when the
// context ends, every attempt still in flight under it ends with its
// error, and one begun after that ends at once.
func TestAttemptClockCallersContext(t *testing.T) {
	var c attemptClock
	defer c.stop()
	parent, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	other, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()
	a, b, d := c.start(parent, time.Hour, time.Time{}, nil, 0), c.start(parent, time.Hour, time.Time{}, nil, 0), c.start(parent, time.Hour, time.Time{}, nil, 0)
	o := c.start(other, time.Hour, time.Time{}, nil, 0)
	if got := len(c.watches); got != 2 {
		t.Fatalf("watches of 2 contexts: %d", got)
	}
	if w := c.watches[parent.Done()]; w == nil || w.n != 3 {
		t.Fatalf("watch of the context of 3 attempts: %+v", w)
	}
	d.release()
	if got := c.watches[parent.Done()].n; got != 2 {
		t.Fatalf("attempts counting on the watch after one ended: %d, want 2", got)
	}
	o.release()
	if _, ok := c.watches[other.Done()]; ok {
		t.Fatal("the watch of a context with no attempt left was kept")
	}

	why := errors.New("the caller gave up")
	cancel(why)
	for _, x := range []*attemptCtx{a, b} {
		<-x.Done()
		if !errors.Is(x.Err(), context.Canceled) || x.ended() != why {
			t.Fatalf("attempt under the ended context: %v, %v; want %v, %v", x.Err(), x.ended(), context.Canceled, why)
		}
	}
	if d.Err() != nil {
		t.Fatalf("an attempt released before the context ended: %v, want nil", d.Err())
	}
	late := c.start(parent, time.Hour, time.Time{}, nil, 0)
	<-late.Done()
	for _, x := range []*attemptCtx{a, b, late} {
		x.release()
	}
	if c.head != nil || c.tail != nil || len(c.watches) != 0 {
		t.Fatalf("attempts or watches left: head %p, tail %p, %d watches", c.head, c.tail, len(c.watches))
	}
}

// TestAttemptClockEnds: an attempt ends when its time is up, with a
// passed deadline's error, whether it began before or after one that ends
// later; the others go on.
func TestAttemptClockEnds(t *testing.T) {
	var c attemptClock
	defer c.stop()
	ctx := context.Background()
	long := c.start(ctx, time.Hour, time.Time{}, nil, 0)
	defer long.release()
	for range 2 {
		short := c.start(ctx, 10*time.Millisecond, time.Time{}, nil, 0)
		<-short.Done()
		if !errors.Is(short.Err(), context.DeadlineExceeded) || short.ended() != errAttemptEnd {
			t.Fatalf("attempt whose time is up: %v, %v; want %v, %v", short.Err(), short.ended(), context.DeadlineExceeded, errAttemptEnd)
		}
		short.release()
	}
	if long.Err() != nil {
		t.Fatalf("attempt with an hour to go: %v", long.Err())
	}
}

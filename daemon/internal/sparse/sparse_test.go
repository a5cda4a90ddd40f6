package sparse

import (
	"testing"
	"time"
)

// clock is a Sampler's clock that the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestSamplerOnePerInterval: of a flood of one key's events, the first is
// allowed, the rest within Every are not, and the next one allowed after
// Every says how many were left out.
func TestSamplerOnePerInterval(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := Sampler[string]{Every: time.Second, Now: c.now}
	if ok, n := s.Allow("a"); !ok || n != 0 {
		t.Fatalf("first event: allowed %v, %d suppressed; want true, 0", ok, n)
	}
	for i := range 5 {
		c.advance(100 * time.Millisecond)
		if ok, n := s.Allow("a"); ok || n != 0 {
			t.Fatalf("event %d within the interval: allowed %v, %d suppressed; want false, 0", i+2, ok, n)
		}
	}
	c.advance(500 * time.Millisecond) // a second since the first
	if ok, n := s.Allow("a"); !ok || n != 5 {
		t.Fatalf("event after the interval: allowed %v, %d suppressed; want true, 5", ok, n)
	}
	c.advance(999 * time.Millisecond)
	if ok, _ := s.Allow("a"); ok {
		t.Fatal("an event 999 ms after the last allowed one was allowed; the interval is 1 s")
	}
}

// TestSamplerKeysIndependent: one key's flood does not hold back another's
// first event, and each key counts only its own left-out events.
func TestSamplerKeysIndependent(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := Sampler[int]{Every: time.Minute, Now: c.now}
	s.Allow(1)
	s.Allow(1)
	s.Allow(1)
	if ok, n := s.Allow(2); !ok || n != 0 {
		t.Fatalf("key 2's first event: allowed %v, %d suppressed; want true, 0", ok, n)
	}
	s.Allow(2)
	c.advance(time.Minute)
	if ok, n := s.Allow(1); !ok || n != 2 {
		t.Fatalf("key 1 after the interval: allowed %v, %d suppressed; want true, 2", ok, n)
	}
	if ok, n := s.Allow(2); !ok || n != 1 {
		t.Fatalf("key 2 after the interval: allowed %v, %d suppressed; want true, 1", ok, n)
	}
}

// TestSamplerClockStepsBack: a clock that stepped back (before the last
// allowed event) allows the event rather than suppressing until the clock
// catches up again.
func TestSamplerClockStepsBack(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := Sampler[string]{Every: time.Hour, Now: c.now}
	s.Allow("a")
	s.Allow("a")
	c.advance(-time.Minute)
	if ok, n := s.Allow("a"); !ok || n != 1 {
		t.Fatalf("after the clock stepped back: allowed %v, %d suppressed; want true, 1", ok, n)
	}
	// The interval now runs from the stepped-back time.
	c.advance(time.Minute)
	if ok, _ := s.Allow("a"); ok {
		t.Fatal("an event a minute after the last allowed one was allowed; the interval is an hour")
	}
}

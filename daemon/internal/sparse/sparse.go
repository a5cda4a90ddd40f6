// Package sparse picks which of a flood of like events to log, for the
// daemons and their server: at most one per interval for each key, with a
// count of those left out.
package sparse

import (
	"sync"
	"time"
)

// Sampler picks which of a flood of like events to log: at most one per
// Every for each key, on the clock Now. Its zero value (with Every and Now
// set) is ready; it holds one entry per key, so its keys must be few.
type Sampler[K comparable] struct {
	Every time.Duration
	Now   func() time.Time

	mu   sync.Mutex
	keys map[K]*count
}

type count struct {
	last  time.Time // when the key was last allowed
	since int       // events since then
}

// Allow counts an event of key k, and says whether to log it and how many
// of k's events were not logged since the last one that was. A clock that
// stepped back allows the event.
func (s *Sampler[K]) Allow(k K) (ok bool, suppressed int) {
	now := s.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[K]*count)
	}
	n := s.keys[k]
	if n == nil {
		n = &count{}
		s.keys[k] = n
	}
	n.since++
	if d := now.Sub(n.last); !n.last.IsZero() && d >= 0 && d < s.Every {
		return false, 0
	}
	suppressed = n.since - 1
	n.last, n.since = now, 0
	return true, suppressed
}

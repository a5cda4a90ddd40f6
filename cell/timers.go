package cell

import (
	"sync"
	"time"
)

// timers runs functions after a delay (time.AfterFunc) as goroutines of
// their owner's: close waits for those running, and keeps those whose time
// comes after it from running at all.
//
// Why: time.AfterFunc's goroutine has no owner. A proposal's CommitWait
// timer (propose.go) that fired as the node closed went on answering its
// senders (the daemon's callbacks) and logging after Close had returned.
type timers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// after runs fn after d, unless close was called before; Stop on the timer
// it returns keeps fn from running, as time.AfterFunc's.
func (ts *timers) after(d time.Duration, fn func()) *time.Timer {
	return time.AfterFunc(d, func() {
		ts.mu.Lock()
		if ts.closed {
			ts.mu.Unlock()
			return
		}
		ts.wg.Add(1)
		ts.mu.Unlock()
		defer ts.wg.Done()
		fn()
	})
}

// close waits for the functions running, and keeps the others from
// running. It is safe to call more than once.
func (ts *timers) close() {
	ts.mu.Lock()
	ts.closed = true
	ts.mu.Unlock()
	ts.wg.Wait()
}

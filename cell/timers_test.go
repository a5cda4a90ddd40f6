package cell

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestTimersClose: close waits for a function whose time came and that is
// still running, and a function whose time comes after close never runs.
func TestTimersClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ts timers
		running, release := make(chan struct{}), make(chan struct{})
		ts.after(time.Second, func() {
			close(running)
			<-release
		})
		ran := false
		ts.after(3*time.Second, func() { ran = true })
		<-running

		closed := make(chan struct{})
		go func() {
			ts.close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			close(release)
			t.Fatal("close returned while a function of its timers was running")
		default:
		}
		close(release)
		<-closed
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if ran {
			t.Fatal("a function whose time came after close ran")
		}
		ts.close() // twice
	})
}

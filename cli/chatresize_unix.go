//go:build unix

package cli

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// followResize calls resized each time the terminal changes size
// (SIGWINCH) until stop is called; stop waits for the watcher to end.
func followResize(resized func()) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ch:
				resized()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

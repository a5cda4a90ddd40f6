// Package lifecycle is the Serve/Close bookkeeping huddle's daemons share:
// whether a daemon serves, whether it is closed, and its own goroutines
// (besides its server's), which stop when it closes.
package lifecycle

import (
	"context"
	"sync"

	"github.com/huddle-chat/huddle/daemon/server"
)

// Lifecycle is one daemon's. Its goroutines' context (Ctx) ends when Close
// begins.
type Lifecycle struct {
	mu      sync.Mutex
	serving bool
	closed  bool
	closing chan struct{} // closed when Close begins
	done    chan struct{} // closed when Close has finished
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// New returns the lifecycle of a daemon that has not served yet.
func New() *Lifecycle {
	l := &Lifecycle{closing: make(chan struct{}), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Ctx is the daemon's goroutines' context: it ends when Close begins.
func (l *Lifecycle) Ctx() context.Context { return l.ctx }

// Begin marks the daemon as serving and starts its goroutines. It returns
// server.ErrClosed or server.ErrServing if it may not.
func (l *Lifecycle) Begin(goroutines ...func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return server.ErrClosed
	case l.serving:
		return server.ErrServing
	}
	l.serving = true
	for _, f := range goroutines {
		l.wg.Go(f)
	}
	return nil
}

// IsClosed reports whether Close has begun.
func (l *Lifecycle) IsClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Wait blocks until ctx ends, then runs closeFn, or until another caller
// closes; either way it returns once Close has finished.
func (l *Lifecycle) Wait(ctx context.Context, closeFn func() error) {
	select {
	case <-ctx.Done():
		closeFn()
	case <-l.closing:
		<-l.done
	}
}

// Close runs stop once, after telling the daemon's goroutines to stop and
// waiting for them; every call returns when it has finished.
func (l *Lifecycle) Close(stop func()) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	l.mu.Unlock()
	if first {
		close(l.closing)
		l.cancel()
		l.wg.Wait()
		stop()
		close(l.done)
	}
	<-l.done
}

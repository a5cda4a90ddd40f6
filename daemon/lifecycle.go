package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"sync"
	"time"
)

// lifecycle is the Serve/Close bookkeeping both daemons share: whether they
// serve, whether they are closed, and the daemon's own goroutines (besides
// the server's), which stop when closing is closed.
type lifecycle struct {
	mu      sync.Mutex
	serving bool
	closed  bool
	closing chan struct{} // closed when Close begins
	done    chan struct{} // closed when Close has finished
	wg      sync.WaitGroup
	// ctx is the daemon's goroutines' context; it ends when Close begins.
	ctx    context.Context
	cancel context.CancelFunc
}

func newLifecycle() *lifecycle {
	l := &lifecycle{closing: make(chan struct{}), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// begin marks the daemon as serving and starts its goroutines. It returns
// ErrClosed or ErrServing if it may not.
func (l *lifecycle) begin(goroutines ...func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.serving:
		return ErrServing
	}
	l.serving = true
	for _, f := range goroutines {
		l.wg.Go(f)
	}
	return nil
}

func (l *lifecycle) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// wait blocks until ctx ends, then runs closeFn, or until another caller
// closes; either way it returns once Close has finished.
func (l *lifecycle) wait(ctx context.Context, closeFn func() error) {
	select {
	case <-ctx.Done():
		closeFn()
	case <-l.closing:
		<-l.done
	}
}

// close runs stop once, after telling the daemon's goroutines to stop and
// waiting for them; every call returns when it has finished.
func (l *lifecycle) close(stop func()) {
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

// newEpoch returns a random nonzero epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// orDefault returns v, or def if v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// logger returns l, or a logger that discards if l is nil.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// clock returns now, or time.Now if now is nil.
func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

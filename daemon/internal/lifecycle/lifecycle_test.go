package lifecycle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/daemon/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestBeginOnce: a daemon serves once; a second Begin, or one after Close,
// is refused with the server's typed errors, and starts nothing.
func TestBeginOnce(t *testing.T) {
	l := New()
	if err := l.Begin(); err != nil {
		t.Fatalf("first Begin: %v", err)
	}
	var started atomic.Int32
	if err := l.Begin(func() { started.Add(1) }); !errors.Is(err, server.ErrServing) {
		t.Fatalf("second Begin: %v, want ErrServing", err)
	}
	l.Close(func() {})
	if err := l.Begin(func() { started.Add(1) }); !errors.Is(err, server.ErrClosed) {
		t.Fatalf("Begin after Close: %v, want ErrClosed", err)
	}
	if n := started.Load(); n != 0 {
		t.Fatalf("%d goroutines started by refused Begins", n)
	}
	if !l.IsClosed() {
		t.Fatal("IsClosed is false after Close")
	}
}

// TestCloseStopsGoroutinesFirst: Close ends the goroutines' context, waits
// for every goroutine to return, and only then runs stop, once, however
// many callers close at the same time; every caller returns after stop has
// finished.
func TestCloseStopsGoroutinesFirst(t *testing.T) {
	l := New()
	var running atomic.Int32
	finish := make(chan struct{}) // the goroutines' work after their context ended
	worker := func() {
		running.Add(1)
		defer running.Add(-1)
		<-l.Ctx().Done()
		<-finish
	}
	if err := l.Begin(worker, worker, worker); err != nil {
		t.Fatal(err)
	}
	var stops atomic.Int32
	stopped := make(chan struct{})
	stop := func() {
		if n := running.Load(); n != 0 {
			t.Errorf("stop ran while %d goroutines still ran", n)
		}
		stops.Add(1)
		close(stopped)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			l.Close(stop)
			select {
			case <-stopped:
			default:
				t.Error("a Close returned before stop had finished")
			}
		})
	}
	<-l.Ctx().Done() // Close has begun
	select {
	case <-stopped:
		t.Fatal("stop ran while the goroutines were still working")
	case <-time.After(50 * time.Millisecond): // a bound on what must not happen
	}
	close(finish)
	wg.Wait()
	if n := stops.Load(); n != 1 {
		t.Fatalf("stop ran %d times, want once", n)
	}
}

// TestWaitClosesOnContext: Wait runs the daemon's close function when its
// context ends.
func TestWaitClosesOnContext(t *testing.T) {
	l := New()
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(returned)
		l.Wait(ctx, func() error { l.Close(func() { close(closed) }); return nil })
	}()
	cancel()
	<-returned
	select {
	case <-closed:
	default:
		t.Fatal("Wait returned without running the close function")
	}
}

// TestWaitReturnsWhenClosedElsewhere: a Wait whose context lives on
// returns once another caller's Close has finished, not when it began,
// and without running its own close function.
func TestWaitReturnsWhenClosedElsewhere(t *testing.T) {
	l := New()
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		l.Wait(context.Background(), func() error {
			t.Error("Wait ran its close function though its context never ended")
			return nil
		})
	}()
	release := make(chan struct{})
	closeDone := make(chan struct{})
	go func() {
		defer close(closeDone)
		l.Close(func() { <-release })
	}()
	// Close has begun once the goroutines' context ends; stop is held.
	<-l.Ctx().Done()
	select {
	case <-returned:
		t.Fatal("Wait returned while Close was still running")
	case <-time.After(50 * time.Millisecond): // a bound on a return that must not happen
	}
	close(release)
	<-closeDone
	<-returned
}

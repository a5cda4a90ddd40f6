// Package lifecycle is the Serve/Close bookkeeping huddle's daemons share:
// whether a daemon serves, whether it is closed, its own goroutines
// (besides its server's), which stop when it closes, and the loading of its
// state directory (Load), which a close does not wait for past a bound.
//
// Both bounds are for a disk that does not answer (a hung NFS mount, a
// dying disk retrying for minutes): a read or write blocked in the kernel
// cannot be cancelled, so a daemon told to stop (SIGTERM) stops without
// what waits on it, within systemd's TimeoutStopSec (15 s), instead of
// waiting for the disk until SIGKILL.
package lifecycle

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
)

// Wait is how long Close waits for the daemon's goroutines, past the time
// their own bounded work on stopping takes (Loop.Stopping), and StopLoads
// for the loads under way, before going on without them: as long as the
// server waits for its stuck handlers past the grace period.
const Wait = 3 * time.Second

// Loop is one of a daemon's own goroutines (besides its server's).
type Loop struct {
	// Name says what it does: Close's caller logs the names of those it
	// went on without.
	Name string
	Run  func()
	// Stopping bounds the work the loop does by design once told to stop
	// (a group daemon's deregistration from its registries: 2 s): Close
	// waits that long, and Wait more, for it. Until session 21 Close
	// waited Wait in all, which left a deregistration that took its 2 s
	// on a loaded machine 1 s to return, and past it the daemon blamed
	// the disk.
	Stopping time.Duration
}

// Lifecycle is one daemon's. Its goroutines' context (Ctx) ends when Close
// begins.
type Lifecycle struct {
	mu      sync.Mutex
	serving bool
	closed  bool
	left    []string       // the goroutines Close went on without, by name
	running map[int]string // the goroutines not returned yet, by Begin's index, and their names
	bound   time.Duration  // how long Close waits for them: wait, and the longest Loop.Stopping
	closing chan struct{}  // closed when Close begins
	done    chan struct{}  // closed when Close has finished
	stopped chan struct{}  // closed when the goroutines have returned (Stopped)
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	wait    time.Duration // Wait; tests shorten it

	// The loads (Load): loadMu guards the fields below it.
	loadMu   sync.Mutex
	loads    int           // loads under way
	loaded   chan struct{} // closed when loads falls to 0; nil while none is under way
	stopping chan struct{} // closed when StopLoads begins
	undo     func()        // set by StopLoads leaving loads under way: run when the last returns
}

// New returns the lifecycle of a daemon that has not served yet.
func New() *Lifecycle {
	l := &Lifecycle{closing: make(chan struct{}), done: make(chan struct{}), stopped: make(chan struct{}),
		stopping: make(chan struct{}), wait: Wait}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Load runs load, a daemon's loading of its state directory (its Listen:
// the directory's lock, its key, its groups' logs), in a goroutine of its
// own, and returns its error; or server.ErrClosed once the daemon begins
// to close (StopLoads), without waiting for load, which may be stuck in a
// disk that does not answer: what it holds is released once it returns
// (StopLoads's undo). Until session 20 a daemon starting on such a disk
// waited in the open, SIGTERM or not, until SIGKILL. After StopLoads it
// returns server.ErrClosed and runs nothing.
func (l *Lifecycle) Load(load func() error) error {
	l.loadMu.Lock()
	select {
	case <-l.stopping:
		l.loadMu.Unlock()
		return server.ErrClosed
	default:
	}
	if l.loads == 0 {
		l.loaded = make(chan struct{})
	}
	l.loads++
	l.loadMu.Unlock()
	done := make(chan error, 1)
	go func() {
		err := load()
		l.loadMu.Lock()
		l.loads--
		var undo func()
		if l.loads == 0 {
			close(l.loaded)
			l.loaded = nil
			undo, l.undo = l.undo, nil
		}
		l.loadMu.Unlock()
		if undo != nil {
			undo()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-l.stopping:
		select {
		case err := <-done: // both ready: what load said
			return err
		default:
			return server.ErrClosed
		}
	}
}

// StopLoads is the first step of a daemon's close: Load refuses from then
// on, and its callers waiting return server.ErrClosed at once. It waits up
// to Wait for the loads under way to return; if some still have not, it
// returns left true, and undo (the release of what they hold: the state
// directory's lock, the logs they opened) runs once the last has returned,
// which the caller must not wait for. first is true for the call that left
// them (the one to say so); later calls return at once while they are
// still under way.
func (l *Lifecycle) StopLoads(undo func()) (left, first bool) {
	l.loadMu.Lock()
	select {
	case <-l.stopping:
	default:
		close(l.stopping)
	}
	loaded, abandoned := l.loaded, l.undo != nil
	l.loadMu.Unlock()
	if loaded == nil {
		return false, false
	}
	if !abandoned {
		t := time.NewTimer(l.wait)
		defer t.Stop()
		select {
		case <-loaded:
			return false, false
		case <-t.C:
		}
	}
	l.loadMu.Lock()
	defer l.loadMu.Unlock()
	if l.loads == 0 {
		return false, false
	}
	first = l.undo == nil
	if first {
		l.undo = undo
	}
	return true, first
}

// Ctx is the daemon's goroutines' context: it ends when Close begins.
func (l *Lifecycle) Ctx() context.Context { return l.ctx }

// Begin marks the daemon as serving and starts its goroutines. It returns
// server.ErrClosed or server.ErrServing if it may not.
func (l *Lifecycle) Begin(loops ...Loop) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return server.ErrClosed
	case l.serving:
		return server.ErrServing
	}
	l.serving = true
	l.running = make(map[int]string, len(loops))
	for i, lp := range loops {
		l.bound = max(l.bound, lp.Stopping)
		l.running[i] = lp.Name
		l.wg.Go(func() {
			defer func() {
				l.mu.Lock()
				delete(l.running, i)
				l.mu.Unlock()
			}()
			lp.Run()
		})
	}
	return nil
}

// Bound is how long Close waits for the daemon's goroutines once told to
// stop: Wait, and the longest Loop.Stopping of those Begin started.
func (l *Lifecycle) Bound() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wait + l.bound
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
// waiting for them, Bound at most; every call returns when it has
// finished, and returns the names of those it went on without, sorted (nil
// if none: one waiting on something that does not answer, which nothing
// can interrupt; until session 20 Close waited for it for ever). Stopped
// says when they return.
func (l *Lifecycle) Close(stop func()) (left []string) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	bound := l.wait + l.bound
	l.mu.Unlock()
	if first {
		close(l.closing)
		l.cancel()
		go func() {
			l.wg.Wait()
			close(l.stopped)
		}()
		t := time.NewTimer(bound)
		select {
		case <-l.stopped:
		case <-t.C:
			l.mu.Lock()
			for _, name := range l.running {
				l.left = append(l.left, name)
			}
			l.mu.Unlock()
			slices.Sort(l.left)
		}
		t.Stop()
		stop()
		close(l.done)
	}
	<-l.done
	return slices.Clone(l.left)
}

// Stopped returns a channel closed once the daemon's goroutines have all
// returned, those Close went on without too, if ever. (Not before Close.)
func (l *Lifecycle) Stopped() <-chan struct{} { return l.stopped }

// ListenUntil runs listen (a daemon's Listen), and closeFn (its Close) if
// ctx ends before listen returns: on a disk that does not answer, Listen
// waits in it for ever, and Close makes it return (StopLoads). It returns
// listen's error; if ctx ended meanwhile, closeFn has returned.
func ListenUntil(ctx context.Context, listen, closeFn func() error) error {
	stop := context.AfterFunc(ctx, func() { closeFn() })
	err := listen()
	if !stop() {
		closeFn() // returns once the AfterFunc's has
	}
	return err
}

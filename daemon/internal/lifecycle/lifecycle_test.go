package lifecycle

import (
	"context"
	"errors"
	"slices"
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
	if err := l.Begin(Loop{Run: func() { started.Add(1) }}); !errors.Is(err, server.ErrServing) {
		t.Fatalf("second Begin: %v, want ErrServing", err)
	}
	l.Close(func() {})
	if err := l.Begin(Loop{Run: func() { started.Add(1) }}); !errors.Is(err, server.ErrClosed) {
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
	if err := l.Begin(Loop{Run: worker}, Loop{Run: worker}, Loop{Run: worker}); err != nil {
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

// TestCloseLeavesStuckGoroutines: a goroutine that does not return when
// the context ends (one in a disk that does not answer) is waited for
// Wait, then left: Close runs stop and returns, reporting it; Stopped is
// closed once it returns. Until session 20 Close waited for it for ever.
func TestCloseLeavesStuckGoroutines(t *testing.T) {
	l := New()
	l.wait = 100 * time.Millisecond
	release := make(chan struct{})
	if err := l.Begin(Loop{Name: "stuck", Run: func() { <-release }}, Loop{Name: "stops", Run: func() { <-l.Ctx().Done() }}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	closed := make(chan []string, 1)
	go func() { closed <- l.Close(func() { close(stopped) }) }()
	select {
	case left := <-closed:
		if !slices.Equal(left, []string{"stuck"}) {
			t.Errorf("Close left %q, want the one that did not return named (stuck)", left)
		}
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("Close still waits a minute for a goroutine that does not return")
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Close returned without running stop")
	}
	select {
	case <-l.Stopped():
		t.Fatal("Stopped is closed while a goroutine still runs")
	default:
	}
	if left := l.Close(func() { t.Error("stop ran twice") }); !slices.Equal(left, []string{"stuck"}) {
		t.Errorf("a later Close reports %q left, want stuck", left)
	}
	close(release)
	<-l.Stopped()
}

// TestCloseWaitsForGoroutinesThatReturn: goroutines that return within
// Wait are not reported stuck, and Stopped is closed when Close returns.
func TestCloseWaitsForGoroutinesThatReturn(t *testing.T) {
	l := New()
	if err := l.Begin(Loop{Name: "stops", Run: func() { <-l.Ctx().Done() }}); err != nil {
		t.Fatal(err)
	}
	if left := l.Close(func() {}); left != nil {
		t.Fatalf("Close reported %q left, which returned", left)
	}
	select {
	case <-l.Stopped():
	default:
		t.Fatal("Stopped is not closed once the goroutines returned")
	}
}

// TestCloseWaitsForALoopsOwnStopping: a loop whose work on stopping is
// bounded by design (Loop.Stopping: a group daemon's deregistration, 2 s)
// gets that bound and Wait more before Close goes on without it: one that
// takes longer than Wait, but ends within its own bound, is not reported
// left. Until session 21 Close waited Wait in all, and a deregistration
// that took its 2 s on a loaded machine had 1 s to return. (Here Wait is
// 50 ms and the loop's stopping takes 8 of them, within its minute.)
func TestCloseWaitsForALoopsOwnStopping(t *testing.T) {
	l := New()
	l.wait = 50 * time.Millisecond
	deregister := func() {
		<-l.Ctx().Done()
		tm := time.NewTimer(8 * l.wait) // the loop's own work on stopping
		defer tm.Stop()
		<-tm.C
	}
	if err := l.Begin(Loop{Name: "registration", Run: deregister, Stopping: time.Minute}, Loop{Name: "quick", Run: func() { <-l.Ctx().Done() }}); err != nil {
		t.Fatal(err)
	}
	if got, want := l.Bound(), time.Minute+l.wait; got != want {
		t.Errorf("Bound: %v, want the longest Stopping and Wait, %v", got, want)
	}
	if left := l.Close(func() {}); left != nil {
		t.Fatalf("Close went on without %q, which stopped within its own bound", left)
	}
	select {
	case <-l.Stopped():
	default:
		t.Fatal("Close returned before the loop stopping within its own bound had")
	}
}

// TestStopLoadsLeavesAStuckLoad: a load stuck in a disk that does not
// answer does not hold the close: its caller gets ErrClosed as soon as
// StopLoads begins, StopLoads gives up after Wait (left, first), a later
// call returns at once (left, not first), and undo runs once, when the
// load returns. Until session 20 a daemon's close waited for its Listen.
func TestStopLoadsLeavesAStuckLoad(t *testing.T) {
	l := New()
	l.wait = 100 * time.Millisecond
	release := make(chan struct{})
	entered := make(chan struct{})
	loaded := make(chan error, 1)
	go func() {
		loaded <- l.Load(func() error {
			close(entered)
			<-release
			return nil
		})
	}()
	<-entered
	var undos atomic.Int32
	undone := make(chan struct{})
	undo := func() {
		if undos.Add(1) == 1 {
			close(undone)
		}
	}
	stopped := make(chan [2]bool, 1)
	go func() {
		left, first := l.StopLoads(undo)
		stopped <- [2]bool{left, first}
	}()
	select {
	case err := <-loaded:
		if !errors.Is(err, server.ErrClosed) {
			t.Errorf("Load while stopping: %v, want ErrClosed", err)
		}
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("Load still waits a minute for its stuck load once the close began")
	}
	select {
	case r := <-stopped:
		if r != [2]bool{true, true} {
			t.Errorf("StopLoads on a stuck load: left, first = %v, want true, true", r)
		}
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("StopLoads still waits a minute for a stuck load")
	}
	if left, first := l.StopLoads(func() { t.Error("a later StopLoads's undo ran") }); !left || first {
		t.Errorf("a later StopLoads: left, first = %v, %v, want true, false", left, first)
	}
	if n := undos.Load(); n != 0 {
		t.Fatalf("undo ran %d times before the load returned", n)
	}
	if err := l.Load(func() error { t.Error("a load ran after StopLoads"); return nil }); !errors.Is(err, server.ErrClosed) {
		t.Errorf("Load after StopLoads: %v, want ErrClosed", err)
	}
	close(release)
	<-undone
	if left, _ := l.StopLoads(func() {}); left {
		t.Error("StopLoads reports a load left after it returned")
	}
	if n := undos.Load(); n != 1 {
		t.Fatalf("undo ran %d times, want once", n)
	}
}

// TestStopLoadsWaitsForALoadThatReturns: a load that returns within Wait
// is waited for, its error given to its caller if it came first, and no
// undo runs.
func TestStopLoadsWaitsForALoadThatReturns(t *testing.T) {
	l := New()
	if err := l.Load(func() error { return errors.New("bad state") }); err == nil || err.Error() != "bad state" {
		t.Fatalf("Load: %v, want the load's error", err)
	}
	if left, _ := l.StopLoads(func() { t.Error("undo ran with no load left") }); left {
		t.Fatal("StopLoads with no load under way reports one left")
	}
	l = New()
	release := make(chan struct{})
	entered := make(chan struct{})
	loaded := make(chan error, 1)
	go func() {
		loaded <- l.Load(func() error { close(entered); <-release; return nil })
	}()
	<-entered
	time.AfterFunc(10*time.Millisecond, func() { close(release) })
	if left, _ := l.StopLoads(func() { t.Error("undo ran for a load that returned in time") }); left {
		t.Fatal("StopLoads left a load that returned within Wait")
	}
	<-loaded
}

package groupd

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/internal/lifecycle"
	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// serveRegistered serves a daemon on cfg whose deregistration on Close is
// bounded by deregister, registered with reg, until its group is listed
// there. The test closes it.
func serveRegistered(t *testing.T, cfg Config, reg *registry.Daemon, deregister time.Duration) (*Daemon, <-chan error) {
	t.Helper()
	cfg.StateDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Groups = []Spec{{Name: "general"}}
	cfg.Registries = []string{reg.Addr().String()}
	cfg.RegistryFingerprints = []wire.Fingerprint{reg.Fingerprint()}
	d, err := New(cfg)
	must(t, err)
	d.deregisterWait = deregister
	must(t, d.Listen())
	served := make(chan error, 1)
	go func() { served <- d.Serve(context.Background()) }()
	t.Cleanup(func() { must(t, d.Close()) }) // if the test failed before
	eventually(t, "the group registered", func() bool {
		s := d.Registrations()
		return len(s) == 1 && s[0].Listed == 1
	})
	return d, served
}

// TestCloseWaitsForASlowDeregistration: a registry that does not answer
// the daemon's deregistration (a slow registry, not a disk) holds the
// registration loop for the deregistration's whole bound, longer here
// than lifecycle.Wait: Close waits for it (that bound, and lifecycle.Wait
// more) and says nothing of loops that did not stop, nor of a disk. Until
// session 21 Close waited lifecycle.Wait in all, 1 s past the 2 s
// deregistration, and past it logged `the daemon's own goroutines did not
// stop (a disk that does not answer?)`.
func TestCloseWaitsForASlowDeregistration(t *testing.T) {
	// The registry logs a deregistration before it answers: held, the
	// daemon's deregistration waits out its bound.
	held := newHoldRecord(t, peertest.Message("group deregistered"))
	reg := startRegistry(t, registry.Config{LeaseTTL: time.Hour, Logger: slog.New(held)})
	t.Cleanup(func() { close(held.release) }) // before the registry's Close
	log, recs := recordLogs(t)
	d, served := serveRegistered(t, Config{Logger: log}, reg, lifecycle.Wait+500*time.Millisecond)

	must(t, d.Close())
	must(t, <-served)
	select {
	case <-held.reached:
	default:
		t.Fatal("the daemon closed without deregistering")
	}
	if len(recs.matching("deregister failed")) != 1 {
		t.Fatalf("the deregistration did not wait out its bound: %q", recs.matching("deregister"))
	}
	if got := append(recs.matching("did not stop"), recs.matching("does not answer")...); len(got) != 0 {
		t.Fatalf("a slow deregistration, within its bound, logged %q", got)
	}
}

// TestCloseLeavesTheRegistrationLoop: a registration loop that does not
// stop within its bound once told to (here held in the daemon's log after
// deregistering, as a machine too loaded to run it would hold it) is left:
// Close logs that it went on without it, naming it, and not the disk,
// which the loop does not wait on (until session 21 it said `a disk that
// does not answer?`). The daemon's Close returns, and its test ends, with
// the loop still running: its late line goes to the late log, not to the
// finished test (testlog.Output), and the state directory is released
// once it has returned.
func TestCloseLeavesTheRegistrationLoop(t *testing.T) {
	reg := startRegistry(t, registry.Config{LeaseTTL: time.Hour})
	var late testlog.Buffer
	var d *Daemon
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo) // if the test failed before
	t.Run("close", func(t *testing.T) {
		rec := logRecorder{next: slog.NewTextHandler(testlog.OutputOr(t, &late), nil), mu: new(sync.Mutex), recs: new([]string)}
		// Held as it deregisters, whether the registry answered within
		// the 100 ms or not (a loaded machine).
		held := newHoldRecordOver(rec, func(r slog.Record) bool {
			return r.Message == "group deregistered" || r.Message == "deregister failed; the lease will lapse"
		}, release)
		var served <-chan error
		d, served = serveRegistered(t, Config{Logger: slog.New(held)}, reg, 100*time.Millisecond)

		must(t, d.Close())
		must(t, <-served)
		<-held.reached
		left := rec.matching("ERROR", "the daemon's own goroutines did not stop", "running=[registration]")
		if len(left) != 1 {
			t.Errorf("Close went on without the registration loop and logged %q, want it named", rec.matching("ERROR"))
		}
		if got := rec.matching("does not answer"); len(got) != 0 {
			t.Errorf("a registration loop left logged %q: not the disk's", got)
		}
		select {
		case <-d.life.Stopped():
			t.Fatal("the loop held stopped")
		default:
		}
	})
	if d == nil {
		return
	}
	// The test above has ended: the loop logs what it held.
	letGo()
	eventually(t, "the loop's line after its test ended, in the late log", func() bool {
		return strings.Contains(late.String(), "deregister")
	})
	<-d.life.Stopped()
	restartsOnceClosed(t, d.cfg)
}

package groupd

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/internal/lifecycle"
	"github.com/huddle-chat/huddle/daemon/registry"
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
	held := newHoldRecord(t, func(rec slog.Record) bool { return rec.Message == "group deregistered" })
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

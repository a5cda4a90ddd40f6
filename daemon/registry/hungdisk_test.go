package registry

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/identity"
)

// TestStartOnHungDisk: a registry starting on a disk that does not answer
// (the read of its key never returns) stops when its context ends, as
// SIGTERM does: Serve, and Listen (ListenContext, which huddle registry
// and huddle up call first), waited in the read for ever, the context
// unwatched, until session 20; and Close released the state directory
// while the key could still be being written. The directory stays locked
// until the read returns; then a registry starts on it. (A running
// registry touches no file: its leases live in memory, its key was read
// at start.)
func TestStartOnHungDisk(t *testing.T) {
	t.Run("serve", func(t *testing.T) { testStartOnHungDisk(t, true) })
	t.Run("listen", func(t *testing.T) { testStartOnHungDisk(t, false) })
}

func testStartOnHungDisk(t *testing.T, serve bool) {
	cfg := Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: peertest.Logger(t)}
	r, err := New(cfg)
	peertest.Must(t, err)
	loading := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	r.loadKey = func(dir string) (*identity.Identity, error) {
		close(loading)
		<-release // the disk answers
		return identity.LoadOrCreate(dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan error, 1)
	if serve {
		go func() { returned <- r.Serve(ctx) }()
	} else {
		go func() { returned <- r.ListenContext(ctx) }() // as huddle serve, registry and up call it
	}
	<-loading
	cancel() // SIGTERM
	err = peertest.OnHungDisk(t, "a registry starting on a hung disk told to stop", func() error { return <-returned }, letGo)
	switch {
	case serve && err != nil:
		t.Errorf("Serve stopped while starting on a hung disk: %v, want nil", err)
	case !serve && !errors.Is(err, ErrClosed):
		t.Errorf("ListenContext stopped while starting on a hung disk: %v, want ErrClosed", err)
	}
	peertest.Must(t, peertest.OnHungDisk(t, "Close after a start on a hung disk", r.Close, letGo))

	// The key may still be being written: no registry may use the
	// directory meanwhile.
	stillLocked(t, cfg, "a hung start holds")
	letGo()
	startsOnceFree(t, cfg, "the disk answered")
}

// stillLocked checks that a registry started on cfg's state directory,
// which what holds still holds, is refused (ErrStateDirInUse).
func stillLocked(t *testing.T, cfg Config, what string) {
	t.Helper()
	second, err := New(cfg)
	peertest.Must(t, err)
	if err := second.Listen(); !errors.Is(err, ErrStateDirInUse) {
		t.Errorf("a registry on the state directory %s: %v, want ErrStateDirInUse", what, err)
	}
	peertest.Must(t, second.Close())
}

// startsOnceFree waits for a registry to start on cfg's state directory
// once what has happened.
func startsOnceFree(t *testing.T, cfg Config, what string) {
	t.Helper()
	peertest.Eventually(t, "a registry started on the directory once "+what, func() bool {
		again, err := New(cfg)
		peertest.Must(t, err)
		err = again.Listen()
		peertest.Must(t, again.Close())
		if err != nil && !errors.Is(err, ErrStateDirInUse) {
			t.Fatalf("a registry on the directory once %s: %v", what, err)
		}
		return err == nil
	})
}

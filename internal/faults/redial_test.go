//go:build unix

package faults

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
)

// TestRegistryHandleRedials keeps one Go Registry handle across a SIGKILL
// and restart of its registry (same address, same key), as a group daemon
// does (issue 15.11). Calls made while the registry is down fail and leave
// the old connection with unacknowledged packets and a backed-off probe
// timer; the restarted registry cannot tell that connection is gone (the
// client's small packets are below the size that draws a QUIC stateless
// reset). A call in flight across the restart must still succeed within its
// own deadline, far below the connection's 30 s idle timeout: the handle
// notices that the server went silent and dials again.
func TestRegistryHandleRedials(t *testing.T) {
	h, before, restart := registryHandle(t)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := h.List(ctx)
		cancel()
		if err == nil {
			t.Fatal("List answered while the registry was down")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkNewEpoch(t, ctx, h, before)
	}()
	restart()
	<-done
}

// registryHandle starts a registry, opens a handle on it and lists once,
// then kills the registry with SIGKILL. restart starts it again on the same
// address with the same state directory.
func registryHandle(t *testing.T) (h *client.Registry, before client.Listing, restart func()) {
	t.Helper()
	regDir := t.TempDir()
	regAddr, fp, reg := startRegistry(t, "127.0.0.1:0", regDir)
	u := newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	h, err := u.cl.Registry(ctx, regAddr, fp)
	if err != nil {
		t.Fatal(err)
	}
	if before, err = h.List(ctx); err != nil {
		t.Fatal(err)
	}
	reg.kill(syscall.SIGKILL)
	return h, before, func() {
		_, fp2, reg2 := startRegistry(t, regAddr, regDir)
		t.Cleanup(func() { reg2.kill(syscall.SIGTERM) })
		if fp2 != fp {
			t.Fatalf("the restarted registry has key %s, was %s", fp2, fp)
		}
	}
}

// checkNewEpoch lists once with ctx and fails unless the restarted
// registry (a new epoch) answered.
func checkNewEpoch(t *testing.T, ctx context.Context, h *client.Registry, before client.Listing) {
	start := time.Now()
	after, err := h.List(ctx)
	if err != nil {
		t.Errorf("List after the registry restarted: %v", err)
		return
	}
	if after.Epoch == before.Epoch {
		t.Errorf("List answered with the old epoch %d: not the restarted registry", after.Epoch)
	}
	t.Logf("List after the restart answered in %v", time.Since(start).Round(time.Millisecond))
}

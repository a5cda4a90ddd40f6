package client_test

import (
	"errors"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// directGroup opens the first group of d by its address and key, without a
// registry.
func directGroup(t *testing.T, c *client.Client, d *groupd.Daemon) *client.Group {
	t.Helper()
	h := d.Groups()[0]
	g, err := c.Group(wire.GroupEntry{Group: h.ID, Name: h.Name, Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestRequestOverTheFrameLimit: a daemon refuses a request frame over its
// limit from the frame's header, stops the rest of it (STOP_SENDING 0x3)
// and answers too_large (PROTOCOL.md §3). A client whose write fails
// because of that STOP_SENDING must still read the answer: the caller
// learns its send was too large, not that the stream broke.
func TestRequestOverTheFrameLimit(t *testing.T) {
	const frameLimit = 8 << 10
	d, _ := startGroups(t, groupd.Config{
		StateDir:        t.TempDir(),
		Groups:          []groupd.Spec{{Name: "lobby"}},
		MaxMessageBytes: 1024,
		Server:          server.Config{MaxRequestBytes: frameLimit},
	})
	c := newClient(t)
	g := directGroup(t, c, d)
	ctx := testCtx(t)
	if _, err := g.Join(ctx, "big", nil); err != nil {
		t.Fatal(err)
	}
	// Small enough to be queued whole, and large enough that the write
	// blocks on the daemon's flow control until STOP_SENDING ends it.
	for _, size := range []int{16 << 10, 512 << 10} {
		_, err := g.SendMessages(ctx, []client.Outgoing{{ID: wire.NewID(), Body: make([]byte, size)}})
		if !errors.Is(err, client.ErrTooLarge) {
			t.Errorf("send of %d bytes over a %d-byte frame limit: %v, want ErrTooLarge", size, frameLimit, err)
		}
	}
	if _, err := g.Send(ctx, []byte("small")); err != nil {
		t.Errorf("a small send after the refusals: %v", err)
	}
}

// TestOperationsQueueAtTheStreamLimit: a client with more operations than
// the daemon's max_streams waits for stream credit (MAX_STREAMS) instead of
// failing them (PROTOCOL.md §3): every one completes.
func TestOperationsQueueAtTheStreamLimit(t *testing.T) {
	const limit, ops = 2, 64
	d, _ := startGroups(t, groupd.Config{
		StateDir: t.TempDir(),
		Groups:   []groupd.Spec{{Name: "lobby"}},
		Server:   server.Config{MaxIncomingStreams: limit},
	})
	g := directGroup(t, newClient(t), d)
	ctx := testCtx(t)
	errs := make(chan error, ops)
	for range ops {
		go func() {
			_, err := g.Info(ctx)
			errs <- err
		}()
	}
	for range ops {
		if err := <-errs; err != nil {
			t.Errorf("info with %d operations on %d streams: %v", ops, limit, err)
		}
	}
}

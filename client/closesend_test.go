package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendInFlightAtClose: a send the daemon has taken and not answered
// when its handle closes ends with ErrClosed and ErrInDoubt (it may be
// stored: retried with its ID on another handle, it tells), whichever way
// it went out: alone, in a batch, or as SendMessages.
func TestSendInFlightAtClose(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noBatching bool
		cell       bool // the group is a cell's, its one member the daemon
		taken      int  // the sends the daemon takes before the handle closes
		send       func(ctx context.Context, g *client.Group) error
	}{
		{"unbatched", true, false, 1, func(ctx context.Context, g *client.Group) error {
			_, err := g.Send(ctx, []byte("hi"))
			return err
		}},
		{"batched", false, false, 1, func(ctx context.Context, g *client.Group) error {
			_, err := g.Send(ctx, []byte("hi"))
			return err
		}},
		{"messages", false, false, 1, func(ctx context.Context, g *client.Group) error {
			_, err := g.SendMessages(ctx, []client.Outgoing{{ID: client.NewID(), Body: []byte("hi")}})
			return err
		}},
		{"in a batch", false, false, 2, sendThree},
		{"cell, unbatched", true, true, 1, func(ctx context.Context, g *client.Group) error {
			_, err := g.Send(ctx, []byte("hi"))
			return err
		}},
		{"cell, in a batch", false, true, 2, sendThree},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taken := make(chan struct{}, 16)
			e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
				if c.Op() != wire.OpSend {
					return &wire.Error{Code: wire.CodeUnsupported}
				}
				var send wire.Send
				if err := c.Decode(&send); err != nil {
					return err
				}
				taken <- struct{}{}
				select { // never answered
				case <-c.Gone():
					return c.Lost()
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if tc.cell {
				e.Replicas = []wire.Replica{{Addr: e.Addrs[0], Fingerprint: e.Fingerprint, Leader: true}}
			}
			cl := newClientWith(t, client.Config{NoBatching: tc.noBatching})
			g, err := cl.Group(e)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			ended := make(chan error, 1)
			go func() { ended <- tc.send(ctx, g) }()
			for range tc.taken {
				select {
				case <-taken:
				case err := <-ended:
					t.Fatalf("the send ended before the daemon took it: %v", err)
				case <-ctx.Done():
					t.Fatal("the daemon never took the send")
				}
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err = <-ended:
			case <-ctx.Done():
				t.Fatal("the send in flight at Close never ended")
			}
			t.Logf("the send in flight: %v", err)
			if !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrInDoubt) {
				t.Errorf("a send in flight as its handle closed: %v, want ErrClosed and ErrInDoubt", err)
			}
		})
	}
}

// sendThree sends three messages at once: the first goes alone, the others,
// queued behind it, as a batch while it waits. It returns an error of
// theirs that is not ErrClosed, if any, else one of theirs.
func sendThree(ctx context.Context, g *client.Group) error {
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := g.Send(ctx, []byte("hi"))
			errs <- err
		}()
	}
	var last error
	for range 3 {
		if err := <-errs; !errors.Is(err, client.ErrClosed) || last == nil {
			last = err
		}
	}
	return last
}

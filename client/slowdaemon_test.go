package client_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendsGivenUpLeaveNothing: a daemon that takes sends and answers none
// (a stalled one; one reading slowly or withholding its acknowledgements
// holds them as long), and callers that give up by cancelling, without a
// deadline. A batch ran until the daemon answered, though every one of its
// callers had gone: each send given up left its batch behind, with its
// stream, its messages and its request frame, one more at every retry,
// for as long as the handle lived. A batch now ends once its last caller
// gives up: the daemon sees every stream of the sends cancelled.
func TestSendsGivenUpLeaveNothing(t *testing.T) {
	var open, seen, msgs atomic.Int64 // send streams open at the daemon, taken, and the messages they carried
	e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpSend {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		var send wire.Send
		if err := c.Decode(&send); err != nil {
			return err
		}
		open.Add(1)
		seen.Add(1)
		msgs.Add(int64(len(send.Messages)))
		defer open.Add(-1)
		select { // never answered
		case <-c.Gone(): // the client cancelled the stream
			return c.Lost()
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	g, err := newClient(t).Group(e)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 20 s (%d send streams open at the daemon, %d taken)", what, open.Load(), seen.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	const rounds, callers = 3, 8
	for round := range rounds {
		before, sent := seen.Load(), msgs.Load()
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				if _, err := g.Send(ctx, []byte("hi")); err == nil {
					t.Error("a send the daemon never answered: acknowledged")
				}
			})
		}
		// The first send of the first round goes out alone, the others
		// queue behind it and go out as a batch after the linger; later
		// rounds' all go out as batches (the batcher is warm).
		waitFor("the sends reach the daemon", func() bool { return msgs.Load()-sent == callers })
		cancel()
		wg.Wait()
		waitFor("every stream of the sends given up cancelled", func() bool { return open.Load() == 0 })
		t.Logf("round %d: %d send streams taken, none left open", round, seen.Load()-before)
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testlog"
)

// newClientWith is newClient with cfg's fields: its batching, and its
// Logger if it has one.
func newClientWith(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Identity = id
	cfg.KnownHosts = identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testlog.Output(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sent is one caller's view of one of its sends.
type sent struct {
	caller, n int
	ack       client.Ack
	err       error
}

// sendConcurrently has callers goroutines send each messages of body(caller, n)
// on g, one after another per caller, and returns every result.
func sendConcurrently(ctx context.Context, g *client.Group, callers, each int, body func(caller, n int) []byte) []sent {
	var mu sync.Mutex
	var out []sent
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for n := range each {
				ack, err := g.Send(ctx, body(c, n))
				mu.Lock()
				out = append(out, sent{c, n, ack, err})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

func TestBatchedSendsGetTheirOwnAcks(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  client.Config
	}{
		{"batched", client.Config{}},
		{"long linger", client.Config{BatchLinger: 20 * time.Millisecond}},
		{"unbatched", client.Config{NoBatching: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, _ := setup(t, groupd.Config{MaxBatch: 8})
			ctx := testCtx(t)
			c := newClientWith(t, tc.cfg)
			g := openGroup(t, c, r.Addr().String(), "lobby")
			if _, err := g.Join(ctx, "many", nil); err != nil {
				t.Fatal(err)
			}
			const callers, each = 24, 15
			results := sendConcurrently(ctx, g, callers, each, func(c, n int) []byte { return fmt.Appendf(nil, "%d/%d", c, n) })

			// Every ack is the message's own: the log holds each caller's
			// body at the seq its ack names, and callers' sends keep their order.
			bySeq := make(map[uint64]string)
			if _, err := g.Fetch(ctx, client.Query{}, func(m client.Message) bool {
				bySeq[m.Seq] = string(m.Body)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if got, want := len(bySeq), callers*each; got != want {
				t.Fatalf("log holds %d messages, want %d", got, want)
			}
			last := make(map[int]uint64)
			slices.SortFunc(results, func(a, b sent) int { return a.n - b.n })
			for _, s := range results {
				if s.err != nil {
					t.Fatalf("caller %d send %d: %v", s.caller, s.n, s.err)
				}
				if got, want := bySeq[s.ack.Seq], fmt.Sprintf("%d/%d", s.caller, s.n); got != want {
					t.Errorf("caller %d send %d: ack seq %d holds %q, want %q", s.caller, s.n, s.ack.Seq, got, want)
				}
				if s.ack.Seq <= last[s.caller] {
					t.Errorf("caller %d send %d: seq %d after %d", s.caller, s.n, s.ack.Seq, last[s.caller])
				}
				last[s.caller] = s.ack.Seq
			}
		})
	}
}

func TestBatchedSendErrorsArePerCaller(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{MaxMessageBytes: 100})
	ctx := testCtx(t)
	c := newClientWith(t, client.Config{BatchLinger: 5 * time.Millisecond})
	g := openGroup(t, c, r.Addr().String(), "lobby")

	// Not a member: every caller is told so.
	for _, s := range sendConcurrently(ctx, g, 8, 2, func(int, int) []byte { return []byte("x") }) {
		if !errors.Is(s.err, client.ErrNotMember) {
			t.Fatalf("send before joining: err = %v, want ErrNotMember", s.err)
		}
	}
	if _, err := g.Join(ctx, "mixed", nil); err != nil {
		t.Fatal(err)
	}
	// Odd callers send too much: only they fail, in batches or not.
	results := sendConcurrently(ctx, g, 16, 6, func(c, n int) []byte {
		if c%2 == 1 {
			return make([]byte, 101)
		}
		return fmt.Appendf(nil, "%d/%d", c, n)
	})
	ok := 0
	for _, s := range results {
		switch {
		case s.caller%2 == 1 && !errors.Is(s.err, client.ErrTooLarge):
			t.Errorf("caller %d send %d of 101 bytes: err = %v, want ErrTooLarge", s.caller, s.n, s.err)
		case s.caller%2 == 0 && s.err != nil:
			t.Errorf("caller %d send %d: %v", s.caller, s.n, s.err)
		case s.err == nil:
			ok++
		}
	}
	info, err := g.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Last, uint64(ok); got != want {
		t.Errorf("log holds %d messages, want the %d acknowledged", got, want)
	}
}

func TestBatchedSendCancelledCallerWithdraws(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{})
	ctx := testCtx(t)
	// A long linger keeps the second wave queued behind the first.
	c := newClientWith(t, client.Config{BatchLinger: time.Hour})
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "quitter", nil); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.Send(gone, []byte("never")); !errors.Is(err, context.Canceled) {
		t.Fatalf("send with a cancelled context: err = %v, want context.Canceled", err)
	}
	results := sendConcurrently(ctx, g, 10, 3, func(c, n int) []byte { return []byte("kept") })
	for _, s := range results {
		if s.err != nil {
			t.Fatal(s.err)
		}
	}
	info, err := g.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Last, uint64(30); got != want {
		t.Errorf("log holds %d messages, want %d", got, want)
	}
}

func TestBatchedSendAfterClose(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{})
	ctx := testCtx(t)
	c := newClientWith(t, client.Config{})
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "closer", nil); err != nil {
		t.Fatal(err)
	}
	// Close while sends are in flight and queued: each caller gets an
	// answer (its ack, or an error), and Close waits for the batcher. It
	// closes once every caller has had an answer, so that all of them are
	// sending (it slept 20 ms, which a loaded machine may spend before any
	// send went out).
	const callers = 16
	var wg, acked sync.WaitGroup
	acked.Add(callers)
	for range callers {
		wg.Go(func() {
			answered := sync.OnceFunc(acked.Done)
			defer answered()
			for ctx.Err() == nil {
				_, err := g.Send(ctx, []byte("busy"))
				answered()
				if err != nil {
					return
				}
			}
		})
	}
	acked.Wait()
	c.Close()
	wg.Wait()
	if _, err := g.Send(ctx, []byte("late")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send after Close: err = %v, want ErrClosed", err)
	}
}

// Requests are queued whole when QUIC flow control allows and written as a
// stream otherwise: many concurrent sends of nearly a stream window each,
// more than the connection's window together, all arrive, batched into
// frames beyond what is queued whole or one per operation.
func TestSendsBeyondTheFlowControlWindow(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  client.Config
	}{
		{"batched", client.Config{}},
		{"unbatched", client.Config{NoBatching: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, _ := setup(t, groupd.Config{SendRate: -1})
			ctx := testCtx(t)
			c := newClientWith(t, tc.cfg)
			g := openGroup(t, c, r.Addr().String(), "lobby")
			if _, err := g.Join(ctx, "bulk", nil); err != nil {
				t.Fatal(err)
			}
			const callers, each, size = 24, 2, 60 << 10 // 2.8 MiB against a 512 KiB window
			body := func(c, n int) []byte {
				b := make([]byte, size)
				copy(b, fmt.Appendf(nil, "%d/%d", c, n))
				return b
			}
			for _, s := range sendConcurrently(ctx, g, callers, each, body) {
				if s.err != nil {
					t.Fatalf("caller %d send %d: %v", s.caller, s.n, s.err)
				}
			}
			n := 0
			if _, err := g.Fetch(ctx, client.Query{}, func(m client.Message) bool {
				if len(m.Body) != size {
					t.Fatalf("message %d has %d bytes, want %d", m.Seq, len(m.Body), size)
				}
				n++
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if n != callers*each {
				t.Fatalf("log holds %d messages, want %d", n, callers*each)
			}
		})
	}
}

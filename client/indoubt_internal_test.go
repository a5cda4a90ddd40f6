package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// playedDaemon listens as a group daemon played by hand: answer is given
// each stream whose request it read, with its connection, the request's
// operation and its arguments. It returns a handle on group 7 there.
func playedDaemon(t *testing.T, cfg Config, answer func(conn *quic.Conn, st *quic.Stream, op wire.Op, args wire.Frame)) (*Group, *quic.Listener) {
	t.Helper()
	srv, tr, ln := rawServer(t, &quic.Config{})
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { tr.Close() })
	serveStreams(&wg, ln, func(conn *quic.Conn, st *quic.Stream, _ uint64) {
		item, err := wire.ReadFrame(st, nil, 0)
		if err != nil {
			return
		}
		if op, args, err := wire.SplitRequest(item); err == nil {
			answer(conn, st, op, args)
		}
	})
	cl := newTestClient(t, cfg)
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{ln.Addr().String()}, Fingerprint: srv.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, ln
}

// TestSendCutByShutdownInDoubt: a send whose request the daemon read and
// left unanswered when it closed the connection as it stopped (code 0x2:
// past its grace period, or its answer overtaken by the close) fails
// ErrShuttingDown and ErrInDoubt: the daemon may have stored it. It was
// ErrShuttingDown alone, which huddle send reported "not sent" (exit 1):
// a script resending under new IDs stored it twice. A call the client
// does not make, the server having stopped a moment ago, is not in doubt.
func TestSendCutByShutdownInDoubt(t *testing.T) {
	g, _ := playedDaemon(t, Config{NoBatching: true}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, _ wire.Frame) {
		conn.CloseWithError(wire.ConnShutdown, "server shutting down")
	})
	// The client's clock stands still: the second send below comes within
	// shutdownWait of the close however long the machine takes to run it.
	now := time.Now()
	g.cl.now = func() time.Time { return now }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := g.Send(ctx, []byte("hi"))
	if !errors.Is(err, ErrShuttingDown) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send the daemon read, then closed the connection as it stopped: %v, want %v and %v", err, ErrShuttingDown, ErrInDoubt)
	}
	// Within shutdownWait of the close, no call is made: nothing went out.
	_, err = g.Send(ctx, []byte("hi"))
	if !errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send not made, its daemon stopping: %v, want %v, not in doubt", err, ErrShuttingDown)
	}
}

// TestSendRefusedNotInDoubt: a send the daemon refused (an Error frame)
// is not in doubt, nor is one whose daemon could not be reached: nothing
// of it was stored.
func TestSendRefusedNotInDoubt(t *testing.T) {
	g, _ := playedDaemon(t, Config{NoBatching: true}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, _ wire.Frame) {
		wire.WriteError(st, &wire.Error{Code: wire.CodeNotMember, Message: "not a member"})
		st.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := g.Send(ctx, []byte("hi"))
	if !errors.Is(err, ErrNotMember) || errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send refused: %v, want %v, not in doubt", err, ErrNotMember)
	}
	cl := newTestClient(t, Config{NoBatching: true, DialTimeout: 200 * time.Millisecond})
	defer cl.Close()
	nowhere, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{"127.0.0.1:1"}, Fingerprint: wire.Fingerprint{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer nowhere.Close()
	_, err = nowhere.Send(ctx, []byte("hi"))
	if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send to a daemon not there: %v, want %v, not in doubt", err, ErrUnreachable)
	}
}

// TestSendCancelledInDoubt: a send whose caller gives up once the daemon
// has its request fails with the context's error and ErrInDoubt, alone or
// in a batch in flight; batched, it failed with the context's error alone,
// the same error as a message withdrawn from the queue, unsent.
func TestSendCancelledInDoubt(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noBatching bool
		sends      int // the first goes alone, the next as a batch behind it
	}{{"unbatched", true, 1}, {"batched", false, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			taken := make(chan struct{}, 2)
			g, _ := playedDaemon(t, Config{NoBatching: tc.noBatching}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, _ wire.Frame) {
				if op != wire.OpSend {
					// The batcher's info (its limits): refused, batches
					// keep the protocol's default.
					wire.WriteError(st, &wire.Error{Code: wire.CodeUnsupported})
					st.Close()
					return
				}
				taken <- struct{}{}
				io.Copy(io.Discard, st) // never answered, until the caller cancels
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ended := make(chan error, tc.sends)
			for range tc.sends {
				go func() {
					_, err := g.Send(ctx, []byte("hi"))
					ended <- err
				}()
				select {
				case <-taken:
				case err := <-ended:
					t.Fatalf("the send ended before the daemon took it: %v", err)
				}
			}
			cancel()
			for range tc.sends {
				if err := <-ended; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrInDoubt) {
					t.Errorf("a send cancelled once the daemon had it: %v, want %v and %v", err, context.Canceled, ErrInDoubt)
				}
			}
		})
	}
}

// TestCellSendInDoubtStaysInDoubt: a send to a cell whose first attempt
// went unanswered (the leader took its request; stored or not, unknown),
// and which then ends on a member's refusal (no leader), fails in doubt:
// the refusal says nothing of the first attempt. The call's error was the
// last attempt's alone, a refusal, reported "not sent".
func TestCellSendInDoubtStaysInDoubt(t *testing.T) {
	refuse := func(st *quic.Stream) {
		// No leader: asked again after a wait that outlasts the call.
		// Marked unchanged, as a member that does not lead marks it: the
		// refusal alone would not be in doubt.
		wire.WriteError(st, &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 60000, Message: "no leader", Unchanged: true})
		st.Close()
	}
	srvA, trA, lnA := rawServer(t, &quic.Config{})
	srvB, trB, lnB := rawServer(t, &quic.Config{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer trA.Close()
	defer trB.Close()
	serveMember(&wg, lnA, func(st *quic.Stream, seq uint64) {
		if seq == 1 {
			<-st.Context().Done() // taken, never answered: the attempt gives up
			return
		}
		refuse(st)
	})
	serveMember(&wg, lnB, func(st *quic.Stream, seq uint64) { refuse(st) })
	cl := newTestClient(t, Config{NoBatching: true})
	defer cl.Close()
	g := cellOfTwo(t, cl, srvA, lnA, srvB, lnB)
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect(ctx, t, g)
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	_, err := g.Send(sctx, []byte("hi"))
	if !errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send to a cell, its first attempt unanswered, then refused: %v, want %v", err, ErrInDoubt)
	}
	t.Logf("the send: %v", err)
}

// TestSendRefusalInDoubtUnlessUnchanged: a send refused unavailable or
// internal may have been stored (a write the daemon could not make
// durable, a cell that could not decide it, a handler that failed), and
// is in doubt, unless the refusal says it changed nothing (key 7,
// Unchanged); a refusal whose code says nothing was done (not_member,
// too_large, rate_limited...) is not in doubt. Every refusal was taken as
// final, and huddle send reported a send whose fsync failed "not sent".
func TestSendRefusalInDoubtUnlessUnchanged(t *testing.T) {
	for _, tc := range []struct {
		refusal *wire.Error
		doubt   bool
	}{
		{&wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Message: "could not make the messages durable"}, true},
		{&wire.Error{Code: wire.CodeInternal}, true},
		{&wire.Error{Code: 4242, Message: "a newer daemon's code"}, true},
		{&wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Message: "nothing was stored", Unchanged: true}, false},
		{&wire.Error{Code: wire.CodeRateLimited, RetryAfterMS: 1000}, false},
		{&wire.Error{Code: wire.CodeTooLarge}, false},
		{&wire.Error{Code: wire.CodeBadRequest}, false},
	} {
		g, _ := playedDaemon(t, Config{NoBatching: true}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, _ wire.Frame) {
			wire.WriteError(st, tc.refusal)
			st.Close()
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := g.Send(ctx, []byte("hi"))
		cancel()
		var we *Error
		if !errors.As(err, &we) || we.Code != tc.refusal.Code {
			t.Errorf("a send refused %+v: %v, want that refusal", tc.refusal, err)
		}
		if got := errors.Is(err, ErrInDoubt); got != tc.doubt {
			t.Errorf("a send refused %+v: %v, in doubt %v, want %v", tc.refusal, err, got, tc.doubt)
		}
	}
}

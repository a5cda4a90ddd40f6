package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// endsAfterLoss is a call's context whose deadline passes just after its
// call's stream failed with the connection lost: its Err is its parent's
// until the test closed live's connection (lost) and the stream has let go
// of it (no call waits on live any more), then DeadlineExceeded. So the
// stream reads the connection's end with the context live, and the call,
// looking next, finds the context ended: the race of huddle send's
// --timeout (1.5 s) and the liveness watch's silence bound (silentAfter,
// 1.5 s) on a frozen daemon. (Not the connection's own end: quic-go fails
// its streams a moment before it ends the connection's context.)
type endsAfterLoss struct {
	context.Context
	live *liveness
	lost *atomic.Bool
}

func (c endsAfterLoss) Err() error {
	if c.lost.Load() {
		c.live.mu.Lock()
		waiting := c.live.waiting
		c.live.mu.Unlock()
		if waiting == 0 {
			return context.DeadlineExceeded
		}
	}
	return c.Context.Err()
}

// lostUnderRequest returns a handle on a group whose daemon (played by
// hand) answers no request, connected, with the connection's liveness: the
// client closes the connection for the daemon's silence (as liveness.look
// does) once the daemon has read the first request, after setting lost.
// ctx bounds the test's calls.
func lostUnderRequest(t *testing.T) (ctx context.Context, g *Group, daemon *identity.Identity, live *liveness, lost *atomic.Bool) {
	t.Helper()
	srv, tr, ln := rawServer(t, &quic.Config{})
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { tr.Close() })
	asked := make(chan struct{}, 1)
	serveMember(&wg, ln, func(st *quic.Stream, seq uint64) {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-st.Context().Done() // answers nothing, and leaves the stream open until the connection ends
	})
	cl := newTestClient(t, Config{NoBatching: true})
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{ln.Addr().String()}, Fingerprint: srv.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	closed := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-closed
	})
	live, err = g.peer().get(ctx)
	if err != nil {
		close(closed)
		t.Fatalf("handshake with the group's daemon: %v", err)
	}
	lost = new(atomic.Bool)
	go func() {
		defer close(closed)
		select {
		case <-asked:
			lost.Store(true)
			live.conn.CloseWithError(0, "server silent")
		case <-ctx.Done():
		}
	}()
	return ctx, g, srv, live, lost
}

// TestConnLostAsDeadlinePassesUnreachable: a send whose connection the
// client closes for the server's silence (the liveness watch: "server
// silent") just before the send's deadline passes fails ErrUnreachable:
// its request reached the server, its outcome is unknown. It failed with
// the connection's bare error, which huddle send took for a refusal: it
// exited 1 and told the line in doubt "not sent" (resent from there under
// new IDs, it could be stored twice), not 3 with the line's ID to retry
// with (e2e TestSendLinesOutcomeUnknown, under load).
func TestConnLostAsDeadlinePassesUnreachable(t *testing.T) {
	ctx, g, _, live, lost := lostUnderRequest(t)
	_, err := g.SendMessages(endsAfterLoss{ctx, live, lost}, []Outgoing{{ID: NewID(), Body: []byte("hi")}})
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send whose connection was closed for silence as its deadline passed: %v, want %v and %v", err, ErrUnreachable, ErrInDoubt)
	}
	if !errors.As(err, new(*quic.ApplicationError)) {
		t.Errorf("%v: want the connection's close named", err)
	}
}

// TestRedialFailsAfterLossUnreachable: a call whose connection was lost
// under its request (closed for the server's silence), its context still
// live, and whose second attempt could not connect for another reason than
// reachability (another key answered where the daemon was listed: a daemon
// killed, its address taken) fails ErrUnreachable, the key's error kept:
// the first request may have been stored, its outcome is unknown. The
// redial's error came back bare, and huddle send told a line in doubt
// "not sent".
func TestRedialFailsAfterLossUnreachable(t *testing.T) {
	ctx, g, daemon, _, _ := lostUnderRequest(t)
	other := &identity.MismatchError{Want: daemon.Fingerprint(), Got: wire.Fingerprint{1}}
	redials := 0
	next := func(context.Context) (*peer, error) {
		redials++
		return nil, other
	}
	var sent wire.Sent
	err := g.peer().singleThen(ctx, wire.OpSend, wire.Send{Group: g.id, Messages: []wire.Outgoing{{ID: NewID(), Body: []byte("hi")}}}, &sent, next)
	if redials != 1 {
		t.Fatalf("the call's connection lost: %d redials, want 1 (err %v)", redials, err)
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("a send whose connection was lost and whose redial met another key: %v, want %v and %v", err, ErrUnreachable, ErrInDoubt)
	}
	if !errors.As(err, new(*identity.MismatchError)) || !errors.As(err, new(*quic.ApplicationError)) {
		t.Errorf("%v: want the lost connection's error and the redial's both kept", err)
	}
}

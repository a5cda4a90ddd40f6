package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// TestSendAfterNamesWhereTheLogStood: a send of a message an earlier send
// on the handle left in doubt names where the handle had seen the log
// stand before that first send (after, after_epoch: PROTOCOL.md §8.5), a
// fresh message's send names nothing, and SendMessagesAfter names the
// caller's position. A retry refused window_passed fails ErrWindowPassed
// and ErrInDoubt (the first send's copy may exist), and is not answered
// "not sent". Before session 21 a retry named nothing, and a daemon past
// its dedup window stored a second copy.
func TestSendAfterNamesWhereTheLogStood(t *testing.T) {
	type asked struct {
		op   wire.Op
		send wire.Send
	}
	var mu sync.Mutex
	var seen []asked
	answers := []func(st *quic.Stream){
		func(st *quic.Stream) { wire.WriteResponse(st, wire.KindResult, wire.Joined{Epoch: 9, Last: 40}) },
		// The first send: in doubt (internal, not marked unchanged).
		func(st *quic.Stream) { wire.WriteError(st, &wire.Error{Code: wire.CodeInternal}) },
		func(st *quic.Stream) {
			wire.WriteError(st, &wire.Error{Code: wire.CodeWindowPassed, Unchanged: true, Message: "past the window"})
		},
		func(st *quic.Stream) {
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 9, Acks: []wire.Ack{{Seq: 70, Time: 1}}})
		},
		func(st *quic.Stream) {
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 9, Acks: []wire.Ack{{Seq: 71, Time: 2}}})
		},
	}
	srv, tr, ln := rawServer(t, &quic.Config{})
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { tr.Close() })
	serveStreams(&wg, ln, func(conn *quic.Conn, st *quic.Stream, _ uint64) {
		item, err := wire.ReadFrame(st, nil, 0)
		if err != nil {
			return
		}
		op, args, err := wire.SplitRequest(item)
		if err != nil {
			return
		}
		var a asked
		a.op = op
		if op == wire.OpSend {
			args.Decode(&a.send)
		}
		mu.Lock()
		i := len(seen)
		seen = append(seen, a)
		mu.Unlock()
		if i < len(answers) {
			answers[i](st)
		}
		st.Close()
	})
	cl := newTestClient(t, Config{NoBatching: true})
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{ln.Addr().String()}, Fingerprint: srv.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last := func() wire.Send {
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1].send
	}

	if _, err := g.Join(ctx, "ann", nil); err != nil {
		t.Fatal(err)
	}
	id := wire.NewID()
	if _, err := g.SendWithID(ctx, id, []byte("hi")); !errors.Is(err, ErrInDoubt) {
		t.Fatalf("the first send: %v, want it in doubt", err)
	}
	if s := last(); s.After != 0 || s.AfterEpoch != 0 {
		t.Errorf("the first send named after %d in epoch %d, want nothing", s.After, s.AfterEpoch)
	}
	_, err = g.SendWithID(ctx, id, []byte("hi"))
	if s := last(); s.After != 40 || s.AfterEpoch != 9 {
		t.Errorf("the retry named after %d in epoch %d, want 40 in 9 (the join's last, before the first send)", s.After, s.AfterEpoch)
	}
	if !errors.Is(err, ErrWindowPassed) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("the retry refused window_passed: %v, want %v and %v", err, ErrWindowPassed, ErrInDoubt)
	}
	if _, err := g.Send(ctx, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if s := last(); s.After != 0 || s.AfterEpoch != 0 {
		t.Errorf("a fresh message's send named after %d in epoch %d, want nothing", s.After, s.AfterEpoch)
	}
	if _, err := g.SendMessagesAfter(ctx, []Outgoing{{ID: wire.NewID(), Body: []byte("from a page")}}, Position{Epoch: 9, Seq: 12}); err != nil {
		t.Fatal(err)
	}
	if s := last(); s.After != 12 || s.AfterEpoch != 9 {
		t.Errorf("SendMessagesAfter named after %d in epoch %d, want 12 in 9", s.After, s.AfterEpoch)
	}
}

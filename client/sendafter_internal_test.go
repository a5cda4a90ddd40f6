package client

import (
	"context"
	"errors"
	"slices"
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
	t.Run("unbatched", func(t *testing.T) { sendAfterNames(t, Config{NoBatching: true}) })
	// A retry naming after goes alone, past the batcher (SendWithID).
	t.Run("batched", func(t *testing.T) { sendAfterNames(t, Config{}) })
}

func sendAfterNames(t *testing.T, cfg Config) {
	doubted, fresh, paged := wire.NewID(), wire.NewID(), wire.NewID()
	var sends playedSends
	// The daemon, played: doubted's sends are in doubt (internal, not
	// marked unchanged) until one names after, refused window_passed;
	// the others are stored.
	g, _ := playedDaemon(t, cfg, func(_ *quic.Conn, st *quic.Stream, op wire.Op, args wire.Frame) {
		defer st.Close()
		s, n, ok := sends.take(st, op, args)
		if !ok {
			return
		}
		switch {
		case s.Messages[0].ID != doubted:
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 9, Acks: []wire.Ack{{Seq: 60 + n, Time: int64(n)}}})
		case s.AfterEpoch == 0:
			wire.WriteError(st, &wire.Error{Code: wire.CodeInternal})
		default:
			wire.WriteError(st, &wire.Error{Code: wire.CodeWindowPassed, Unchanged: true, Message: "past the window"})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	named := func(id wire.ID) (first wire.Send, retries []wire.Send) {
		for _, s := range sends.all() {
			if s.Messages[0].ID == id {
				retries = append(retries, s)
			}
		}
		if len(retries) == 0 {
			t.Fatalf("no send of %v", id)
		}
		return retries[0], retries[1:]
	}

	if _, err := g.Join(ctx, "ann", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.SendWithID(ctx, doubted, []byte("hi")); !errors.Is(err, ErrInDoubt) {
		t.Fatalf("the first send: %v, want it in doubt", err)
	}
	_, err := g.SendWithID(ctx, doubted, []byte("hi"))
	if !errors.Is(err, ErrWindowPassed) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("the retry refused window_passed: %v, want %v and %v", err, ErrWindowPassed, ErrInDoubt)
	}
	first, retries := named(doubted)
	if first.After != 0 || first.AfterEpoch != 0 {
		t.Errorf("the first send named after %d in epoch %d, want nothing", first.After, first.AfterEpoch)
	}
	for _, s := range retries {
		if s.After != 40 || s.AfterEpoch != 9 {
			t.Errorf("a retry named after %d in epoch %d, want 40 in 9 (the join's last, before the first send)", s.After, s.AfterEpoch)
		}
	}
	if _, err := g.SendWithID(ctx, fresh, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if s, _ := named(fresh); s.After != 0 || s.AfterEpoch != 0 {
		t.Errorf("a fresh message's send named after %d in epoch %d, want nothing", s.After, s.AfterEpoch)
	}
	if _, err := g.SendMessagesAfter(ctx, []Outgoing{{ID: paged, Body: []byte("from a page")}}, Position{Epoch: 9, Seq: 12}); err != nil {
		t.Fatal(err)
	}
	if s, _ := named(paged); s.After != 12 || s.AfterEpoch != 9 {
		t.Errorf("SendMessagesAfter named after %d in epoch %d, want 12 in 9", s.After, s.AfterEpoch)
	}
}

// TestCellRetryInDoubtNamesAfter: a send to a cell whose first attempt
// leaves it in doubt (a leader's refusal not marked unchanged: it may have
// stored it) is retried by the call itself (memberCall, within
// cellDoubtFor), and that retry names where the handle had seen the log
// stand before the first attempt, as a later send of the message would.
// Until session 21 the call's own retries named nothing (only the
// handle's later sends did), and a cell whose dedup window passed between
// the two attempts stored a second copy. Once acknowledged, the message
// is settled: sent again, it names nothing.
func TestCellRetryInDoubtNamesAfter(t *testing.T) {
	id := wire.NewID()
	var sends playedSends
	// Both members, played: the first send is refused unavailable, not
	// unchanged (a leader that lost its leadership with the entry
	// appended), and every later one is acknowledged.
	answer := func(st *quic.Stream) {
		defer st.Close()
		item, err := wire.ReadFrame(st, nil, 0)
		if err != nil {
			return
		}
		op, args, err := wire.SplitRequest(item)
		if err != nil {
			return
		}
		_, n, ok := sends.take(st, op, args)
		if !ok {
			return
		}
		if n == 1 {
			wire.WriteError(st, &wire.Error{Code: wire.CodeUnavailable, Message: "lost the leadership"})
			return
		}
		wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 9, Acks: []wire.Ack{{Seq: 41, Time: 1, Duplicate: n > 2}}})
	}
	srvA, trA, lnA := rawServer(t, &quic.Config{})
	srvB, trB, lnB := rawServer(t, &quic.Config{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer trA.Close()
	defer trB.Close()
	for _, ln := range []*quic.Listener{lnA, lnB} {
		serveStreams(&wg, ln, func(_ *quic.Conn, st *quic.Stream, _ uint64) { answer(st) })
	}
	cl := newTestClient(t, Config{})
	defer cl.Close()
	g := cellOfTwo(t, cl, srvA, lnA, srvB, lnB)
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.Join(ctx, "ann", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.SendWithID(ctx, id, []byte("hi")); err != nil {
		t.Fatalf("the send, retried by its call once in doubt: %v, want it acknowledged", err)
	}
	if _, err := g.SendWithID(ctx, id, []byte("again")); err != nil {
		t.Fatal(err)
	}
	// Told apart by body, not by order: under load an attempt that timed
	// out may be read by its member after the call moved on, and be
	// recorded late (each retry, however many, must name after).
	got := sends.all()
	var tries []wire.Send
	for _, s := range got {
		switch string(s.Messages[0].Body) {
		case "hi":
			tries = append(tries, s)
		case "again":
			if s.After != 0 || s.AfterEpoch != 0 {
				t.Errorf("a send of the message once acknowledged named after %d in epoch %d, want nothing (settled)", s.After, s.AfterEpoch)
			}
		}
	}
	if len(tries) < 2 {
		t.Fatalf("%d tries of the send, want the first and the call's own retry", len(tries))
	}
	if tries[0].After != 0 || tries[0].AfterEpoch != 0 {
		t.Errorf("the first try named after %d in epoch %d, want nothing", tries[0].After, tries[0].AfterEpoch)
	}
	for _, s := range tries[1:] {
		if s.After != 40 || s.AfterEpoch != 9 {
			t.Errorf("the call's retry named after %d in epoch %d, want 40 in 9 (the join's last, before the first try)", s.After, s.AfterEpoch)
		}
	}
}

// TestLoneRetryInDoubtNamesAfter: a send to a group of one daemon whose
// connection is lost under it (the daemon had read the request: stored
// or not, unknown) is tried once more on a new connection by the call
// itself, and that retry names where the handle had seen the log stand
// before the first try, as the retries of a cell's send do: a daemon
// whose dedup window passed meanwhile refuses it window_passed, and the
// send fails ErrWindowPassed and ErrInDoubt, not stored a second time.
// Until session 22 that retry named nothing, and was stored.
func TestLoneRetryInDoubtNamesAfter(t *testing.T) {
	var sends playedSends
	// The daemon, played: the first send's connection is closed once
	// its request is read (a daemon killed); the retry is refused
	// window_passed if it names after, and stored if not.
	g, _ := playedDaemon(t, Config{NoBatching: true}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, args wire.Frame) {
		defer st.Close()
		s, n, ok := sends.take(st, op, args)
		if !ok {
			return
		}
		switch {
		case n == 1:
			conn.CloseWithError(wire.ConnNoError, "")
		case s.AfterEpoch == 0:
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 9, Acks: []wire.Ack{{Seq: 41, Time: 1}}})
		default:
			wire.WriteError(st, &wire.Error{Code: wire.CodeWindowPassed, Unchanged: true, Message: "past the window"})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.Join(ctx, "ann", nil); err != nil {
		t.Fatal(err)
	}
	_, err := g.Send(ctx, []byte("hi"))
	if !errors.Is(err, ErrWindowPassed) || !errors.Is(err, ErrInDoubt) {
		t.Fatalf("the send, its connection lost under it, retried on a new one: %v, want %v and %v", err, ErrWindowPassed, ErrInDoubt)
	}
	got := sends.all()
	if len(got) != 2 {
		t.Fatalf("%d tries of the send, want the first and the call's retry on a new connection", len(got))
	}
	if got[0].After != 0 || got[0].AfterEpoch != 0 {
		t.Errorf("the first try named after %d in epoch %d, want nothing", got[0].After, got[0].AfterEpoch)
	}
	if got[1].After != 40 || got[1].AfterEpoch != 9 {
		t.Errorf("the retry named after %d in epoch %d, want 40 in 9 (the join's last, before the first try)", got[1].After, got[1].AfterEpoch)
	}
}

// playedSends records the sends a played daemon of these tests is asked
// for. Its daemon has joined its caller at 40 in epoch 9.
type playedSends struct {
	mu    sync.Mutex
	sends []wire.Send
}

// take answers a join (joined at 40 in epoch 9), refuses bad_request a
// request that is not a send of one message, and records a send: it
// returns it and how many are recorded with it, ok false when it has
// answered.
func (p *playedSends) take(st *quic.Stream, op wire.Op, args wire.Frame) (s wire.Send, n uint64, ok bool) {
	if op == wire.OpJoin {
		wire.WriteResponse(st, wire.KindResult, wire.Joined{Epoch: 9, Last: 40})
		return s, 0, false
	}
	if args.Decode(&s) != nil || len(s.Messages) != 1 {
		wire.WriteError(st, &wire.Error{Code: wire.CodeBadRequest})
		return s, 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sends = append(p.sends, s)
	return s, uint64(len(p.sends)), true
}

// all is every send recorded so far, in the order they came.
func (p *playedSends) all() []wire.Send {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sends)
}

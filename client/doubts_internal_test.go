package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// TestRetryOfSendInDoubtStaysInDoubt: a message whose send ended in doubt
// stays in doubt on its handle until a send of it is acknowledged: its
// retry, refused (not_member, unavailable marked unchanged: this request
// stored nothing), fails in doubt, as the first send may have stored it.
// The retry's refusal was its whole error (session 19 until H's fix), and
// huddle chat, huddle web's page and a program retrying as README says
// reported "not sent" of a message the daemon may have stored (the page
// then offered to send it again under a new ID). A message acknowledged
// since, and one never in doubt, are refused plainly.
func TestRetryOfSendInDoubtStaysInDoubt(t *testing.T) {
	refusals := []*wire.Error{
		{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Message: "could not make the messages durable; they may be stored"},
		{Code: wire.CodeNotMember, Message: "not a member"},
		{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Message: "nothing was stored", Unchanged: true},
		{Code: wire.CodeNotMember, Message: "not a member"},
		nil, // acknowledged, a duplicate
		{Code: wire.CodeNotMember, Message: "not a member"},
	}
	var calls atomic.Int64
	g, _ := playedDaemon(t, Config{NoBatching: true}, func(conn *quic.Conn, st *quic.Stream, op wire.Op, _ wire.Frame) {
		r := refusals[min(int(calls.Add(1))-1, len(refusals)-1)]
		if r == nil {
			wire.WriteResponse(st, wire.KindResult, wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: time.Now().UnixNano(), Duplicate: true}}})
		} else {
			wire.WriteError(st, r)
		}
		st.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := NewID()
	steps := []struct {
		what  string
		send  func() error
		doubt bool
	}{
		{"the send not made durable", func() error { _, err := g.SendWithID(ctx, id, []byte("hi")); return err }, true},
		{"its retry, refused not_member", func() error { _, err := g.SendWithID(ctx, id, []byte("hi")); return err }, true},
		{"its retry as SendMessages, refused unchanged", func() error {
			_, err := g.SendMessages(ctx, []Outgoing{{ID: id, Body: []byte("hi")}})
			return err
		}, true},
		{"another message, never in doubt, refused not_member", func() error { _, err := g.Send(ctx, []byte("other")); return err }, false},
		{"its retry, acknowledged", func() error { _, err := g.SendWithID(ctx, id, []byte("hi")); return err }, false},
		{"a send of it again, refused not_member", func() error { _, err := g.SendWithID(ctx, id, []byte("hi")); return err }, false},
	}
	for i, s := range steps {
		err := s.send()
		if i == 4 {
			if err != nil {
				t.Fatalf("%s: %v", s.what, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("%s: no error", s.what)
		}
		if got := errors.Is(err, ErrInDoubt); got != s.doubt {
			t.Errorf("%s: %v, in doubt %v, want %v", s.what, err, got, s.doubt)
		}
	}
}

// TestDoubtsBounded: a handle remembers at most maxDoubts messages in
// doubt, forgetting the oldest first.
func TestDoubtsBounded(t *testing.T) {
	var d doubts
	ids := make([]wire.Outgoing, maxDoubts+1)
	for i := range ids {
		ids[i] = wire.Outgoing{ID: wire.NewID()}
		d.outcome(ids[i:i+1], inDoubt(context.Canceled))
	}
	if len(d.ids) != maxDoubts {
		t.Fatalf("%d IDs remembered, want %d", len(d.ids), maxDoubts)
	}
	refused := &wire.Error{Code: wire.CodeNotMember}
	if err := d.outcome(ids[:1], refused); errors.Is(err, ErrInDoubt) {
		t.Errorf("the oldest, forgotten: %v, want not in doubt", err)
	}
	if err := d.outcome(ids[maxDoubts:], refused); !errors.Is(err, ErrInDoubt) {
		t.Errorf("the newest: %v, want in doubt", err)
	}
}

// TestSendCancelledBeforeItWentOutNotInDoubt: a send whose caller gives up
// while its connection is still being made (the daemon's address swallows
// every packet) sent nothing: it fails with the context's error, not in
// doubt, alone or batched, and so does one withdrawn from the batcher's
// queue behind it.
func TestSendCancelledBeforeItWentOutNotInDoubt(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	for _, noBatching := range []bool{true, false} {
		cl := newTestClient(t, Config{NoBatching: noBatching, DialTimeout: time.Minute})
		g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{hole.LocalAddr().String()}, Fingerprint: wire.Fingerprint{1}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ended := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := g.Send(ctx, []byte("hi"))
				ended <- err
			}()
		}
		time.AfterFunc(200*time.Millisecond, cancel) // while dialling: no packet comes back
		for range 2 {
			if err := <-ended; !errors.Is(err, context.Canceled) || errors.Is(err, ErrInDoubt) {
				t.Errorf("batching %v: a send cancelled while its connection was being made: %v, want %v, not in doubt", !noBatching, err, context.Canceled)
			}
		}
		g.Close()
		cl.Close()
	}
}

package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellAttemptGivesUpOnHandshake: an attempt at a cell's member that
// must dial it, where nothing answers (a leader killed, which its
// followers still name), gives up once cellDialFor passes without a
// handshake, however long the attempt may take, and says so
// (errNoHandshake, ErrUnreachable): the client then asks another member,
// not waiting out the attempt or the dial timeout.
func TestCellAttemptGivesUpOnHandshake(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := New(Config{Identity: id, DialTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dead, other := wire.Fingerprint{1}, wire.Fingerprint{2}
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{silent.LocalAddr().String()}, Fingerprint: dead,
		Replicas: []wire.Replica{{Addr: silent.LocalAddr().String(), Fingerprint: dead, Leader: true}, {Addr: "127.0.0.1:1", Fingerprint: other}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sent wire.Sent
	err = g.attempt(ctx, time.Minute, wire.OpSend, wire.Send{Group: g.id, Messages: []wire.Outgoing{{ID: wire.NewID(), Body: []byte("hi")}}}, &sent)
	if !errors.Is(err, errNoHandshake) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("attempt at a member that answers nothing: %v, want unreachable, no handshake in time", err)
	}
}

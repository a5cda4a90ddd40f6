package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// namesOnce fails t unless err is an error whose text names op exactly
// once (as a word: "send" in "sends" does not count).
func namesOnce(t *testing.T, what, op string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	n := 0
	for _, w := range strings.FieldsFunc(err.Error(), func(r rune) bool { return r == ' ' || r == ':' || r == ',' }) {
		if w == op {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%s: %q names %s %d times, want once", what, err, op, n)
	}
}

// TestGroupErrorsNameOnce: the client's own errors of a call (a stream
// closed without a reply, a malformed reply) named the operation, and
// Group.fail and Registry.fail named it again: "fetch group g: fetch:
// server closed the stream without a reply", "list: list: ...". Each
// names it once now, the group with it. (A cell's member: see
// TestCellAttemptErrorNamesMember.)
func TestGroupErrorsNameOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, mode := range []string{"no reply", "malformed"} {
		reply := func(c *server.Call) error {
			if mode == "no reply" {
				return nil // the stream closes, no frame
			}
			return c.Send(wire.KindResult, []byte{0xff, 0xff})
		}
		e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error { return reply(c) })
		g, err := newClient(t).Group(e)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Info(ctx)
		namesOnce(t, mode+": info", "info", err)
		_, err = g.Join(ctx, "x", nil)
		namesOnce(t, mode+": join", "join", err)
		_, err = g.Leave(ctx)
		namesOnce(t, mode+": leave", "leave", err)
		_, err = g.Members(ctx)
		namesOnce(t, mode+": members", "members", err)
		_, err = g.Send(ctx, []byte("x"))
		namesOnce(t, mode+": send", "send", err)
		_, err = g.Fetch(ctx, client.Query{}, func(client.Message) bool { return true })
		namesOnce(t, mode+": fetch", "fetch", err)
		for _, err := range g.Watch(ctx, client.Query{}) {
			namesOnce(t, mode+": watch", "watch", err)
			break
		}

		_, r := hostileRegistryHandler(t, func(ctx context.Context, c *server.Call) error { return reply(c) })
		_, err = r.List(ctx)
		namesOnce(t, mode+": list", "list", err)
		_, err = r.Renew(ctx, client.Renewal{Group: wire.UUID{1}})
		namesOnce(t, mode+": renew", "renew", err)

		_, err = newClient(t).CellStatus(ctx, e.Addrs[0], e.Fingerprint)
		namesOnce(t, mode+": cell status", "cell_status", err)
	}
}

// TestRegistryAddressShownInErrors: the address a program opens a
// registry at (the user's text, or an address discovery or a listing
// gave) reached the error of a failed open as it came: a line break or a
// bidirectional override in it reached the user's terminal, or huddle
// web's messages. It is shown (wire.Shown), as listed addresses are.
func TestRegistryAddressShownInErrors(t *testing.T) {
	const addr = "127.0.0.1:9\nfake line\u202e"
	c := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, pin := range []client.Fingerprint{{}, {1}} {
		_, err := c.Registry(ctx, addr, pin)
		if err == nil {
			t.Fatalf("a registry at %q (pin %v): no error", addr, pin)
		}
		if r, bad := unshownRune(err.Error()); bad {
			t.Errorf("opening a registry at %q (pin %v): the error holds %U: %q", addr, pin.Short(), r, err)
		}
	}
}

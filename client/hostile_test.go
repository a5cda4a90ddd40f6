package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// hostileDaemon runs a group daemon of its own making: handle answers
// every operation. It returns the listing entry of its one group.
func hostileDaemon(t *testing.T, handle server.Handler) client.GroupEntry {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, handle)
	if err := s.Listen(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return client.GroupEntry{Group: wire.UUID{7}, Name: "g", Addrs: []string{s.Addr().String()}, Fingerprint: id.Fingerprint()}
}

// TestFetchDaemonRepeatsItself checks that a Fetch ends, each message
// delivered once, against a daemon whose every page holds the same
// message and says more follow after it: a fetch paged on, yielding the
// same message again, as long as the caller's context lived (forever
// without a deadline; a CLI fetch printed it for its whole --timeout).
func TestFetchDaemonRepeatsItself(t *testing.T) {
	var pages atomic.Int64
	e := hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpFetch {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		pages.Add(1)
		msg := wire.Message{Seq: 5, Time: 1, ID: wire.ID{1}, From: wire.Fingerprint{1}, Name: "x", Body: []byte("again")}
		if err := c.Send(wire.KindMessages, wire.Messages{Messages: []wire.Message{msg}}); err != nil {
			return err
		}
		return c.Send(wire.KindEnd, wire.End{Next: 5, More: true, First: 1, Last: 9, Epoch: 3})
	})
	for _, q := range []client.Query{{}, {After: 2}, {Since: time.Unix(0, 1)}} {
		c := newClient(t)
		g, err := c.Group(e)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		n := 0
		_, err = g.Fetch(ctx, q, func(client.Message) bool { n++; return true })
		cancel()
		if errors.Is(err, context.DeadlineExceeded) || n != 1 {
			t.Errorf("fetch %+v: %d messages, err %v; want the message once, and an end", q, n, err)
		}
	}
	t.Logf("%d pages served", pages.Load())
}

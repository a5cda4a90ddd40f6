package cli

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendNotHeldByRememberInfo: a send acknowledged, the daemon stops
// answering (killed, cut off) before the info the command asks to record
// the group under its daemon's name (remember, the first send to a group
// only). The command waited out its --timeout there, after its ack, and
// printed the ack only then; the info is bounded (rememberInfoWait): the
// command ends well within its timeout, the ack printed, the group
// recorded without a name.
func TestSendNotHeldByRememberInfo(t *testing.T) {
	dk, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	group := wire.UUID{5, 6}
	var acked atomic.Bool
	heldInfo, stop := make(chan struct{}, 1), make(chan struct{})
	var s *server.Server
	s = server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		switch c.Op() {
		case wire.OpList:
			return c.Result(wire.Groups{Epoch: 1, Groups: []wire.GroupEntry{{Group: group, Name: "builds", Addrs: []string{s.Addr().String()}, Fingerprint: dk.Fingerprint(), ExpiresMS: 15000}}})
		case wire.OpInfo:
			if acked.Load() { // silent from the ack on
				select {
				case heldInfo <- struct{}{}:
				default:
				}
				select {
				case <-ctx.Done():
				case <-stop:
				}
				return &wire.Error{Code: wire.CodeUnavailable}
			}
			return c.Result(wire.Info{Group: group, Name: "builds", Epoch: 1, Members: 1, Member: true, Fingerprint: dk.Fingerprint(),
				Limits: wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}})
		case wire.OpSend:
			acked.Store(true)
			return c.Result(wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: time.Now().UnixNano()}}})
		}
		return &wire.Error{Code: wire.CodeUnsupported}
	})
	if err := s.Listen(dk); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(stop) }) // first: the info held returns, and Close does not wait for it
	u := newTestUser(t, s.Addr().String())
	type result struct {
		code        int
		out, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, out, stderr := u.run(t, "send", "builds", "hello", "--timeout", "2m")
		done <- result{code, out, stderr}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * rememberInfoWait):
		// Unbounded, the info ended after some 33 s (the client's own
		// bounds), the command's 2 minutes not yet out.
		t.Fatalf("huddle send still runs %v after it began (its timeout 2 minutes): held by the info remember asks", 10*rememberInfoWait)
	}
	select {
	case <-heldInfo:
	default:
		t.Fatal("the command asked no info after its ack: the test does not show what it means to")
	}
	if r.code != ExitOK || !strings.Contains(r.out, "1") {
		t.Errorf("huddle send: exit %d, stdout %q, stderr %q; want 0 and the ack", r.code, r.out, r.stderr)
	}
	set, err := loadJoined(u.home)
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := set[joinedGroup{group, dk.Fingerprint()}]; !ok || l.name != "" {
		t.Errorf("joined file %v; want builds recorded, with no name (its daemon did not say it)", set)
	}
}

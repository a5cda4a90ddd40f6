package cli

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendCellElectingExplained: a send to a cell that an election
// outlasts (its one member answering refuses the first try, no leader
// known, then leaves each retry unanswered; the other never completes a
// handshake) ends in doubt, and huddle send says so with the cell's own
// refusal: the members were running, the cell had no leader, and to send
// it again under the same --id (exit 3). Until session 23 it said
// "timed out; is the daemon running and reachable over UDP? (raise
// --timeout for slow links)".
func TestSendCellElectingExplained(t *testing.T) {
	t.Parallel()
	const electing = "cell: not the leader, and no leader is known (an election is under way)"
	dk, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	release := make(chan struct{})
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpSend {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		if asked.Add(1) == 1 {
			return &wire.Error{Code: wire.CodeUnavailable, Unchanged: true, RetryAfterMS: 50, Message: electing}
		}
		select { // taken, never answered: in doubt
		case <-ctx.Done():
		case <-release:
		}
		return &wire.Error{Code: wire.CodeUnavailable}
	})
	if err := s.Listen(dk); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) })              // before the server closes
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // a member stopped: no handshake
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known")), NoBatching: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr := s.Addr().String()
	g, err := c.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "ops", Addrs: []string{addr}, Fingerprint: dk.Fingerprint(),
		Replicas: []wire.Replica{{Addr: addr, Fingerprint: dk.Fingerprint()}, {Addr: pc.LocalAddr().String(), Fingerprint: wire.Fingerprint{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// --timeout ends it here (4 s), before the client's 10 s bound on a
	// send in doubt: the text is the same either way.
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	_, err = g.Send(ctx, []byte("hello"))
	if !errors.Is(err, client.ErrInDoubt) {
		t.Fatalf("the send: %v; want it in doubt (its retries taken, unanswered)", err)
	}
	msg, code := explain(err)
	if code != ExitUnreachable {
		t.Errorf("explain(%v) exit code = %d, want %d", err, code, ExitUnreachable)
	}
	for _, want := range []string{"outcome unknown", electing, "the cell's members were running and answered, and the cell had no leader", "send it again with the same --id"} {
		if !strings.Contains(msg, want) {
			t.Errorf("explain(%v) = %q: want it to say %q", err, msg, want)
		}
	}
	if strings.Contains(msg, "is the daemon running") || strings.Contains(msg, "raise --timeout") {
		t.Errorf("explain(%v) = %q: the members answered; a longer --timeout is no cure", err, msg)
	}
	t.Logf("huddle send: %s", msg)
}

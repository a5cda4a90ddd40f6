package cli

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/udpproxy"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellChangeInDoubtCLI: huddle cell add whose change may have been
// made (a refusal without unchanged, as a leader that lost its office as
// it committed the change answers, then a refusal, and --timeout ends as
// the change is asked again) says
// its outcome is unknown, how to see the cell's members, and that asking
// again is safe, and exits 3; one whose every refusal was marked
// unchanged (a member that does not lead) made no change, and says so:
// exit 1, the refusal. Until session 20 both said "timed out; is the
// daemon running and reachable over UDP?", exit 3.
func TestCellChangeInDoubtCLI(t *testing.T) {
	t.Parallel()
	dk, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var script atomic.Pointer[[]*wire.Error]
	var asked atomic.Int64
	var relay *udpproxy.Proxy
	// The last refusal asks for 2 s (1-2 s, jittered): the cut is made
	// long before the next ask.
	follower := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 2000, Unchanged: true, Message: "cell_add: this daemon does not lead the cell"}
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpCellAdd {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		s := *script.Load()
		n := int(asked.Add(1))
		if n >= len(s) {
			// Once the client has read the last refusal (and closed
			// the ask's connection), the member's address answers no
			// more: the next ask's dial lasts until --timeout, and no ask
			// is out as the command ends.
			conn := c.Conn()
			go func() { <-conn.Context().Done(); relay.Cut() }()
		}
		return s[min(n, len(s))-1]
	})
	if err := s.Listen(dk); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	relay, err = udpproxy.New(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	addr := relay.Addr()
	joiner, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	member := joiner.Fingerprint().String() + "@127.0.0.1:9"
	for _, tc := range []struct {
		name   string
		script []*wire.Error
		code   int
		want   string
	}{
		{"refused unchanged throughout", []*wire.Error{follower}, ExitRefused, "huddle cell add: cell_add: this daemon does not lead the cell (retry after 2s); asked again until --timeout ended: the cell made no change"},
		{"refused in doubt first", []*wire.Error{{Code: wire.CodeUnavailable, RetryAfterMS: 50, Message: "cell_add: the cell's leadership changed while it was in flight"}, follower},
			ExitUnreachable, "huddle cell add: outcome unknown: the cell may have made the change (an ask of it was left unanswered, or refused by a member that may have taken it: a leader that lost its office); the last answer: cell_add: this daemon does not lead the cell"},
	} {
		// Every scripted refusal must reach the command within its
		// --timeout: at load ~50 the second ask's dial did not within 5 s
		// (session 22). The scenario then runs again, three times at most.
		// (Not with a longer --timeout: the last ask's dial, cut, would
		// end on its own bound first, and be the last answer.)
		var code int
		var stderr string
		for try := 1; ; try++ {
			asked.Store(0)
			script.Store(&tc.script)
			relay.Restore()
			u := &testUser{home: t.TempDir(), registry: addr}
			code, _, stderr = u.run(t, "cell", "add", "--server", addr, "--timeout", "5s", "--wait", "0", member)
			t.Logf("%s: exit %d, %d asks: %s", tc.name, code, asked.Load(), stderr)
			if asked.Load() >= int64(len(tc.script)) {
				break
			}
			if try == 3 {
				t.Fatalf("%s: %d asks reached the member in each of %d runs: the scenario did not run", tc.name, asked.Load(), try)
			}
		}
		if code != tc.code || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%s: exit %d, %q; want exit %d, %q...", tc.name, code, stderr, tc.code, tc.want)
		}
		if doubt := strings.Contains(stderr, "outcome unknown"); doubt != (tc.code == ExitUnreachable) ||
			doubt && !strings.Contains(stderr, "huddle cell status --server "+addr+" shows the cell's members, and asking again is safe") {
			t.Errorf("%s: %q", tc.name, stderr)
		}
	}
}

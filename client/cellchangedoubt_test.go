package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellChangeDoubt: a cell change whose every refusal was marked
// unchanged (a member that does not lead: nothing was proposed) made no
// change, and fails as the refusal it is; one an ask of which was refused
// unavailable without the mark (a leader that lost its office as it
// committed the change) may have been made, and fails in doubt
// (ErrInDoubt), whatever the later asks were told. A change asked again
// and answered is made, doubt or not.
func TestCellChangeDoubt(t *testing.T) {
	var asked atomic.Int64
	var script atomic.Pointer[[]*wire.Error] // nil entry: answered
	// end ends the call once the client has read the script's last
	// refusal (and closed that ask's connection): it is then waiting
	// 1-2 s to ask again, and no ask is out.
	var end atomic.Pointer[context.CancelFunc]
	var e client.GroupEntry
	e = hostileDaemon(t, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpCellAdd {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		s := *script.Load()
		n := int(asked.Add(1))
		we := s[min(n, len(s))-1]
		if we == nil {
			return c.Result(wire.CellChanged{Members: []wire.Replica{{Addr: e.Addrs[0], Fingerprint: e.Fingerprint, Leader: true}}})
		}
		if n >= len(s) {
			conn, cancel := c.Conn(), *end.Load()
			go func() { <-conn.Context().Done(); cancel() }()
		}
		return we
	})
	lost := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 2000, Message: "cell_add: the cell's leadership changed while it was in flight"}
	follower := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 2000, Unchanged: true, Message: "cell_add: this daemon does not lead the cell"}
	member := client.Replica{Addr: "127.0.0.1:1", Fingerprint: wire.Fingerprint{5}}
	for _, tc := range []struct {
		name   string
		script []*wire.Error
		doubt  bool // and fails
		ok     bool
	}{
		{"refused unchanged until the call ends", []*wire.Error{follower}, false, false},
		{"refused in doubt, then unchanged until the call ends", []*wire.Error{lost, follower}, true, false},
		{"refused in doubt, then answered", []*wire.Error{lost, nil}, false, true},
	} {
		asked.Store(0)
		script.Store(&tc.script)
		c := newClient(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		end.Store(&cancel)
		_, err := c.CellAdd(ctx, e.Addrs[0], e.Fingerprint, member)
		cancel()
		t.Logf("%s: %d asks: %v", tc.name, asked.Load(), err)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v, want the change answered", tc.name, err)
		case tc.ok:
		case asked.Load() < int64(len(tc.script)) || !errors.Is(err, context.Canceled):
			t.Fatalf("%s: %d asks reached the member: the scenario did not run (%v)", tc.name, asked.Load(), err)
		case !errors.Is(err, client.ErrUnavailable):
			t.Errorf("%s: %v, want the last refusal (ErrUnavailable)", tc.name, err)
		case errors.Is(err, client.ErrInDoubt) != tc.doubt:
			t.Errorf("%s: %v: in doubt %v, want %v", tc.name, err, errors.Is(err, client.ErrInDoubt), tc.doubt)
		}
	}
}

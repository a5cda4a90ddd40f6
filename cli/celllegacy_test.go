package cli

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestCellStatusShowsLegacyMember: a cell whose configuration names a
// member at an address that is not host:port ("box:http", as raft took
// before session 20) is shown, that member listed as the configuration
// has it, marked not asked, with how to move it, and never dialled there;
// the others as ever. Until session 22 every member's status was refused
// whole for it (wire: CellStatus.check), and huddle cell status could not
// show the cell its operator had to repair. The same for a member at a
// multicast host:port (224.0.0.251:5353, taken before session 22): its
// row and message say the address is not one to dial, not that it is not
// host:port, and do not date the configuration before session 20.
func TestCellStatusShowsLegacyMember(t *testing.T) {
	for _, addr := range []string{"box:http", "224.0.0.251:5353"} {
		t.Run(addr, func(t *testing.T) { testCellStatusShowsUndialable(t, addr) })
	}
}

func testCellStatusShowsUndialable(t *testing.T, addr string) {
	legacy := wire.Replica{Addr: addr, Fingerprint: wire.Fingerprint{0xc}}
	// The configuration both daemons answer: the leader, the follower and
	// the legacy member, set once both listen (their handlers read it on
	// their own goroutines).
	var config atomic.Pointer[[]wire.Replica]
	leader := cellStatusDaemon(t, func(_ context.Context, self wire.Replica) (wire.CellStatus, error) {
		self.Leader = true
		return wire.CellStatus{Self: self, State: "leader", Term: 4, Leader: &self, CommitIndex: 9, AppliedIndex: 9, LastIndex: 9, Members: *config.Load()}, nil
	})
	follower := cellStatusDaemon(t, func(_ context.Context, self wire.Replica) (wire.CellStatus, error) {
		members := *config.Load()
		return wire.CellStatus{Self: self, State: "follower", Term: 4, Leader: &members[0], CommitIndex: 9, AppliedIndex: 8, LastIndex: 9, LastContact: 20, Members: members}, nil
	})
	l := leader
	l.Leader = true
	config.Store(&[]wire.Replica{l, follower, legacy})
	u := newTestUser(t, "")

	code, out, errs := u.run(t, "cell", "status", "--server", follower.Addr)
	if code != ExitOK {
		t.Fatalf("cell status of a cell with a member at %s: exit %d\nstdout:\n%s\nstderr:\n%s", addr, code, out, errs)
	}
	var row string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, legacy.Fingerprint.Short()+" ") {
			row = line
		}
	}
	if !strings.Contains(out, "cell of 3 members; leader "+leader.Fingerprint.Short()) || !strings.Contains(row, addr) ||
		!strings.Contains(row, "not asked: address not to dial") ||
		!strings.Contains(out, `its address "`+addr+`" is not one to dial`) || strings.Contains(out, "session 20") ||
		!strings.Contains(out, "huddle cell add --server MEMBER "+legacy.Fingerprint.String()+"@HOST:PORT") ||
		strings.Contains(out, "unreachable") {
		t.Errorf("cell status:\n%s\nwant 3 members, the one at %s marked not asked (not unreachable), with how to move it", out, addr)
	}

	out = u.ok(t, "cell", "status", "--server", leader.Addr, "--json")
	var st struct {
		Members []struct {
			Addr        string `json:"addr"`
			Fingerprint string `json:"fingerprint"`
			State       string `json:"state"`
			Error       string `json:"error"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Members) != 3 {
		t.Fatalf("cell status --json: %v\n%s", err, out)
	}
	if m := st.Members[2]; m.Addr != addr || m.Fingerprint != legacy.Fingerprint.String() || m.State != "" || !strings.Contains(m.Error, "not asked") ||
		st.Members[0].State != "leader" || st.Members[1].State != "follower" {
		t.Errorf("cell status --json members: %+v, want the leader, the follower, and %s not asked", st.Members, addr)
	}
}

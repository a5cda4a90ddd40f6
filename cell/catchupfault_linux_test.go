package cell

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// TestCatchUpServedReadFault: a member serving a catch-up reads the
// group's bodies from its files, mapped since it started (store/mapped.go);
// a page the disk can no longer read faulted (SIGBUS) as a batch was
// encoded, and the runtime made that fatal: the peer asking crashed the
// member it asked. Here the member's segment files are cut to nothing under
// their mappings (the kernel answers a read past the end as it answers
// EIO): the catch-up fails, and the member goes on. (With the recovery
// reverted, the test binary dies of "unexpected fault address".)
func TestCatchUpServedReadFault(t *testing.T) {
	c := newTestCell(t, 3, true, nil)
	l := c.leader()
	g := l.group("lobby")
	c.sendMany(g.ID, 0, 10)
	x, f := c.followers(2)[0], l
	x.waitLast(g.ID, 10)
	c.restart(x) // its history is read back, mapped
	x.waitLast(g.ID, 10)
	segs, err := filepath.Glob(filepath.Join(x.host.dir, g.ID.String(), "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment files of the lobby at %s: %v", x.host.dir, err)
	}
	for _, s := range segs {
		if err := os.Truncate(s, 0); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	fg := f.node.fsm.group(g.ID)
	s, err := f.node.askCatchUp(ctx, Peer{Addr: x.addr, Fingerprint: x.id.Fingerprint()}, fg, 0, 10)
	if err == nil {
		err = s.copy(fg, catchUpTimeout, 0, nil, new(catchUpRun))
		s.close()
	}
	if err == nil {
		t.Fatal("a catch-up of messages whose bodies fault served whole")
	}
	t.Logf("the catch-up failed: %v", err)
	if st := x.node.raft.State(); st == raft.Shutdown {
		t.Fatalf("the member that faulted is %v", st)
	}
	var seq uint64 = 10
	stillReplicates(t, c, x, &seq)
}

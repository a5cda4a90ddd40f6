package cell

import (
	"context"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestStatusAnswersWhileApplyStalls: a member whose state machine is stuck
// in an append (its log's disk stalled) still answers Status, with the
// members its groups had, as an operator asking `huddle cell status` about
// that member needs. Status used to read the member count under the state
// machine's lock, which the stalled apply holds: it waited for the disk
// (and hung groupd's TestCellFollowerLagsJoin in CI, which asks every
// member's status while one member's appends are held).
func TestStatusAnswersWhileApplyStalls(t *testing.T) {
	c := newTestCell(t, 3, false, nil)
	g := c.leader().group("lobby")
	ctx := context.Background()
	for _, fp := range []wire.Fingerprint{{1}, {2}} {
		c.change("join", nil, func(n *Node) error { _, err := n.Join(ctx, g.ID, fp, "member"); return err })
	}
	f := c.follower()
	waitUntil(t, "the follower applying both joins", func() bool {
		st := f.node.Status()
		return len(st.Groups) == 1 && st.Groups[0].Members == 2
	})

	release := f.host.holdAppends()
	defer release()
	c.send(g.ID, alice, [][16]byte{newID(1)}, []string{"held"}) // a majority without f
	waitUntil(t, "the follower's apply stuck in its append", func() bool { return f.host.heldAppends() > 0 })

	got := make(chan Status, 1)
	go func() { got <- f.node.Status() }()
	select {
	case st := <-got:
		if len(st.Groups) != 1 || st.Groups[0].Members != 2 {
			t.Fatalf("status of the stalled member: groups %+v, want one group of 2 members", st.Groups)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Status of a member whose apply is stalled did not return in %v", waitTimeout)
	}
	release()
	f.waitLast(g.ID, 1)
}

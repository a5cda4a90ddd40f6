package cell

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/wire"
)

// TestNewLeaderPromotesAtFirstQuestion: a member added back that caught
// up while its leader could not promote it (the leader was lost: here its
// questions are held, and it crashes) is made a voter by the next leader
// at its first question. (A leader compared an answer with its commit
// index at the question before, so it promoted no member before its
// second question, a HeartbeatTimeout later; each new leader began again:
// in internal/jepsen a member added back in a cell of three whose leader
// was killed voted ~2 s after its addition.)
func TestNewLeaderPromotesAtFirstQuestion(t *testing.T) {
	rerunOnNewCells(t, 3, "an election came after the new leader's", func(t *testing.T) bool {
		var x atomic.Pointer[string] // the member added back
		var mu sync.Mutex
		asked := make(map[wire.Fingerprint]int) // x's questions by who asked
		hold := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(hold) }) }
		defer release()
		c := newTestCell(t, 5, false, func(cfg *Config) {
			steadyLeader(cfg)
			self := cfg.Advertise
			cfg.askedProgress = func(by wire.Fingerprint) {
				if a := x.Load(); a == nil || *a != self {
					return
				}
				<-hold
				mu.Lock()
				asked[by]++
				mu.Unlock()
			}
		})
		l := c.leader()
		g := l.group("lobby")
		c.sendMany(g.ID, 0, 20)
		xm := c.follower()
		c.removeMember(xm)
		x.Store(&xm.addr)
		l = c.leader()
		self := Peer{Addr: xm.addr, Fingerprint: xm.id.Fingerprint()}
		if err := l.node.AddMember(context.Background(), l.node.Self().Fingerprint, self); err != nil {
			t.Logf("add back: %v", err)
			return false
		}
		commit := l.node.raft.CommitIndex()
		waitUntil(t, "the member added back to apply its addition", func() bool { return xm.node.raft.AppliedIndex() >= commit })
		l.crash() // its questions to x are held: it promoted no one
		release()
		next := c.leader()
		term := next.node.raft.CurrentTerm()
		id := raft.ServerID(self.Fingerprint.String())
		waitUntil(t, "the member added back to vote", func() bool {
			f := next.node.raft.GetConfiguration()
			if f.Error() != nil {
				return false
			}
			for _, s := range f.Configuration().Servers {
				if s.ID == id {
					return s.Suffrage == raft.Voter
				}
			}
			return false
		})
		if next.node.raft.CurrentTerm() != term || next.node.raft.State() != raft.Leader {
			return false
		}
		mu.Lock()
		n := asked[next.id.Fingerprint()]
		mu.Unlock()
		if n != 1 {
			t.Fatalf("the new leader asked the member added back, caught up, %d times before it voted; want 1", n)
		}
		return true
	})
}

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
// at its first question the member answers caught up. (A leader compared
// an answer with its commit index at the question before, so it promoted
// no member before its second question, a HeartbeatTimeout later; each new
// leader began again: in internal/jepsen a member added back in a cell of
// three whose leader was killed voted ~2 s after its addition.)
//
// What the new leader's questions are is watched on the leader
// (promoteAnswered), not counted at the member: under load a question may
// go unanswered within progressTimeout, or be answered before the member
// heard of the new leader's first commit, and each is asked again by
// right (a make test at load ~20 saw 3 questions, a test process held to
// 1/15 of a CPU 2). What must not happen is an answer caught up (applied
// at least the commit index the leader read before its question) that the
// leader did not make a voter in that round.
func TestNewLeaderPromotesAtFirstQuestion(t *testing.T) {
	type answer struct {
		by              string // the leader's address
		member          wire.Fingerprint
		applied, commit uint64
		chosen          bool
	}
	rerunOnNewCells(t, 3, "an election came after the new leader's", func(t *testing.T) bool {
		var x atomic.Pointer[string] // the member added back
		var mu sync.Mutex
		var answers []answer
		hold := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(hold) }) }
		defer release()
		c := newTestCell(t, 5, false, func(cfg *Config) {
			steadyLeader(cfg)
			self := cfg.Advertise
			cfg.askedProgress = func(wire.Fingerprint) {
				if a := x.Load(); a != nil && *a == self {
					<-hold
				}
			}
			cfg.promoteAnswered = func(member wire.Fingerprint, applied, commit uint64, chosen bool) {
				mu.Lock()
				answers = append(answers, answer{self, member, applied, commit, chosen})
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
		defer mu.Unlock()
		k, chosen := 0, false
		for _, a := range answers {
			if a.by != next.addr || a.member != self.Fingerprint {
				continue
			}
			k++
			t.Logf("the new leader's question %d: the member added back applied %d, commit %d before the question, made a voter %v", k, a.applied, a.commit, a.chosen)
			if a.applied >= a.commit && !a.chosen {
				t.Fatalf("the new leader passed over the member added back at its question %d: it answered caught up (applied %d, commit %d before the question); want it made a voter at once", k, a.applied, a.commit)
			}
			chosen = chosen || a.chosen
		}
		if !chosen {
			t.Fatalf("the member added back votes, but the new leader made it a voter in none of its %d answered questions", k)
		}
		return true
	})
}

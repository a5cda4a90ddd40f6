package cell

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/wire"
)

// Status is one member's view of its cell.
type Status struct {
	Self  Peer
	State string // "leader", "follower", "candidate", "shutdown"
	Term  uint64
	// Leader is the member this one follows (itself, on the leader); zero
	// if it knows of none.
	Leader Peer
	// CommitIndex is the last raft entry this member knows is committed;
	// AppliedIndex the last it applied to its groups; LastIndex the last
	// in its raft log.
	CommitIndex, AppliedIndex, LastIndex uint64
	// LastContact is how long ago this member last heard from the leader:
	// 0 on the leader, negative if never.
	LastContact time.Duration
	// Members are the cell's members in its latest configuration.
	Members []MemberStatus
	// Groups are the cell's groups as this member holds them.
	Groups []GroupStatus
}

// MemberStatus is a member of the cell's configuration.
type MemberStatus struct {
	Peer
	Voter bool
}

// GroupStatus is one group of the cell on one member.
type GroupStatus struct {
	ID      wire.UUID
	Name    string
	Epoch   uint64
	Last    uint64 // the last sequence number its log holds
	Members int
}

// Status returns this member's view of its cell.
func (n *Node) Status() Status {
	s := Status{Self: n.self, State: "shutdown", LastContact: -1}
	r := n.running()
	if r == nil {
		return s
	}
	s.State = stateName(r.State())
	s.Term = r.CurrentTerm()
	s.Leader, _ = n.Leader()
	s.CommitIndex, s.AppliedIndex, s.LastIndex = r.CommitIndex(), r.AppliedIndex(), r.LastIndex()
	switch last := r.LastContact(); {
	case s.State == "leader":
		s.LastContact = 0
	case !last.IsZero():
		s.LastContact = time.Since(last)
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			fp, err := wire.ParseFingerprint(string(srv.ID))
			if err != nil {
				continue
			}
			s.Members = append(s.Members, MemberStatus{Peer: Peer{Addr: string(srv.Address), Fingerprint: fp}, Voter: srv.Suffrage == raft.Voter})
		}
	}
	slices.SortFunc(s.Members, func(a, b MemberStatus) int { return slices.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
	for _, g := range n.fsm.list() {
		last, _ := g.log.Tail()
		n.fsm.mu.RLock()
		members := len(g.members)
		n.fsm.mu.RUnlock()
		s.Groups = append(s.Groups, GroupStatus{ID: g.spec.ID, Name: g.spec.Name, Epoch: g.spec.Epoch, Last: last, Members: members})
	}
	return s
}

func stateName(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Groups returns the cell's groups, by name.
func (n *Node) Groups() []GroupSpec {
	var specs []GroupSpec
	for _, g := range n.fsm.list() {
		specs = append(specs, g.spec)
	}
	return specs
}

// AddMember adds p to the cell as a voting member; p's daemon must have
// been started to join (Config.Join) with the cell's peers. The leader
// brings it up to date (a snapshot, then raft's log; its groups' logs
// from a peer) while the cell goes on. Errors: a *NotLeaderError,
// ErrUnavailable (wrapped), ErrInvalidConfig for a malformed peer. Like a
// send, a change may meet a leadership change (an election, a transfer)
// and is then answered ErrUnavailable, committed or not: the caller asks
// the leader again (the daemon's cell_add answers unavailable and the
// client asks again); adding a member present, or removing one absent,
// changes nothing.
func (n *Node) AddMember(ctx context.Context, p Peer) error {
	if err := p.check(); err != nil {
		return err
	}
	if _, err := n.leading(); err != nil {
		return err
	}
	// The transport must accept and dial the new member before raft
	// replicates to it.
	c := n.raft.GetConfiguration()
	if err := c.Error(); err != nil {
		return proposeError("add member", err)
	}
	conf := c.Configuration()
	conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.Fingerprint.String()), Address: raft.ServerAddress(p.Addr)})
	n.configured(conf)
	return n.change(ctx, "add member", n.raft.AddVoter(raft.ServerID(p.Fingerprint.String()), raft.ServerAddress(p.Addr), 0, n.timeout(ctx)))
}

// RemoveMember removes the member whose key is fp from the cell. A leader
// that removes itself steps down once the change is committed. Errors: as
// AddMember's.
func (n *Node) RemoveMember(ctx context.Context, fp wire.Fingerprint) error {
	if _, err := n.leading(); err != nil {
		return err
	}
	return n.change(ctx, "remove member", n.raft.RemoveServer(raft.ServerID(fp.String()), 0, n.timeout(ctx)))
}

// timeout is the time left before ctx's deadline, or RPCTimeout.
func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return n.cfg.RPCTimeout
}

func (n *Node) change(ctx context.Context, op string, f raft.IndexFuture) error {
	done := make(chan error, 1)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		done <- f.Error() // raft answers by the future's timeout
	}()
	select {
	case err := <-done:
		if err != nil {
			return proposeError(op, err)
		}
		n.cfg.Logger.Info("cell: membership changed", "op", op)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w: %v", op, ErrUnavailable, context.Cause(ctx))
	}
}

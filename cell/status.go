package cell

import (
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
	// Members are the cell's members in its latest configuration (but
	// for this member, if the others refused it as removed: learn.go).
	Members []MemberStatus
	// Groups are the cell's groups as this member holds them.
	Groups []GroupStatus
	// Stall is, while this member's state machine cannot apply what the
	// cell commits (a group log refuses appends: a full disk), why; nil
	// otherwise.
	Stall *Stall
	// KeyMismatches are the members' configurations naming, for a
	// member's address, another key than the daemon there presents
	// (keycheck.go): the cell was set up with a wrong --cell-peer. None
	// in a cell set up right.
	KeyMismatches []KeyMismatch
}

// MemberStatus is a member of the cell's configuration.
type MemberStatus struct {
	Peer
	// Voter is false for a member added and still catching up: it takes
	// no part in the cell's decisions yet (AddMember).
	Voter bool
	// Behind, on the leader, for a member catching up: how many raft
	// entries it lacked when the leader last asked; -1 before it answered.
	Behind int64
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
	out := n.refusedOut.Load() // removed, though raft's configuration lists it (learn.go)
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			fp, err := wire.ParseFingerprint(string(srv.ID))
			if err != nil || out && fp == n.self.Fingerprint {
				continue
			}
			m := MemberStatus{Peer: Peer{Addr: string(srv.Address), Fingerprint: fp}, Voter: srv.Suffrage == raft.Voter}
			if b, ok := n.behindOf(fp); ok && !m.Voter {
				m.Behind = int64(b.entries)
			} else if !m.Voter {
				m.Behind = -1
			}
			s.Members = append(s.Members, m)
		}
	}
	slices.SortFunc(s.Members, func(a, b MemberStatus) int { return slices.Compare(a.Fingerprint[:], b.Fingerprint[:]) })
	if n.fsm.stalledAt.Load() != 0 {
		s.Stall = n.fsm.stall.Load()
	}
	s.KeyMismatches = n.KeyMismatches()
	for _, g := range n.fsm.list() {
		last, _ := g.log.Tail()
		members := int(g.memberCount.Load())
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

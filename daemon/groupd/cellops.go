package groupd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// cellError maps what a cell's node answered to what the client is told
// (PROTOCOL.md §13): a member that does not lead answers unavailable
// naming the leader, so that the client sends there; an operation whose
// outcome the cell could not decide (an election, a lost majority)
// answers unavailable, and a retry with the same message IDs is safe.
func cellError(op wire.Op, g *group, err error) error {
	var nl *cell.NotLeaderError
	var stalled *cell.StalledError
	switch {
	case errors.As(err, &stalled):
		// Refused before anything was proposed: the outcome is known. It
		// names itself leader, which it is until it hands over: a client
		// sent here by a follower would otherwise ask the followers again,
		// and they send it back here, and the refusal it ends with at its
		// deadline would as likely be theirs (that a member does not
		// lead) as this one's, which says why.
		self := g.cell.node.Self()
		retry := "retry shortly"
		if op == wire.OpSend {
			retry += ", with the same message IDs"
		}
		return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Replicas: cellMembers(g),
			Leader: leaderHint(self), Unchanged: true,
			Message: fmt.Sprintf("%v group %s: the cell's leader cannot write to its disk (%s: group %s's log refuses appends), so it took nothing of this; it hands the leadership to a member that can: %s",
				op, g.name, stalled.Stall.Cause, stalled.Stall.Group, retry)}
	case errors.As(err, &nl):
		// Refused before anything was proposed (Node.leading), whatever
		// the operation: a member that does not lead proposes nothing.
		we := &wire.Error{Code: wire.CodeUnavailable, Replicas: cellMembers(g), Unchanged: true}
		if nl.Leader.Addr == "" {
			we.RetryAfterMS = uint64(cellRetry.Milliseconds())
			we.Message = fmt.Sprintf("%v group %s: this daemon does not lead the group's cell, and no leader is known (an election is under way): try again shortly", op, g.name)
		} else {
			we.Leader = leaderHint(nl.Leader)
			we.Message = fmt.Sprintf("%v group %s: this daemon does not lead the group's cell: send to its leader at %s", op, g.name, nl.Leader.Addr)
		}
		return we
	case errors.Is(err, cell.ErrUnavailable) && errors.Is(err, cell.ErrUnchanged):
		// Raft never took it (a join or a leave: Node.propose): refused
		// before anything was proposed.
		return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Replicas: cellMembers(g), Unchanged: true,
			Message: fmt.Sprintf("%v group %s: the group's cell could not take it now (its leadership is changing); nothing of it was proposed: try again shortly", op, g.name)}
	case errors.Is(err, cell.ErrUnavailable):
		return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Replicas: cellMembers(g),
			Message: fmt.Sprintf("%v group %s: the group's cell could not decide it now (its leadership changed, or it lacks a majority); its outcome is unknown: retry with the same message IDs", op, g.name)}
	case errors.Is(err, cell.ErrClosed):
		return &wire.Error{Code: wire.CodeUnavailable, Unchanged: errors.Is(err, cell.ErrUnchanged),
			Message: fmt.Sprintf("%v group %s: the daemon is shutting down", op, g.name)}
	case errors.Is(err, cell.ErrNoGroup):
		return fmt.Errorf("%v group %s: %w: the cell has no such group", op, g.name, wire.ErrNotFound)
	case errors.Is(err, cell.ErrFull):
		// Applied as a refusal on every replica (Node.Join): the members
		// are as they were.
		return &wire.Error{Code: wire.CodeUnavailable, Unchanged: errors.Is(err, cell.ErrUnchanged),
			Message: fmt.Sprintf("join group %s: the group has its most members", g.name)}
	}
	return fmt.Errorf("%v group %s: %w", op, g.name, err)
}

// cellMembers returns the members that serve g's cell, as this member
// knows them, for a refusal to carry: a client holding an older list
// (made before a member was replaced) learns the new one from it, and
// does not try a member that is gone when it next looks for the leader.
func cellMembers(g *group) []wire.Replica {
	rs := g.cell.host.serving(replicas(g.cell.node.Status()))
	if len(rs) > wire.MaxReplicas {
		return nil
	}
	return rs
}

// notServing is the answer of a daemon that holds a cell's group but does
// not serve it (cell.Node.Serving): it was removed from the cell (its copy
// no longer follows the cell's), or it was added and is still catching up,
// or it has just started and has not caught up yet. Either way it names
// the members that serve the group (and the leader, if it knows it), so
// that a client holding an older list of replicas moves on.
func (d *Daemon) notServing(op wire.Op, g *group) error {
	we := &wire.Error{Code: wire.CodeUnavailable, Replicas: d.replicaList(), Unchanged: true}
	if l, ok := d.node.Leader(); ok && l != d.node.Self() {
		we.Leader = leaderHint(l)
	}
	switch {
	case !d.node.Member():
		we.Message = fmt.Sprintf("%v group %s: this daemon was removed from the group's cell and no longer serves the group: ask the cell's members", op, g.name)
	case d.node.Voter():
		we.RetryAfterMS = uint64(cellRetry.Milliseconds())
		we.Message = fmt.Sprintf("%v group %s: this daemon has just started and has not caught up with the group's cell yet: ask another of its members", op, g.name)
	default:
		we.RetryAfterMS = uint64(cellRetry.Milliseconds())
		we.Message = fmt.Sprintf("%v group %s: this daemon was just added to the group's cell and is still catching up: ask another of its members", op, g.name)
	}
	return we
}

// cellSend proposes a send's stamped entries to the cell. The ack it
// answers with means a majority of the cell holds the raft entry on its
// device (raft's log is fsynced before a member acknowledges it), and
// this replica applied it to the group's log. If it reports later, the
// send's raft entry answers and ends c (sc.answerLater) and sc is its;
// otherwise sc.acks holds the acks.
func (d *Daemon) cellSend(ctx context.Context, c *server.Call, g *group, sc *sendScratch) (later bool, err error) {
	sc.call, sc.group = c, g
	after := store.After{Epoch: sc.req.AfterEpoch, Seq: sc.req.After}
	later, out, err := g.cell.node.SendLaterAfter(ctx, g.id, after, sc.entries, sc.acks, sc.answer)
	switch {
	case later:
		return true, nil
	case errors.Is(err, store.ErrForgotten):
		return false, windowPassed(g, after.Seq)
	case err != nil:
		return false, cellError(wire.OpSend, g, err)
	}
	sc.acks = out
	g.countDuplicates(out)
	return false, nil
}

// countDuplicates counts the acks of a cell's send that answer a
// duplicate.
func (g *group) countDuplicates(acks []store.Ack) {
	for _, a := range acks {
		if a.Duplicate {
			g.duplicates.Add(1)
		}
	}
}

func (d *Daemon) cellJoin(ctx context.Context, c *server.Call, g *group, req *wire.Join) error {
	if g.cell.spec.Private {
		if err := d.checkSecret(c, g, g.cell.secretOK(req.Secret)); err != nil {
			return err
		}
	}
	already, err := g.cell.node.Join(ctx, g.id, c.Peer(), req.Name)
	if err != nil {
		return cellError(c.Op(), g, err)
	}
	if !already {
		d.cfg.Logger.Info("member joined", "group", g.name, "member", c.Peer().Short(), "name", req.Name)
	}
	return c.Result(wire.Joined{Epoch: g.epoch(), Last: g.log.Stats().Last, Already: already})
}

func (d *Daemon) cellLeave(ctx context.Context, c *server.Call, g *group) error {
	was, err := g.cell.node.Leave(ctx, g.id, c.Peer())
	if err != nil {
		return cellError(c.Op(), g, err)
	}
	if was {
		d.cfg.Logger.Info("member left", "group", g.name, "member", c.Peer().Short())
	}
	return c.Result(wire.Left{WasMember: was})
}

// awaitMember waits, on a replica of a cell's group, for fp's join to
// reach this replica: the leader acknowledged it once a majority held
// it, and this replica may apply it a heartbeat later. It returns false if
// fp is still no member after cellMemberWait.
func awaitMember(ctx context.Context, g *group, fp wire.Fingerprint) bool {
	deadline := time.NewTimer(cellMemberWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if g.isMember(fp) {
			return true
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// cellMemberWait bounds awaitMember: a few of raft's heartbeats.
const cellMemberWait = 500 * time.Millisecond

// awaitGroup waits, until by, for a member of a cell that has not yet
// applied all its groups to host group id. A reader naming min_seq was
// acknowledged a message of the group, so the group is the cell's, and
// the member applies its creation as it catches up: it answers once its
// copy holds min_seq, as PROTOCOL.md promises (read-your-writes), where
// it answered unavailable at once (until session 17: a member that had
// not yet heard from the leader, 1.5 s into a cell's life, refused
// TestCellFsyncAlways's fetch). Without min_seq the group may be none of
// the cell's, and the lookup answers unavailable at once (Daemon.group).
func (d *Daemon) awaitGroup(c *server.Call, id wire.UUID, by time.Time) {
	if d.host == nil {
		return
	}
	deadline := time.NewTimer(time.Until(by))
	defer deadline.Stop()
	for {
		added := d.host.next()
		if d.host.group(id) != nil || d.host.count() >= len(d.cfg.Groups) {
			return
		}
		select {
		case <-added:
		case <-deadline.C:
			return
		case <-c.Gone():
			return
		case <-c.Stopping():
			return
		}
	}
}

// awaitSeq waits until g's log holds message seq (Fetch.MinSeq and
// Watch.MinSeq: read-your-writes on any replica), at most until by (the
// request's arrival and cellReadWait, what awaitGroup waited included).
// A group of one daemon holds every message it acknowledged: it never
// waits.
func (d *Daemon) awaitSeq(ctx context.Context, c *server.Call, g *group, seq uint64, by time.Time) error {
	if seq == 0 || g.cell == nil {
		return nil
	}
	deadline := time.NewTimer(time.Until(by))
	defer deadline.Stop()
	for {
		changed := g.log.Changed()
		if g.log.Last() >= seq {
			return nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			err := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()),
				Message: fmt.Sprintf("%v group %s: this replica does not hold message %d yet (it lags the cell): try another replica", c.Op(), g.name, seq)}
			// Itself only once ready (its barrier applied everything
			// committed before its term): a leader naming itself says it
			// holds every message the cell acknowledged, and a client
			// forgets the acknowledgement it asked for (PROTOCOL.md,
			// read-your-writes). Elected, it may still be applying
			// what an earlier leader acknowledged (until session 18 it
			// named itself then); it names none, as it does refusing a
			// send, and the reader asks the other members.
			if l, ok := g.cell.node.Leader(); ok && (l != g.cell.node.Self() || g.cell.node.Leading() == nil) {
				err.Leader = leaderHint(l)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("%v group %s: %w: the daemon is shutting down", c.Op(), g.name, wire.ErrUnavailable)
		case <-c.Gone():
			return c.Lost()
		}
	}
}

// cellStatus answers cell_status: this member's view of its cell.
func (d *Daemon) cellStatus(c *server.Call) error {
	if d.node == nil {
		// As any daemon that knows no such operation answers, whatever
		// the args.
		return fmt.Errorf("%w: %v: this daemon is not a member of a cell", wire.ErrUnsupported, c.Op())
	}
	var req wire.CellQuery
	if err := c.Decode(&req); err != nil {
		return err
	}
	return c.Result(cellStatusFrame(d.node.Status()))
}

// cellStatusFrame is st as cell_status answers it.
func cellStatusFrame(st cell.Status) wire.CellStatus {
	out := wire.CellStatus{
		Self:         wire.Replica{Addr: st.Self.Addr, Fingerprint: st.Self.Fingerprint, Leader: st.Self == st.Leader},
		State:        st.State,
		Term:         st.Term,
		CommitIndex:  st.CommitIndex,
		AppliedIndex: st.AppliedIndex,
		LastIndex:    st.LastIndex,
		LastContact:  st.LastContact.Milliseconds(),
		Members:      replicas(st),
	}
	if st.LastContact < 0 {
		out.LastContact = -1
	}
	if st.Leader.Addr != "" {
		out.Leader = &wire.Replica{Addr: st.Leader.Addr, Fingerprint: st.Leader.Fingerprint, Leader: true}
	}
	if s := st.Stall; s != nil {
		out.Stall = &wire.CellStall{StalledMS: uint64(max(0, time.Since(s.Since).Milliseconds())), Index: s.Index, Group: s.Group, Cause: s.Cause}
	}
	for _, k := range st.KeyMismatches[:min(len(st.KeyMismatches), wire.MaxKeyMismatches)] {
		m := wire.CellKeyMismatch{Member: wire.Replica{Addr: k.By.Addr, Fingerprint: k.By.Fingerprint}, Addr: k.Addr, Presented: k.Actual}
		if !k.Named.IsZero() {
			m.Named = &k.Named
		}
		out.KeyMismatches = append(out.KeyMismatches, m)
	}
	// The first MaxCellGroups by name (the order Status gives), and how
	// many more: a member hosting thousands would otherwise answer more
	// than a frame holds, or a client would refuse it.
	listed := st.Groups[:min(len(st.Groups), wire.MaxCellGroups)]
	for _, g := range listed {
		out.Groups = append(out.Groups, wire.CellGroup{Group: g.ID, Name: g.Name, Epoch: g.Epoch, Last: g.Last, Members: uint64(g.Members)})
	}
	out.GroupsOmitted = uint64(len(st.Groups) - len(listed))
	return out
}

// cellChange answers cell_add and cell_remove. Only a member's key may
// change the cell: an operator runs them with a member daemon's key.
func (d *Daemon) cellChange(ctx context.Context, c *server.Call) error {
	// A daemon of no cell does not know the operation (PROTOCOL.md §13:
	// unsupported), whatever its args: a client asking it with args it
	// would refuse was told bad_request until session 20.
	if d.node == nil {
		return fmt.Errorf("%w: %v: this daemon is not a member of a cell", wire.ErrUnsupported, c.Op())
	}
	var req wire.CellMember
	if err := c.Decode(&req); err != nil {
		return err
	}
	// The node decides whether the caller's key may change the cell in
	// the configuration it makes the change in (AddMember).
	var err error
	if c.Op() == wire.OpCellAdd {
		err = d.node.AddMember(ctx, c.Peer(), cell.Peer{Addr: req.Addr, Fingerprint: req.Fingerprint})
	} else {
		err = d.node.RemoveMember(ctx, c.Peer(), req.Fingerprint)
	}
	if err != nil {
		return cellChangeError(c.Op(), err)
	}
	d.cfg.Logger.Info("cell membership changed", "op", c.Op().String(), "member", req.Fingerprint.Short(), "addr", req.Addr, "by", c.Peer().Short())
	return c.Result(wire.CellChanged{Members: replicas(d.node.Status())})
}

// cellChangeError is what a client is told of a cell change the node
// refused (err). Unavailable is marked unchanged (PROTOCOL.md §9, key 7)
// only where the node says nothing was proposed (cell.ErrUnchanged: this
// member does not lead, is closing, could not have its turn, or raft
// never took the change); not where raft may have taken it (the
// leadership changed as it was committed, the request's context ended):
// that change may have been made, and the client says so. Until session
// 20 no refusal was marked, and a change refused by a follower was as
// much in doubt as one lost with its leader.
func cellChangeError(op wire.Op, err error) error {
	var nl *cell.NotLeaderError
	switch {
	case errors.Is(err, cell.ErrNotAllowed):
		return fmt.Errorf("%v: %w: only the key of one of the cell's members may change it", op, wire.ErrUnauthorized)
	case errors.As(err, &nl):
		we := &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(cellRetry.Milliseconds()), Unchanged: errors.Is(err, cell.ErrUnchanged),
			Message: fmt.Sprintf("%v: this daemon does not lead the cell", op)}
		if nl.Leader.Addr != "" {
			we.Leader = leaderHint(nl.Leader)
		}
		return we
	case errors.Is(err, cell.ErrInvalidConfig):
		return fmt.Errorf("%v: %w: %v", op, wire.ErrBadRequest, err)
	}
	return &wire.Error{Code: wire.CodeUnavailable, Unchanged: errors.Is(err, cell.ErrUnchanged), Message: fmt.Sprintf("%v: %v", op, err)}
}

package cell

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Adding a member: a member joins the configuration as a nonvoter (raft's
// word), so the cell's majority is the same as before while the member
// is brought up to date (a snapshot, its groups' messages from a peer,
// then raft's log): were it a voter at once, the cell of three it joins
// would need three of four members to decide, and losing one more would
// stop it. The leader asks each nonvoter how far it got (a stream of kind
// kindProgress) every HeartbeatTimeout, and makes it a voter once it has
// applied every entry the cell had committed when the leader asked it the
// time before: it keeps pace with the cell, a heartbeat behind at most. A
// new leader carries on where the last left off: the nonvoter is in the
// configuration.

// progressTimeout bounds the leader's question to a member catching up.
const progressTimeout = 2 * time.Second

// progressSize is the answer of a progress stream: the member's applied
// index and last index, u64 little-endian each.
const progressSize = 16

// ErrCatchingUp: the member was added, and is still being brought up to
// date: it takes no part in the cell's decisions until it is (the leader
// makes it a voter then, by itself).
var ErrCatchingUp = errors.New("cell: the member is still catching up")

// behind is what the leader last learnt of a member catching up.
type behind struct {
	entries uint64 // the leader's last index less the member's applied index
	at      time.Time
	// commit is the leader's commit index when it asked: the member has
	// caught up once it applied that much by the next question.
	commit uint64
}

// AddMember adds p to the cell; p's daemon must have been started to join
// (Config.Join) with the cell's peers. p joins as a member that does not
// vote yet, and AddMember returns once that is committed: the leader
// brings p up to date (a snapshot, then raft's log; its groups' logs from
// a peer) while the cell goes on, and makes it a voter once it has caught
// up (Status shows when; AwaitVoter waits for it). Adding a member present
// changes nothing. Errors: a *NotLeaderError, ErrUnavailable (wrapped),
// ErrInvalidConfig for a malformed peer, or one at the address of another
// member (remove that one first). Like a send, a change may meet a
// leadership change (an election, a transfer) and is then answered
// ErrUnavailable, committed or not: the caller asks the leader again (the
// daemon's cell_add answers unavailable and the client asks again).
func (n *Node) AddMember(ctx context.Context, p Peer) error {
	if err := p.check(); err != nil {
		return err
	}
	if _, err := n.leading(); err != nil {
		return err
	}
	c := n.raft.GetConfiguration()
	if err := c.Error(); err != nil {
		return proposeError("add member", err)
	}
	conf := c.Configuration()
	id, addr := raft.ServerID(p.Fingerprint.String()), raft.ServerAddress(p.Addr)
	for _, s := range conf.Servers {
		switch {
		case s.ID == id && s.Address == addr:
			return nil
		case s.ID != id && s.Address == addr:
			// Raft refuses a configuration with two members at one
			// address; say which to remove first.
			holder := string(s.ID)
			if fp, err := wire.ParseFingerprint(holder); err == nil {
				holder = fp.String()
			}
			return fmt.Errorf("add member: %w: %s is the address of member %s: remove it first (huddle cell remove), then add %s",
				ErrInvalidConfig, addr, holder, p.Fingerprint.Short())
		}
	}
	// The transport must accept and dial the new member before raft
	// replicates to it.
	conf.Servers = append(conf.Servers, raft.Server{ID: id, Address: addr, Suffrage: raft.Nonvoter})
	n.configured(conf)
	return n.change(ctx, "add member", n.raft.AddNonvoter(id, addr, 0, n.timeout(ctx)))
}

// MayChange reports whether the key fp may have this member change the
// cell (the daemon's cell_add and cell_remove): it is a member's key, as
// the transport accepts (accepted), and raft's latest configuration, once
// it lists this member, lists fp too. On the leader the latest is the
// configuration last appended, before it is committed or applied: a member
// being removed loses the right as its removal is appended, where the
// transport refuses its key only once the removal is applied. A change
// the member asked for meanwhile was made: raft makes one at a time, in
// order, and the member's key could so add itself back.
func (n *Node) MayChange(fp wire.Fingerprint) bool {
	if !n.tr.Member(fp) {
		return false
	}
	r := n.running()
	if r == nil {
		return true // not started: the transport's keys are its flags
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	listed := func(fp wire.Fingerprint) bool {
		id := raft.ServerID(fp.String())
		return slices.ContainsFunc(servers, func(s raft.Server) bool { return s.ID == id })
	}
	return !listed(n.self.Fingerprint) || listed(fp)
}

// AwaitVoter waits until the member whose key is fp votes in the cell,
// as this member's configuration says. Errors: ErrCatchingUp (wrapped,
// with how far behind the leader last found it) if ctx ends first,
// ErrUnknownPeer if fp is no member, ErrClosed.
func (n *Node) AwaitVoter(ctx context.Context, fp wire.Fingerprint) error {
	r := n.running()
	if r == nil {
		return ErrClosed
	}
	id := raft.ServerID(fp.String())
	tick := time.NewTicker(n.cfg.HeartbeatTimeout / 3)
	defer tick.Stop()
	for {
		f := r.GetConfiguration()
		if err := f.Error(); err != nil {
			return proposeError("await voter", err)
		}
		found := false
		for _, s := range f.Configuration().Servers {
			if s.ID == id {
				if s.Suffrage == raft.Voter {
					return nil
				}
				found = true
			}
		}
		if !found {
			return fmt.Errorf("await voter %s: %w", fp.Short(), ErrUnknownPeer)
		}
		select {
		case <-tick.C:
		case <-n.closing:
			return ErrClosed
		case <-ctx.Done():
			if b, ok := n.behindOf(fp); ok {
				return fmt.Errorf("%w: %d raft entries behind the leader %v ago", ErrCatchingUp, b.entries, time.Since(b.at).Round(time.Millisecond))
			}
			return ErrCatchingUp
		}
	}
}

// RemoveMember removes the member whose key is fp from the cell. The
// leader asked to remove itself does not: it hands the leadership over to
// the most up-to-date voter first and answers a *NotLeaderError naming it,
// and the caller asks the new leader, which removes it as a follower (the
// client and the CLI do so by themselves). The cell so goes on without an
// election timeout's pause, and the removed daemon keeps its raft
// running, so that it can be added again. Errors: as AddMember's, and
// ErrUnavailable (wrapped) if no voter could take the leadership over.
func (n *Node) RemoveMember(ctx context.Context, fp wire.Fingerprint) error {
	if _, err := n.leading(); err != nil {
		return err
	}
	if fp == n.self.Fingerprint {
		return n.handOver()
	}
	return n.change(ctx, "remove member", n.raft.RemoveServer(raft.ServerID(fp.String()), 0, n.timeout(ctx)))
}

// handOver transfers the leadership to another voter (Handover, which
// returns once this node knows the next leader, or an ElectionTimeout
// passed) and returns a *NotLeaderError naming it (an empty one if it is
// not known yet).
func (n *Node) handOver() error {
	if err := n.Handover(); err != nil {
		return fmt.Errorf("remove member: %w: this member leads, and could not hand the leadership over before its removal: %v", ErrUnavailable, err)
	}
	if leader, ok := n.Leader(); ok && leader != n.self {
		return &NotLeaderError{Leader: leader}
	}
	return &NotLeaderError{}
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

// promoteLoop makes, on the leader, the members catching up voters once
// they have caught up, until the node closes.
func (n *Node) promoteLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.HeartbeatTimeout)
	defer tick.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-tick.C:
		}
		if _, err := n.leading(); err == nil {
			n.promote()
			continue
		}
		n.mu.Lock()
		n.behind = nil // a leader's, stale on a follower
		n.mu.Unlock()
	}
}

// promote asks each member that does not vote yet how far it got, and
// makes the first that caught up a voter (one change at a time: each is
// made against the configuration it was decided on).
func (n *Node) promote() {
	decided := n.confIndex.Load() // at most as new as the configuration read next
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	conf := f.Configuration()
	waiting := make(map[wire.Fingerprint]bool)
	for _, s := range conf.Servers {
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		fp, err := wire.ParseFingerprint(string(s.ID))
		if err != nil {
			continue
		}
		waiting[fp] = true
		ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
		applied, err := n.progress(ctx, string(s.Address))
		cancel()
		if err != nil {
			n.cfg.Logger.Debug("cell: could not ask a member catching up how far it got", "member", s.Address, "err", err)
			continue
		}
		last, commit := n.raft.LastIndex(), n.raft.CommitIndex()
		prev, asked := n.behindOf(fp)
		n.noteBehind(fp, behind{entries: last - min(applied, last), at: time.Now(), commit: commit})
		if !asked || applied < prev.commit {
			continue
		}
		// Only in the configuration it was decided on: the member may have
		// been removed while it was asked (confIndex).
		if err := n.raft.AddVoter(s.ID, s.Address, decided, n.cfg.RPCTimeout).Error(); err != nil {
			n.cfg.Logger.Warn("cell: could not make a member that caught up a voter; trying again", "member", s.Address, "err", err)
			return
		}
		n.cfg.Logger.Info("cell: a new member caught up and votes now", "member", s.Address, "applied", applied, "last", last)
		delete(waiting, fp)
		break
	}
	n.mu.Lock()
	for fp := range n.behind {
		if !waiting[fp] {
			delete(n.behind, fp)
		}
	}
	n.mu.Unlock()
}

func (n *Node) noteBehind(fp wire.Fingerprint, b behind) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.behind == nil {
		n.behind = make(map[wire.Fingerprint]behind)
	}
	n.behind[fp] = b
}

// behindOf returns what this node, leading, last learnt of member fp
// catching up.
func (n *Node) behindOf(fp wire.Fingerprint) (behind, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, ok := n.behind[fp]
	return b, ok
}

// progress asks the member at addr for its applied index.
func (n *Node) progress(ctx context.Context, addr string) (applied uint64, err error) {
	str, _, err := n.tr.open(ctx, addr, kindProgress)
	if err != nil {
		return 0, err
	}
	defer str.CancelRead(streamClosed)
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(d)
	}
	var b [progressSize]byte
	if _, err := io.ReadFull(str, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// serveProgress answers a progress stream: how far this member got.
func (n *Node) serveProgress(_ context.Context, _ wire.Fingerprint, str *quic.Stream) {
	var b [progressSize]byte
	if r := n.running(); r != nil {
		binary.LittleEndian.PutUint64(b[:8], r.AppliedIndex())
		binary.LittleEndian.PutUint64(b[8:], r.LastIndex())
	}
	str.SetWriteDeadline(time.Now().Add(progressTimeout))
	str.Write(b[:])
}

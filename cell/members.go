package cell

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
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
// kindProgress) a heartbeat interval after it becomes ready to lead and
// after each member it adds, every HeartbeatTimeout, and soon again after
// an answer that it had not caught up yet (promoteLoop), and makes it a
// voter once it has applied every entry the cell had committed when the
// leader asked it (a round trip behind), or when the leader asked it the
// time before (a round behind: under steady load a member's applied
// index trails the commit index by what is in flight): it keeps pace with
// the cell. A new leader carries on where the last left off: the
// nonvoter is in the configuration.
//
// Until session 17 only the question before counted, so the leader
// promoted no member before its second question, and a new leader began
// with a tick:
// a member added back became a voter 0.4-0.6 s after its addition on a
// steady leader, and ~2 s after it in internal/jepsen's cell of three
// whose leader was killed during the addition (its restart, an election,
// and two rounds of the new leader's, more if the restarted member was
// elected while catching up and handed over).

// progressTimeout bounds the leader's question to a member catching up.
const progressTimeout = 2 * time.Second

// progressSize is the answer of a progress stream: the member's applied
// index and last index, u64 little-endian each, then a byte of flags:
// progressStalled says its state machine cannot apply (stall.go); then
// the raft index its state machine last applied (fsm.applied, u64
// little-endian; 0 unknown). A member of before session 14 answers the
// first 16 bytes only, one of before this field the first 17.
const (
	progressSize    = 25
	progressStalled = 1
)

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

// ErrNotAllowed: the key that asked for a change of the cell (AddMember,
// RemoveMember) is not the key of one of its members.
var ErrNotAllowed = errors.New("cell: only the key of one of the cell's members may change it")

// AddMember adds p to the cell, asked by the key by (the daemon's cell_add:
// the caller's key; a member's own change: its key); p's daemon must have
// been started to join (Config.Join) with the cell's peers. p joins as a
// member that does not vote yet, and AddMember returns once that is
// committed: the leader brings p up to date (a snapshot, then raft's log;
// its groups' logs from a peer) while the cell goes on, and makes it a
// voter once it has caught up (Status shows when; AwaitVoter waits for
// it). Adding a member present changes nothing. Errors: ErrNotAllowed
// (wrapped) if by may not change the cell (mayChange), a *NotLeaderError,
// ErrUnavailable (wrapped), ErrInvalidConfig for a malformed peer, or one
// at the address of another member (remove that one first). Like a send,
// a change may meet a leadership change (an election, a transfer) and is
// then answered ErrUnavailable, committed or not: the caller asks the
// leader again (the daemon's cell_add answers unavailable and the client
// asks again).
func (n *Node) AddMember(ctx context.Context, by wire.Fingerprint, p Peer) error {
	const op = "add member"
	conf, index, unlock, err := n.decideChange(ctx, op, by)
	if err != nil {
		return err
	}
	if err := p.check(); err != nil {
		unlock()
		return err
	}
	id, addr := raft.ServerID(p.Fingerprint.String()), raft.ServerAddress(p.Addr)
	for _, s := range conf.Servers {
		switch {
		case s.ID == id && s.Address == addr:
			unlock()
			return nil
		case s.ID != id && s.Address == addr:
			unlock()
			// Raft refuses a configuration with two members at one
			// address; say which to remove first.
			holder := string(s.ID)
			if fp, err := wire.ParseFingerprint(holder); err == nil {
				holder = fp.String()
			}
			return fmt.Errorf("%s: %w: %s is the address of member %s: remove it first (huddle cell remove), then add %s",
				op, ErrInvalidConfig, addr, holder, p.Fingerprint.Short())
		}
	}
	known := slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return s.ID == id })
	if !known && len(conf.Servers) >= maxCellMembers {
		// A member moving to a new address is no new member: a full cell
		// may still change where one of its members is.
		unlock()
		return fmt.Errorf("%s: %w: the cell has %d members, the most it may have", op, ErrInvalidConfig, len(conf.Servers))
	}
	// The transport must accept and dial the new member before raft
	// replicates to it.
	conf = conf.Clone()
	conf.Servers = append(conf.Servers, raft.Server{ID: id, Address: addr, Suffrage: raft.Nonvoter})
	n.configured(conf)
	err = n.change(ctx, op, func() raft.IndexFuture { return n.raft.AddNonvoter(id, addr, index, n.timeout(ctx)) }, unlock)
	if err == nil {
		n.wakePromote() // a member added back may have caught up already
	}
	return err
}

// decideChange waits for this node's turn to change the cell (changing),
// and decides whether the key by may have it change the cell now
// (mayChange) and whether it leads. It returns the configuration the
// change is decided in, the raft index of its entry, which the caller
// passes raft as the change's condition, and what gives the turn back,
// which the caller calls once raft answered the change (change), or at
// once if it makes none. Errors: ErrNotAllowed, a *NotLeaderError,
// ErrUnavailable or ErrClosed (wrapped).
//
// The condition makes a change race-free: raft appends it only if its
// latest configuration is the one it was decided in. A removal appended
// after the decision (by a leader of before, or between the decision and
// raft's taking the change) makes raft refuse it (ErrUnavailable: the
// caller asks again, and is then refused ErrNotAllowed), where raft, which
// makes one change at a time in order, made it after the removal: a
// removed key could add itself back.
func (n *Node) decideChange(ctx context.Context, op string, by wire.Fingerprint) (conf raft.Configuration, index uint64, unlock func(), err error) {
	// A key refused now is refused at once, not once a change under way
	// (its removal, perhaps) is made.
	if _, _, err := n.mayChange(op, by); err != nil {
		return conf, 0, nil, unchanged(err)
	}
	if unlock, err = n.turn(ctx, op); err != nil {
		return conf, 0, nil, unchanged(err)
	}
	conf, index, err = n.mayChange(op, by)
	if err == nil {
		_, err = n.leading()
	}
	if err == nil && index == 0 {
		// Not on a leader that is ready (it applied every entry up to
		// its barrier, the bootstrap's configuration or a snapshot's
		// among them); raft takes index 0 for no condition.
		err = fmt.Errorf("%s: %w: this member has applied no configuration of the cell yet", op, ErrUnavailable)
	}
	if err == nil && n.beforeChange != nil {
		n.beforeChange()
	}
	if err != nil {
		unlock()
		return raft.Configuration{}, 0, nil, unchanged(err)
	}
	return conf, index, unlock, nil
}

// turn waits for this node's turn to change the cell (changing), and
// returns what gives it back. Errors: ErrClosed, ErrUnavailable (wrapped)
// if ctx ends first.
func (n *Node) turn(ctx context.Context, op string) (unlock func(), err error) {
	select {
	case n.changing <- struct{}{}:
		return sync.OnceFunc(func() { <-n.changing }), nil
	case <-n.closing:
		return nil, fmt.Errorf("%s: %w", op, ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w: another change of the cell is under way: %v", op, ErrUnavailable, context.Cause(ctx))
	}
}

// mayChange decides whether the key fp may have this member change the
// cell: it is a member's key, as the transport accepts, and both the
// configuration this member last applied and raft's latest (on the
// leader, the one last appended, before it is committed or applied) list
// fp, once they list this member. A member being removed so loses the
// right as its removal is appended, where the transport refuses its key
// only once the removal is applied. It returns the configuration last
// applied and its index (decided), in which the change is made or none.
// Errors: ErrNotAllowed (wrapped).
func (n *Node) mayChange(op string, fp wire.Fingerprint) (raft.Configuration, uint64, error) {
	refused := fmt.Errorf("%s: %w", op, ErrNotAllowed)
	if !n.tr.Member(fp) {
		return raft.Configuration{}, 0, refused
	}
	conf, index := n.lastDecided()
	r := n.running()
	if r == nil {
		return conf, index, nil // not started: the transport's keys are its flags
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, 0, proposeError(op, err)
	}
	for _, c := range []raft.Configuration{conf, f.Configuration()} {
		if listed(c, n.self.Fingerprint) && !listed(c, fp) {
			return raft.Configuration{}, 0, refused
		}
	}
	return conf, index, nil
}

// listed reports whether configuration c lists the key fp.
func listed(c raft.Configuration, fp wire.Fingerprint) bool {
	id := raft.ServerID(fp.String())
	return slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return s.ID == id })
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

// RemoveMember removes the member whose key is fp from the cell, asked by
// the key by (as AddMember's). The leader asked to remove itself does not:
// it hands the leadership over to the most up-to-date voter first and
// answers a *NotLeaderError naming it, and the caller asks the new
// leader, which removes it as a follower (the client and the CLI do so by
// themselves). The cell so goes on without an election timeout's pause,
// and the removed daemon keeps its raft running, so that it can be added
// again. Errors: as AddMember's, and ErrUnavailable (wrapped) if no voter
// could take the leadership over.
func (n *Node) RemoveMember(ctx context.Context, by, fp wire.Fingerprint) error {
	const op = "remove member"
	if fp == n.self.Fingerprint {
		// No change of the configuration: not one at a time with them. A
		// change whose answer waits (a state machine held behind a full
		// disk) would otherwise hold the hand-over back, the remedy.
		if _, _, err := n.mayChange(op, by); err != nil {
			return unchanged(err)
		}
		if _, err := n.leading(); err != nil && !errors.Is(err, errStalled) {
			return unchanged(err)
		}
		// The leadership handed over, or not: the configuration is as
		// it was either way, and the next leader is asked.
		return unchanged(n.handOver(ctx))
	}
	_, index, unlock, err := n.decideChange(ctx, op, by)
	if err != nil {
		return err
	}
	return n.change(ctx, op, func() raft.IndexFuture { return n.raft.RemoveServer(raft.ServerID(fp.String()), index, n.timeout(ctx)) }, unlock)
}

// handOver transfers the leadership to another voter (Handover, which
// returns once this node knows the next leader, or ctx ended, or
// RPCTimeout passed if ctx has no deadline: a daemon's request has none)
// and returns a *NotLeaderError naming it (an empty one if it is not
// known yet).
func (n *Node) handOver(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.timeout(ctx))
	defer cancel()
	if err := n.Handover(ctx); err != nil {
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

// change hands raft the change op (ask) and waits for raft's answer, or
// for ctx to end, and gives the turn to change the cell back (unlock) once
// raft answered: a change raft took is made or refused before the next is
// decided. Errors: as AddMember's; ErrClosed (wrapped) if the node closed
// before raft took the change, or raft shut down without answering.
func (n *Node) change(ctx context.Context, op string, ask func() raft.IndexFuture, unlock func()) error {
	f, err := hand(n, ask)
	if err != nil {
		n.reconfigure()
		unlock()
		return unchanged(fmt.Errorf("%s: %w", op, err)) // closing: raft was not handed it
	}
	done := make(chan error, 1)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := n.answer(f) // raft answers by the future's timeout, or as Close lets it
		if err != nil {
			// A member AddMember had the transport accept before the
			// change stays accepted only if raft's latest configuration
			// lists it (raft appended the change, and may commit it yet).
			n.reconfigure()
		}
		unlock()
		done <- err
	}()
	select {
	case err := <-done:
		if untaken(err) {
			return unchanged(changeError(op, err))
		}
		if err != nil {
			return changeError(op, err)
		}
		n.cfg.Logger.Info("cell: membership changed", "op", op)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w: %v", op, ErrUnavailable, context.Cause(ctx))
	}
}

// raftChanged is how raft (v1.7.2, nextConfiguration) refuses a change
// whose condition does not hold: its latest configuration is no longer
// the one the change was decided in. Raft has no sentinel for it.
const raftChanged = "configuration changed since"

// changeError is proposeError for a change of the cell: one raft refused
// because another came first is ErrUnavailable, to be asked again.
func changeError(op string, err error) error {
	if strings.Contains(err.Error(), raftChanged) {
		return fmt.Errorf("%s: %w: the cell's configuration changed since the change was decided (%v); ask again", op, ErrUnavailable, err)
	}
	return proposeError(op, err)
}

// promoteLoop makes, on the leader, the members catching up voters once
// they have caught up: it asks them a HeartbeatTimeout after its last
// round, a heartbeat interval after it is woken (wakePromote), and sooner
// after a round in which a member answered that it had not caught up yet,
// until the node closes.
//
// Why sooner: a member is made a voter at a question it answers caught up
// (promote), and the round after one it answered behind was the next
// tick, a HeartbeatTimeout later, though the member had most often caught
// up a moment after it answered: a new leader's first question comes a
// heartbeat interval after its barrier committed, and a member that
// answered before raft told it the barrier committed (raft says what it
// committed in its next AppendEntries, CommitTimeout later, later at load)
// applied it just after. Each such answer cost the promotion a
// HeartbeatTimeout (session 19: at a tenth of a CPU the first answer after
// an election was behind, and the member voted a HeartbeatTimeout later
// than it could have; each further one cost another). Now the next round
// comes a heartbeat interval after such a round, then two, four, and so on
// up to a HeartbeatTimeout: a member that caught up votes about a round
// trip after, and one long behind (a snapshot's catch-up) is asked three
// more times than before, then every HeartbeatTimeout as before. A member
// that did not answer (a dead host: its question took progressTimeout) or
// whose state machine stalled does not make the next round sooner: its
// answer would be no different.
func (n *Node) promoteLoop() {
	defer n.wg.Done()
	// A heartbeat interval: the time raft takes to tell a member what it
	// committed (a new leader's barrier, an addition), which it applies
	// only then.
	interval := n.cfg.HeartbeatTimeout / 10
	every := or(n.cfg.promoteEvery, n.cfg.HeartbeatTimeout)
	next := time.NewTimer(every)
	defer next.Stop()
	var soon time.Duration // the wait after a round with a member behind; 0 after one with none
	for {
		select {
		case <-n.closing:
			return
		case <-next.C:
		case <-n.promoteWake:
			soon = 0
			select {
			case <-n.closing:
				return
			case <-time.After(interval):
			}
		}
		again := false
		if _, err := n.leading(); err == nil {
			again = n.promote()
		} else {
			n.mu.Lock()
			n.behind = nil // a leader's, stale on a follower
			n.mu.Unlock()
		}
		wait := every
		if again {
			soon = min(max(interval, 2*soon), n.cfg.HeartbeatTimeout)
			wait = min(wait, soon)
		} else {
			soon = 0
		}
		next.Reset(wait) // go1.23: no stale tick is received after Reset
	}
}

// wakePromote has promoteLoop ask the members catching up now: this node
// became ready to lead, or added one.
func (n *Node) wakePromote() {
	select {
	case n.promoteWake <- struct{}{}:
	default: // a wake-up is pending
	}
}

// promote asks each member that does not vote yet how far it got, all at
// once, and makes the first (in the configuration's order) that caught up
// (above) a voter (one change at a time: each is made against the configuration it
// was decided on). Why at once: they were asked one after another, and one
// that did not answer (its host dead, or hung) held up each round, and the
// promotion of those after it, by progressTimeout (session 12's note). It
// reports whether a member that answered, its state machine not stalled,
// still does not vote after this round (promoteLoop asks again soon).
func (n *Node) promote() (again bool) {
	_, decided := n.lastDecided() // at most as new as the configuration read next
	if decided == 0 {
		// Raft takes index 0 for no condition, and would make a member
		// removed while it was asked a voter. A leader that promotes has
		// applied a configuration (its barrier applied the bootstrap's
		// entry, or every entry since the snapshot whose configuration it
		// restored or installed), so this is not reached; it stays so.
		return false
	}
	// Read before the questions: a member that answers it applied as
	// much is a round trip behind at most.
	commit := n.raft.CommitIndex()
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	type nonvoter struct {
		s       raft.Server
		fp      wire.Fingerprint
		applied uint64
		stalled bool
		err     error
	}
	var ns []nonvoter
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil {
			ns = append(ns, nonvoter{s: s, fp: fp})
		}
	}
	var wg sync.WaitGroup
	for i := range ns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
			defer cancel()
			ns[i].applied, _, ns[i].stalled, ns[i].err = n.progress(ctx, string(ns[i].s.Address))
		})
	}
	wg.Wait()
	last := n.raft.LastIndex()
	var next *nonvoter // the first that caught up
	for i := range ns {
		v := &ns[i]
		if v.err != nil {
			n.cfg.Logger.Debug("cell: could not ask a member catching up how far it got", "member", v.s.Address, "err", v.err)
			continue
		}
		prev, asked := n.behindOf(v.fp)
		n.noteBehind(v.fp, behind{entries: last - min(v.applied, last), at: time.Now(), commit: commit})
		if next == nil && (v.applied >= commit || asked && v.applied >= prev.commit) {
			next = v
			continue
		}
		again = again || !v.stalled
	}
	if n.cfg.promoteAnswered != nil {
		for i := range ns {
			v := &ns[i]
			n.cfg.promoteAnswered(v.fp, v.applied, commit, v == next, v.err)
		}
	}
	n.mu.Lock()
	for fp := range n.behind {
		if !slices.ContainsFunc(ns, func(v nonvoter) bool { return v.fp == fp }) {
			delete(n.behind, fp)
		}
	}
	n.mu.Unlock()
	if next == nil {
		return again
	}
	// Only in the configuration it was decided on: the member may have
	// been removed while it was asked (decided).
	unlock, err := n.turn(context.Background(), "promote")
	if err != nil {
		return false // closed
	}
	added, err := hand(n, func() raft.IndexFuture { return n.raft.AddVoter(next.s.ID, next.s.Address, decided, n.cfg.RPCTimeout) })
	if err == nil {
		err = n.answer(added)
	}
	unlock()
	if errors.Is(err, ErrClosed) {
		return false
	}
	if err != nil {
		n.cfg.Logger.Warn("cell: could not make a member that caught up a voter; trying again", "member", next.s.Address, "err", err)
		return true
	}
	n.cfg.Logger.Info("cell: a new member caught up and votes now", "member", next.s.Address, "applied", next.applied, "last", last)
	if n.cfg.promoted != nil {
		n.cfg.promoted(next.fp)
	}
	return again
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

// progress asks the member at addr for its applied index, the index its
// state machine last applied (0 from a member that does not say, or knows
// none since it restored a snapshot), and whether its state machine
// stalled (false from a member that does not say).
//
// A member killed and restarted does not end its old connections: its
// new process answers a packet of a connection it does not know with a
// stateless reset only if the packet is longer than 42 bytes (quic-go's
// MinStatelessResetSize). The question is padded past that (questionSize),
// so the reset ends the connection at once, and the next question dials
// anew. Before session 15 it was the kind byte alone (35 bytes with an
// ACK), and until the connection's idle timeout, 15 s, every question on
// it went unanswered: a stalled leader found no voter to hand the
// leadership to for 13 s after a leader kill (the restarted members'
// connections), and promote no member to make a voter. A question
// unanswered by its deadline still drops the connection (Transport.unanswered).
func (n *Node) progress(ctx context.Context, addr string) (applied, stateApplied uint64, stalled bool, err error) {
	str, conn, err := n.tr.open(ctx, addr, question(kindProgress))
	if err != nil {
		return 0, 0, false, err
	}
	defer str.CancelRead(streamClosed)
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(d)
	}
	var b [progressSize]byte
	if k, err := io.ReadFull(str, b[:]); err != nil && ((k != 16 && k != 17) || err != io.ErrUnexpectedEOF) {
		n.tr.unanswered(addr, conn, err)
		return 0, 0, false, err
	}
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[17:25]), b[16]&progressStalled != 0, nil
}

// serveProgress answers a progress stream: how far this member got, and
// whether its state machine stalled.
func (n *Node) serveProgress(_ context.Context, by wire.Fingerprint, str *quic.Stream) {
	if n.cfg.askedProgress != nil {
		n.cfg.askedProgress(by)
	}
	var b [progressSize]byte
	if r := n.running(); r != nil {
		binary.LittleEndian.PutUint64(b[:8], r.AppliedIndex())
		binary.LittleEndian.PutUint64(b[8:16], r.LastIndex())
	}
	if n.fsm.stalledAt.Load() != 0 {
		b[16] |= progressStalled
	}
	binary.LittleEndian.PutUint64(b[17:25], n.fsm.applied.Load())
	str.SetWriteDeadline(time.Now().Add(progressTimeout))
	str.Write(b[:])
}

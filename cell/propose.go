package cell

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// proposer is a group's sequencing step on the leader: it stamps sends
// before they go into raft, from where the log will stand once what it
// proposed before is applied.
//
// It is valid for one raft term: the leader's loop runs a barrier when the
// node becomes leader (so the log holds everything earlier terms
// committed), and the first send of the term starts the sequencer at the
// log's tail. Within the term, the leader alone appends, in the order it
// proposed, so each stamp follows on from the one before. Each send
// carries its term; an entry raft appended in another term (the leadership
// ended between stamping and appending) is refused by every replica
// (errStale), never applied from a stale tail.
//
// Sends stamped while maxProposing of the group's raft entries are in
// flight are gathered into one proposal, handed to raft as one entry when
// one of those is answered: concurrent sends then cost raft one entry (one
// log record, one AppendEntries item, one apply) rather than one each. A
// lone send goes to raft at once.
//
// Duplicates are found in the log (applied sends) and among the sends in
// flight (proposed, not yet applied): a retry of a message in flight waits
// for the original's outcome and gets its ack.
//
// Raft may refuse a proposal without the term changing (one handed to it
// during a leadership transfer that then fails), and every replica
// refuses one that does not follow on: what the sequencer stamped past
// such a hole cannot be applied. It starts again from the log's tail
// (lost, resync), but only once raft has answered every proposal in
// flight, since those stamped before the hole may still be applied;
// meanwhile sends of new messages are refused ErrUnavailable
// (errResyncing), and their senders retry with the same IDs; a send that
// only repeats messages applied or in flight still gets their acks.
type proposer struct {
	term     uint64 // the term seq stands for; 0: none yet
	seq      store.Sequencer
	stale    bool                 // seq is past a proposal of term that will not be applied: resync
	inflight map[[16]byte]pending // the sends in flight by ID
	enc      *encoder
	// open gathers what was stamped while maxProposing entries were in
	// flight; nil if nothing waits. proposing counts the group's entries
	// handed to raft and not answered yet.
	open      *proposal
	proposing int
	// spare is the entries slice of the last proposal handed to raft,
	// emptied, for the next; sized is how many sends that one carried.
	spare []store.Entry
	sized int
	// warnedClock says the leader's clock was found behind the group's
	// latest timestamp in this term, and said so.
	warnedClock bool
}

// clockBehind is how far behind the group's latest timestamp the leader's
// clock may be before it says so: clocks of one network kept by NTP agree
// within milliseconds.
const clockBehind = time.Second

// latestStamp returns the latest timestamp of group g: its log's tail, or
// the last send the leader stamped in term, if later.
func (g *groupState) latestStamp(term uint64) int64 {
	_, t := g.log.Tail()
	g.propMu.Lock()
	defer g.propMu.Unlock()
	if g.prop.term == term {
		t = max(t, g.prop.seq.LastTime)
	}
	return t
}

// pending is a send in flight: its proposal, and its place there.
type pending struct {
	p *proposal
	i int
}

// proposal is one raft entry of sends: their entries until it is handed
// to raft, then its outcome for its senders (err) and the entries' acks,
// valid once done or expired is closed and err is nil.
//
// The outcome is decided once (decide): by raft's verdict (done is then
// closed), or, if none came within Config.CommitWait, as ErrUnavailable
// (expired is closed, and done once raft's verdict comes, if ever). A
// leader keeps its lease while its followers answer it, even if they
// cannot store what it sends (full disks), and its own state machine
// retries an append its disk refuses: either way raft's verdict may not
// come for as long as that lasts, and the senders must not wait for it.
type proposal struct {
	term    uint64
	entries []store.Entry // stamped, in order; bodies alias the senders' requests until handed
	size    int           // commandSize of entries
	done    chan struct{}
	expired chan struct{}
	timer   *time.Timer // fires expire after Config.CommitWait
	mu      sync.Mutex  // guards decided, and err and answers once the proposal is handed to raft
	decided bool
	err     error
	// ids and acks are the entries' IDs and acks, in the order stamped.
	ids  [][16]byte
	acks []store.Ack
	// answers are the sends to answer once raft has applied the entry,
	// on the goroutine that learns it, before done is closed.
	answers []answer
}

// answer is a send answered as soon as its proposal is applied: its acks
// and the caller's function that writes them: fn (SendAnswered), called
// if the proposal is applied, or later (SendLater), called whatever
// becomes of it.
type answer struct {
	fn    func([]store.Ack)
	later func([]store.Ack, error)
	acks  []store.Ack
}

// How many raft entries each group keeps in flight before it gathers sends
// into the next, and how large a gathered entry grows: one that reaches
// either limit is handed to raft at once. Four in flight keep raft's
// pipeline full (the leader's log write, AppendEntries to each follower,
// the apply overlap); maxProposalMessages is the most a send command
// carries.
const (
	maxProposing        = 4
	maxProposalMessages = maxCommandMessages
	maxProposalBytes    = 256 << 10
)

// Send proposes entries to group id's log and returns one ack per entry,
// appended to acks, once a majority of the cell holds them (the raft entry
// is committed) and this node has applied it. It stamps the entries
// (reordering them, see store.Sequencer.Stamp). An entry whose ID the log
// remembers, or a send in flight carries, gets the original's ack with
// Duplicate set.
//
// Errors: a *NotLeaderError (this node does not lead the cell: send to the
// leader it names), ErrNoGroup, ErrUnavailable (wrapped: the leadership
// ended or the cell lost its majority while the send was in flight; its
// outcome is unknown, and a retry with the same IDs is safe), ErrClosed.
func (n *Node) Send(ctx context.Context, id wire.UUID, entries []store.Entry, acks []store.Ack) ([]store.Ack, error) {
	return n.SendAnswered(ctx, id, entries, acks, nil)
}

// SendAnswered is Send, and, if fn is not nil and the send's entries all
// go to raft in one entry (none repeats a send still in flight), it calls
// fn with the acks Send returns as soon as that entry is applied, before
// Send returns. fn runs on the goroutine that learns raft's verdict, one
// call after another for every send the entry carries, so it must not
// block: it is where the replies of the sends an entry gathered are
// written together, and so leave together (one packet per connection
// rather than one per reply). fn must not keep the acks.
func (n *Node) SendAnswered(ctx context.Context, id wire.UUID, entries []store.Entry, acks []store.Ack, fn func([]store.Ack)) ([]store.Ack, error) {
	term, err := n.leading()
	if err != nil {
		return acks, err
	}
	g := n.fsm.group(id)
	if g == nil {
		return acks, fmt.Errorf("send to %s: %w", id, ErrNoGroup)
	}
	start := len(acks)
	prop, waits, _, err := n.stamp(g, term, entries, &acks, answer{fn: fn}, store.After{})
	if err != nil {
		return acks[:start], err
	}
	return n.wait(ctx, prop, waits, acks, start)
}

// SendLater is Send for a caller that does not wait. If the send's entries
// all go to raft in one entry (none repeats a send still in flight), it
// returns true at once, and done is called once, on the goroutine that
// learns raft's verdict, with the acks Send would return (appended to
// acks) or its error; otherwise it returns false with what Send would
// return, and done is not called. done runs one call after another for
// every send an entry carries, so it must not block (see SendAnswered);
// it may keep the acks. The entries' bodies must stay valid until done
// is called.
func (n *Node) SendLater(ctx context.Context, id wire.UUID, entries []store.Entry, acks []store.Ack, done func([]store.Ack, error)) (bool, []store.Ack, error) {
	return n.SendLaterAfter(ctx, id, store.After{}, entries, acks, done)
}

// SendLaterAfter is SendLater for entries sent again after an earlier try
// left them in doubt, the group's log then standing at after (a send's
// after, PROTOCOL.md §8.5): if the leader's log may have forgotten an
// earlier copy of an entry it would stamp (store.After.Forgets), it
// refuses the send with store.ErrForgotten, and ErrUnchanged: nothing
// was proposed.
func (n *Node) SendLaterAfter(ctx context.Context, id wire.UUID, after store.After, entries []store.Entry, acks []store.Ack, done func([]store.Ack, error)) (bool, []store.Ack, error) {
	term, err := n.leading()
	if err != nil {
		return false, acks, err
	}
	g := n.fsm.group(id)
	if g == nil {
		return false, acks, fmt.Errorf("send to %s: %w", id, ErrNoGroup)
	}
	start := len(acks)
	prop, waits, later, err := n.stamp(g, term, entries, &acks, answer{later: done}, after)
	switch {
	case err != nil:
		return false, acks[:start], err
	case later:
		return true, nil, nil
	}
	acks, err = n.wait(ctx, prop, waits, acks, start)
	return false, acks, err
}

// wait waits for a send's proposal and for the sends in flight its
// duplicates repeat, and returns its acks (from start in acks).
func (n *Node) wait(ctx context.Context, prop *proposal, waits []wait, acks []store.Ack, start int) ([]store.Ack, error) {
	if prop != nil {
		if err := prop.outcome(nil); err != nil {
			return acks[:start], err
		}
	}
	for i, w := range waits {
		if w.p == nil {
			continue
		}
		if err := w.p.outcome(ctx.Done()); err != nil {
			if ctx.Err() != nil {
				return acks[:start], fmt.Errorf("send: %w: %v", ErrUnavailable, context.Cause(ctx))
			}
			return acks[:start], err
		}
		a := w.p.acks[w.i]
		a.Duplicate = true
		acks[start+i] = a
	}
	return acks, nil
}

// wait is an entry that repeats the ID of a send in flight: its ack is
// that send's, once it is done.
type wait pending

// stamp runs the sequencing step for one send under the group's proposer
// lock, and adds the stamped entries to the group's open proposal, which
// goes to raft at once unless maxProposing are in flight. It returns the
// proposal, if any entry is new, and, per ack (the entries' order before
// stamping), the send in flight a duplicate waits for. The caller waits
// for the proposal to be done (which ends its hold on entries' bodies).
// If ans has a function and no entry waits for another send, the proposal
// answers the send with it (see answer), and stamp reports that it will.
// A send again after after (SendLaterAfter) that the log may have
// forgotten an earlier copy of is refused: store.ErrForgotten.
func (n *Node) stamp(g *groupState, term uint64, entries []store.Entry, acks *[]store.Ack, ans answer, after store.After) (*proposal, []wait, bool, error) {
	g.propMu.Lock()
	defer g.propMu.Unlock()
	p := &g.prop
	if p.term != term {
		p.warnedClock = false
		if p.open != nil {
			// Stamped by a leadership that has ended: its senders retry.
			n.fail(p, p.open, fmt.Errorf("send: %w: the cell's leadership changed while it was in flight; retry with the same IDs", ErrUnavailable))
		}
		p.seq.Last, p.seq.LastTime = g.log.Tail()
		p.stale = false
		p.inflight = make(map[[16]byte]pending)
		p.term = term
		if p.enc == nil {
			p.enc = newEncoder()
		}
	}
	start := len(*acks)
	*acks = g.log.Lookup(entries, *acks)
	batchAcks := (*acks)[start:]
	var waits []wait // by ack: Stamp reorders the entries, not the acks
	for i := range entries {
		if batchAcks[i].Duplicate {
			continue
		}
		if w, ok := p.inflight[entries[i].ID]; ok {
			if waits == nil {
				waits = make([]wait, len(entries))
			}
			waits[i] = wait(w)
			batchAcks[i].Duplicate = true // not stamped again; filled in once w is done
			continue
		}
		if p.stale {
			// A new message, which the sequencer cannot stamp until it
			// re-syncs. Retries of messages applied or in flight are
			// still answered with the original's ack (above): until
			// session 16 the refusal came before the lookup, and a
			// sender whose ack was lost got unavailable until the
			// re-sync.
			return nil, nil, false, errResyncing
		}
	}
	// The log remembers what it applied, p.inflight (marked above) what
	// is proposed and not yet applied: what neither holds was not stored
	// after after, unless the log forgot it.
	if after.Forgets(g.log, batchAcks) {
		return nil, nil, false, fmt.Errorf("send: %w (%w)", store.ErrForgotten, ErrUnchanged)
	}
	now := n.cfg.Now().UnixNano()
	if behind := time.Duration(p.seq.LastTime - now); behind > clockBehind && !p.warnedClock {
		p.warnedClock = true
		n.cfg.Logger.Warn("cell: this member's clock is behind the group's latest timestamp (an earlier leader's clock, or its own before it stepped back): "+
			"it stamps messages just after that one until its clock catches up, so they are dated too early for time queries (fetch --since); "+
			"keep the members' clocks in sync (NTP)", "group", g.spec.Name, "behind", behind.Round(time.Millisecond))
	}
	k := p.seq.Stamp(now, entries, batchAcks)
	if k == 0 {
		return nil, waits, false, nil
	}
	size := commandSize(entries[:k])
	if o := p.open; o != nil && (len(o.entries)+k > maxProposalMessages || o.size+size > maxProposalBytes) {
		n.propose1(g, p) // full: it goes now, whatever is in flight
		if p.stale {
			return nil, nil, false, errResyncing // raft refused it: this send was stamped past it
		}
	}
	prop := p.open
	if prop == nil {
		// Sized like the last one: a proposal gathers about as many
		// sends as the one before it.
		room := max(p.sized, k)
		prop = &proposal{term: term, done: make(chan struct{}), expired: make(chan struct{}), size: commandSize(nil), entries: p.spare,
			ids: make([][16]byte, 0, room), acks: make([]store.Ack, 0, room)}
		prop.timer = n.timers.after(n.cfg.CommitWait, func() { n.expire(g, prop) })
		if ans.fn != nil || ans.later != nil {
			prop.answers = make([]answer, 0, room)
		}
		p.spare = nil
		p.open = prop
	}
	prop.entries = append(prop.entries, entries[:k]...)
	prop.size += size - commandSize(nil)
	for i := range entries[:k] {
		p.inflight[entries[i].ID] = pending{prop, len(prop.acks)}
		prop.ids = append(prop.ids, entries[i].ID)
		prop.acks = append(prop.acks, store.Ack{Seq: entries[i].Seq, Time: entries[i].Time})
	}
	answered := (ans.fn != nil || ans.later != nil) && waits == nil
	if answered {
		ans.acks = batchAcks
		prop.answers = append(prop.answers, ans)
	}
	if p.proposing < maxProposing {
		n.propose1(g, p)
	}
	return prop, waits, answered, nil
}

// propose1 hands the group's open proposal to raft as one entry. If raft
// cannot take it (the node is closing), the proposal fails. g.propMu is
// held.
func (n *Node) propose1(g *groupState, p *proposer) {
	prop := p.open
	p.open = nil
	data := p.enc.encodeSend(make([]byte, 0, prop.size), g.spec.ID, prop.term, prop.entries)
	clear(prop.entries) // the senders' bodies are copied into data
	p.spare, p.sized = prop.entries[:0], len(prop.entries)
	prop.entries = nil
	f, err := n.apply(data)
	if err != nil {
		n.fail(p, prop, proposeError("send", err))
		n.lost(g, p, prop)
		return
	}
	p.proposing++
	n.wg.Add(1)
	go n.await(g, prop, f)
}

// fail ends prop, which raft never took, with err. g.propMu is held.
func (n *Node) fail(p *proposer, prop *proposal, err error) {
	if p.open == prop {
		p.open = nil
	}
	prop.timer.Stop()
	clear(prop.entries)
	prop.entries = nil
	if answers, ok := prop.decide(err); ok {
		answerAll(answers, err)
	}
	for _, id := range prop.ids {
		if p.inflight[id].p == prop {
			delete(p.inflight, id)
		}
	}
	close(prop.done)
}

// lost notes that prop, stamped by the proposer's sequencer, will not be
// applied: raft refused it, or every replica did (errGap, errStale). In
// prop's own term, the sequencer, which stamped past it, no longer follows
// on from the log: the proposal still gathering sends, stamped after it,
// fails (its senders retry), and the sequencer starts again from the
// log's tail once raft has answered every proposal in flight (resync).
// Those still in flight were stamped before the hole, and may be applied,
// or after it, and are refused by every replica: either way the tail is
// final only once raft answered them. Re-reading it earlier would stamp
// sends that an entry stamped before the hole, applied later, collides
// with. Another term's proposal changes nothing: the term's first send
// read the tail after the term's barrier. g.propMu is held.
func (n *Node) lost(g *groupState, p *proposer, prop *proposal) {
	if prop.term != p.term {
		return
	}
	p.stale = true
	if p.open != nil {
		n.fail(p, p.open, errResyncing)
	}
	n.resync(g, p)
}

// resync starts a stale sequencer again from the log's tail once raft has
// answered every proposal it handed over (see lost): raft answers an
// entry after applying it, so the tail then holds all of them that were
// applied. g.propMu is held.
func (n *Node) resync(g *groupState, p *proposer) {
	if !p.stale || p.proposing > 0 {
		return
	}
	p.seq.Last, p.seq.LastTime = g.log.Tail()
	p.stale = false
}

// errResyncing is a send's error while its group's sequencer waits to
// start again after a proposal of its leadership was refused (lost).
var errResyncing = fmt.Errorf("send: %w: an earlier send of this leadership was refused, and the leader waits for the sends in flight before it stamps again; retry with the same IDs", ErrUnavailable)

// expire decides prop's outcome as ErrUnavailable if raft has given no
// verdict on it within Config.CommitWait: its senders are answered (the
// retries of its IDs in flight too), while the entry stays raft's to
// commit or not. A proposal still gathering sends goes to raft first, so
// that no later one is stamped past it and none joins it once decided.
func (n *Node) expire(g *groupState, prop *proposal) {
	g.propMu.Lock()
	p := &g.prop
	if p.open == prop {
		n.propose1(g, p)
	}
	err := fmt.Errorf("send: %w: the cell did not commit it within %v (no majority can store it now: full disks?); its outcome is unknown: retry with the same IDs",
		ErrUnavailable, n.cfg.CommitWait)
	answers, ok := prop.decide(err)
	g.propMu.Unlock()
	if !ok {
		return
	}
	n.cfg.Logger.Warn("cell: sends not committed in time, answered unavailable", "group", g.spec.Name, "messages", len(prop.ids), "after", n.cfg.CommitWait)
	answerAll(answers, err)
	close(prop.expired)
}

// decide settles prop's outcome as err (nil: applied), unless it was
// settled already, and returns the answers to give; ok is false if it was.
func (prop *proposal) decide(err error) (answers []answer, ok bool) {
	prop.mu.Lock()
	defer prop.mu.Unlock()
	if prop.decided {
		return nil, false
	}
	prop.decided, prop.err = true, err
	answers, prop.answers = prop.answers, nil
	return answers, true
}

// outcome waits until prop's outcome is decided (or stop is closed) and
// returns it.
func (prop *proposal) outcome(stop <-chan struct{}) error {
	select {
	case <-prop.done:
	case <-prop.expired:
	case <-stop:
		return errStopped
	}
	prop.mu.Lock()
	defer prop.mu.Unlock()
	return prop.err
}

// errStopped is outcome's error when its caller stopped waiting.
var errStopped = errors.New("stopped waiting")

// answerAll answers the sends of a proposal: with their acks if err is
// nil, else those that asked to be told of a failure (later) with err.
func answerAll(answers []answer, err error) {
	for _, a := range answers {
		switch {
		case a.later != nil && err != nil:
			a.later(nil, err)
		case a.later != nil:
			a.later(a.acks, nil)
		case err == nil:
			a.fn(a.acks)
		}
	}
	clear(answers)
}

// commandSize bounds a send command's size from above.
func commandSize(entries []store.Entry) int {
	n := 64
	for i := range entries {
		n += 48 + len(entries[i].From.Name) + len(entries[i].Body)
	}
	return n
}

// await waits for raft's verdict on a proposal, forgets its IDs, hands
// the group's open proposal to raft if one waits, and then answers the
// proposal's senders: the next entry is on its way meanwhile.
//
// It takes the verdict through answer, which ends with ErrClosed once raft
// has shut down without giving one: raft (v1.7.2) drops the entries still
// queued for its state machine as it shuts down, which Close lets it apply
// for settleWait at most. await waited for raft alone until session 16, and
// Close, which waits for it, never returned after a send held that long.
func (n *Node) await(g *groupState, prop *proposal, f raft.ApplyFuture) {
	defer n.wg.Done()
	err := n.answer(f)
	if err == nil {
		if rerr, ok := f.Response().(error); ok {
			err = rerr
		}
	}
	g.propMu.Lock()
	p := &g.prop
	for _, id := range prop.ids {
		if p.inflight[id].p == prop {
			delete(p.inflight, id)
		}
	}
	p.proposing--
	if err != nil {
		n.lost(g, p, prop)
	} else {
		n.resync(g, p) // if the hole came before this one's answer
	}
	if p.open != nil && p.proposing < maxProposing {
		n.propose1(g, p)
	}
	g.propMu.Unlock()
	// A retry of an ID forgotten just now finds it in the log if the
	// entry was applied: raft's verdict comes after the apply.
	prop.timer.Stop()
	err = proposeError("send", err)
	if answers, ok := prop.decide(err); ok {
		answerAll(answers, err)
	}
	close(prop.done)
}

// proposeError is what a proposer is told of raft's verdict.
func proposeError(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, errStale):
		return fmt.Errorf("%s: %w: the cell's leadership changed while it was in flight (%v); retry with the same IDs", op, ErrUnavailable, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Raft's queue stayed full for CommitWait (apply): its main loop
		// is blocked, behind a state machine on a disk that hangs.
		return fmt.Errorf("%s: %w: raft did not take it within the commit wait (its loop is blocked: a disk that does not answer?); it was not stored", op, ErrUnavailable)
	case errors.Is(err, errGap):
		// Every replica refused it: stamped past a send raft refused
		// (lost), before the leader knew.
		return fmt.Errorf("%s: %w: it was stamped past a send that was refused (%v); retry with the same IDs", op, ErrUnavailable, err)
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrClosed):
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case errors.Is(err, errNoGroup):
		return fmt.Errorf("%s: %w", op, ErrNoGroup)
	}
	return fmt.Errorf("%s: %w", op, err)
}

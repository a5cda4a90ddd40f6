package cell

import (
	"context"
	"errors"
	"fmt"

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
// Duplicates are found in the log (applied sends) and among the sends in
// flight (proposed, not yet applied): a retry of a message in flight waits
// for the original's outcome and gets its ack.
type proposer struct {
	term     uint64 // the term seq stands for; 0: none yet
	seq      store.Sequencer
	inflight map[[16]byte]*proposal
	enc      *encoder
}

// proposal is one send in flight: raft's future, and its entries' acks,
// valid once done is closed and err is nil.
type proposal struct {
	done chan struct{}
	err  error
	acks map[[16]byte]store.Ack
}

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
	term, err := n.leading()
	if err != nil {
		return acks, err
	}
	g := n.fsm.group(id)
	if g == nil {
		return acks, fmt.Errorf("send to %s: %w", id, ErrNoGroup)
	}
	start := len(acks)
	prop, waits, err := n.stamp(g, term, entries, &acks)
	if err != nil {
		return acks[:start], err
	}
	if prop != nil {
		<-prop.done
		if prop.err != nil {
			return acks[:start], prop.err
		}
	}
	for i, w := range waits {
		if w.p == nil {
			continue
		}
		select {
		case <-w.p.done:
		case <-ctx.Done():
			return acks[:start], fmt.Errorf("send: %w: %v", ErrUnavailable, context.Cause(ctx))
		}
		if w.p.err != nil {
			return acks[:start], w.p.err
		}
		a := w.p.acks[w.id]
		a.Duplicate = true
		acks[start+i] = a
	}
	return acks, nil
}

// wait is an entry that repeats the ID of a send in flight: its ack is
// that send's, once it is done.
type wait struct {
	p  *proposal
	id [16]byte
}

// stamp runs the sequencing step for one send under the group's proposer
// lock and hands the stamped entries to raft, in stamping order. It
// returns the proposal, if any entry is new, and, per ack (the entries'
// order before stamping), the send in flight a duplicate waits for.
func (n *Node) stamp(g *groupState, term uint64, entries []store.Entry, acks *[]store.Ack) (*proposal, []wait, error) {
	g.propMu.Lock()
	defer g.propMu.Unlock()
	p := &g.prop
	if p.term != term {
		p.seq.Last, p.seq.LastTime = g.log.Tail()
		p.inflight = make(map[[16]byte]*proposal)
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
		if w := p.inflight[entries[i].ID]; w != nil {
			if waits == nil {
				waits = make([]wait, len(entries))
			}
			waits[i] = wait{p: w, id: entries[i].ID}
			batchAcks[i].Duplicate = true // not stamped again; filled in once w is done
		}
	}
	k := p.seq.Stamp(n.cfg.Now().UnixNano(), entries, batchAcks)
	if k == 0 {
		return nil, waits, nil
	}
	data := p.enc.encodeSend(make([]byte, 0, commandSize(entries[:k])), g.spec.ID, term, entries[:k])
	prop := &proposal{done: make(chan struct{}), acks: make(map[[16]byte]store.Ack, k)}
	for i := range entries[:k] {
		a := store.Ack{Seq: entries[i].Seq, Time: entries[i].Time}
		prop.acks[entries[i].ID] = a
		p.inflight[entries[i].ID] = prop
	}
	f, err := n.apply(data)
	if err != nil {
		for i := range entries[:k] {
			delete(p.inflight, entries[i].ID)
		}
		return nil, nil, err
	}
	n.wg.Add(1)
	go n.await(g, prop, f)
	return prop, waits, nil
}

// commandSize bounds a send command's size from above.
func commandSize(entries []store.Entry) int {
	n := 64
	for i := range entries {
		n += 48 + len(entries[i].From.Name) + len(entries[i].Body)
	}
	return n
}

// await waits for raft's verdict on a proposal, then forgets its IDs.
func (n *Node) await(g *groupState, prop *proposal, f raft.ApplyFuture) {
	defer n.wg.Done()
	err := f.Error()
	n.futures.Add(-1)
	if err == nil {
		if rerr, ok := f.Response().(error); ok {
			err = rerr
		}
	}
	prop.err = proposeError("send", err)
	close(prop.done)
	g.propMu.Lock()
	for id := range prop.acks {
		if g.prop.inflight[id] == prop {
			delete(g.prop.inflight, id)
		}
	}
	g.propMu.Unlock()
}

// proposeError is what a proposer is told of raft's verdict.
func proposeError(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, errStale):
		return fmt.Errorf("%s: %w: the cell's leadership changed while it was in flight (%v); retry with the same IDs", op, ErrUnavailable, err)
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, ErrClosed):
		return fmt.Errorf("%s: %w", op, ErrClosed)
	case errors.Is(err, errNoGroup):
		return fmt.Errorf("%s: %w", op, ErrNoGroup)
	}
	return fmt.Errorf("%s: %w", op, err)
}

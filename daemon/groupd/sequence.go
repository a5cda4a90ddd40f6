package groupd

import "github.com/huddle-chat/huddle/store"

// append is where a send's messages get their sequence numbers and
// timestamps, and are stored. Under g.seqMu, one batch at a time: the log
// says which of the batch's IDs it already holds, a store.Sequencer
// standing at the log's tail stamps the others at one reading of the
// daemon's clock, and the log stores exactly those stamps. The stamps are
// decided here and only here; a replica that is handed the stamped batch
// stores the same messages.
//
// It appends one ack per entry of batch to acks, in order, and reorders
// batch (see store.Sequencer.Stamp). On error it returns acks unchanged,
// and nothing was stored: store.ErrForgotten if the batch is sent again
// after a (a send's after) and the log may have forgotten an earlier copy
// of a message it would store (store.After.Forgets).
func (g *group) append(batch []store.Entry, acks []store.Ack, after store.After) ([]store.Ack, error) {
	g.seqMu.Lock()
	defer g.seqMu.Unlock()
	start := len(acks)
	acks = g.log.Lookup(batch, acks)
	if after.Forgets(g.log, acks[start:]) {
		return acks[:start], store.ErrForgotten
	}
	g.seq.Last, g.seq.LastTime = g.log.Tail()
	n := g.seq.Stamp(g.now().UnixNano(), batch, acks[start:])
	if n > 0 {
		if err := g.log.Append(batch[:n]); err != nil {
			return acks[:start], err
		}
		g.changed()
	}
	if dups := len(batch) - n; dups > 0 {
		g.duplicates.Add(uint64(dups))
	}
	return acks, nil
}

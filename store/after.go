package store

import "errors"

// ErrForgotten refuses a batch sent again after an earlier try left it in
// doubt, whose earlier copy the dedup window may have forgotten (After):
// stored now, a message might be stored twice. Nothing was stored.
var ErrForgotten = errors.New("store: the dedup window may have forgotten an earlier copy")

// After is where a sender knew a log to stand before it first sent
// messages it now sends again (a send's after and after_epoch, PROTOCOL.md
// §8.5): any of them stored was stored after sequence number Seq of epoch
// Epoch. Epoch 0: not said.
type After struct {
	Epoch, Seq uint64
}

// Remembering is what Forgets asks of a log: store.Log and DiskLog are.
type Remembering interface {
	Epoch() uint64
	Remembers(after uint64) bool
}

// Forgets reports whether storing the entries of a batch that acks (as
// Lookup gave them) do not mark duplicate might store a second copy: the
// log is of a's epoch, and its dedup window no longer remembers every
// message stored after a.Seq, so an ID it did not find may have been
// stored and forgotten since. A log of another epoch lost the history
// the earlier try was stored in, if it was: none of it repeats there.
func (a After) Forgets(l Remembering, acks []Ack) bool {
	if a.Epoch == 0 || a.Epoch != l.Epoch() {
		return false
	}
	for _, k := range acks {
		if !k.Duplicate {
			return !l.Remembers(a.Seq)
		}
	}
	return false // every one a duplicate: acknowledged as such
}

package client

import (
	"errors"
	"sync"

	"github.com/huddle-chat/huddle/wire"
)

// maxDoubts bounds how many message IDs a handle remembers in doubt (the
// group's dedup window: a message retried past it may be stored twice
// anyway). Past it, the oldest is forgotten.
const maxDoubts = 65536

// doubts are the IDs of messages whose send on a handle ended in doubt
// (ErrInDoubt) and that no acknowledgement has settled since. A later
// send of one of them that fails fails in doubt too, whatever it was
// told: a refusal of the retry (unchanged, not_member, rate_limited...)
// says what this request did, not what the one in doubt did, which may
// have stored the message. Until session 19 (H) the retry's refusal was
// its whole error, and huddle chat, huddle web's page and a program that
// retried a send in doubt as README says reported "not sent" of a message
// the daemon may have stored.
type doubts struct {
	mu   sync.Mutex
	ids  map[wire.ID]doubt
	next uint64
}

// doubt is a message in doubt: when it was noted (n), to forget the
// oldest, and where the log stood before the first send that left it so
// (Epoch 0: not known), which its retries name (after, PROTOCOL.md §8.5).
type doubt struct {
	n     uint64
	after Position
}

// outcome is a send's error, err, for msgs on g, after what earlier sends
// of them left in doubt: nil settles each (acknowledged), one in doubt
// notes each, and any other is marked in doubt if one of msgs is.
func (d *doubts) outcome(msgs []wire.Outgoing, err error) error {
	return d.outcomeAt(msgs, err, Position{})
}

// outcomeAt is outcome for a send made when the log stood at before, as
// the handle had seen it: a message it leaves in doubt that was not in
// doubt already was stored, if at all, after before.
func (d *doubts) outcomeAt(msgs []wire.Outgoing, err error, before Position) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		for _, m := range msgs {
			delete(d.ids, m.ID)
		}
	case errors.Is(err, ErrInDoubt):
		for _, m := range msgs {
			d.noteLocked(m.ID, before)
		}
	default:
		for _, m := range msgs {
			if _, ok := d.ids[m.ID]; ok {
				return inDoubt(err)
			}
		}
	}
	return err
}

// noteLocked notes id in doubt, stored if at all after after: one noted
// already keeps the earlier of its positions in one epoch, and takes a
// later epoch's (a log that lost its history holds no earlier copy).
// d.mu is held.
func (d *doubts) noteLocked(id wire.ID, after Position) {
	if d.ids == nil {
		d.ids = make(map[wire.ID]doubt)
	}
	d.next++
	o, ok := d.ids[id]
	switch {
	case !ok || o.after.Epoch == 0 || after.Epoch > 0 && after.Epoch != o.after.Epoch:
		d.ids[id] = doubt{n: d.next, after: after}
	case after.Epoch == o.after.Epoch:
		o.after.Seq = min(o.after.Seq, after.Seq)
		d.ids[id] = o
	}
	for len(d.ids) > maxDoubts {
		d.forgetOldest()
	}
}

// noteAfter notes msgs in doubt, stored if at all after after (a caller's
// word: SendMessagesAfter).
func (d *doubts) noteAfter(msgs []wire.Outgoing, after Position) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range msgs {
		d.noteLocked(m.ID, after)
	}
}

// after returns where the log stood before the first send of those of
// msgs in doubt, for their retry to name: the earliest position of one
// epoch. None (false) if none is in doubt with a position, or their
// positions are of different epochs.
func (d *doubts) after(msgs []wire.Outgoing) (Position, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var p Position
	if len(d.ids) == 0 {
		return p, false // the usual send: nothing in doubt
	}
	for _, m := range msgs {
		o, ok := d.ids[m.ID]
		switch {
		case !ok || o.after.Epoch == 0:
		case p.Epoch == 0:
			p = o.after
		case p.Epoch != o.after.Epoch:
			return Position{}, false
		default:
			p.Seq = min(p.Seq, o.after.Seq)
		}
	}
	return p, p.Epoch != 0
}

// forgetOldest forgets the ID noted first. d.mu is held.
func (d *doubts) forgetOldest() {
	var oldest wire.ID
	at := ^uint64(0)
	for id, o := range d.ids {
		if o.n < at {
			oldest, at = id, o.n
		}
	}
	delete(d.ids, oldest)
}

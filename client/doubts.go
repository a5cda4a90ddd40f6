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
	ids  map[wire.ID]uint64 // by when it was noted, to forget the oldest
	next uint64
}

// outcome is a send's error, err, for msgs on g, after what earlier sends
// of them left in doubt: nil settles each (acknowledged), one in doubt
// notes each, and any other is marked in doubt if one of msgs is.
func (d *doubts) outcome(msgs []wire.Outgoing, err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		for _, m := range msgs {
			delete(d.ids, m.ID)
		}
	case errors.Is(err, ErrInDoubt):
		if d.ids == nil {
			d.ids = make(map[wire.ID]uint64)
		}
		for _, m := range msgs {
			d.next++
			d.ids[m.ID] = d.next
		}
		for len(d.ids) > maxDoubts {
			d.forgetOldest()
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

// forgetOldest forgets the ID noted first. d.mu is held.
func (d *doubts) forgetOldest() {
	var oldest wire.ID
	at := ^uint64(0)
	for id, n := range d.ids {
		if n < at {
			oldest, at = id, n
		}
	}
	delete(d.ids, oldest)
}

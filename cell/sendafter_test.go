package cell

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/store"
)

// TestSendLaterAfter: a send again after an earlier try (SendLaterAfter,
// a send's after in huddle/1) is refused, nothing proposed, once the
// leader's log may have forgotten a message stored after it and the send
// carries an ID the log does not find; it is acknowledged as before while
// the window reaches back to after, when every ID is found (a duplicate),
// or when after names another epoch (that history, and any copy in it, is
// gone). Before session 21 the leader stored such a send again, a second
// copy of a message whose first the window had forgotten.
func TestSendLaterAfter(t *testing.T) {
	const window = 4
	oneLeader(t, 3, 3, func(c *Config) { c.DedupWindow = window }, func(c *testCell, l *testMember) error {
		g := l.group("lobby")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		send := func(after store.After, id [16]byte) ([]store.Ack, error) {
			type result struct {
				acks []store.Ack
				err  error
			}
			done := make(chan result, 1)
			later, acks, err := l.node.SendLaterAfter(ctx, g.ID, after, []store.Entry{{ID: id, From: alice, Body: []byte("m")}}, nil,
				func(acks []store.Ack, err error) { done <- result{append([]store.Ack(nil), acks...), err} })
			if later {
				r := <-done
				return r.acks, r.err
			}
			return acks, err
		}
		stored := func(what string, acks []store.Ack, err error, seq uint64, dup bool) error {
			if err != nil || len(acks) != 1 || acks[0].Seq != seq || acks[0].Duplicate != dup {
				return fmt.Errorf("%s: %+v %v, want seq %d, duplicate %v", what, acks, err, seq, dup)
			}
			return nil
		}
		first := store.After{Epoch: g.Epoch} // the log empty before the first try
		acks, err := send(first, newID(1))
		if err := stored("the first try", acks, err, 1, false); err != nil {
			return err
		}
		acks, err = send(first, newID(1))
		if err := stored("tried again within the window", acks, err, 1, true); err != nil {
			return err
		}
		for i := range window {
			acks, err = send(store.After{}, newID(10+i))
			if err := stored("a message", acks, err, uint64(2+i), false); err != nil {
				return err
			}
		}
		// The window holds 2..5: the first try's copy is forgotten.
		index := l.node.raft.LastIndex()
		if acks, err = send(first, newID(1)); !errors.Is(err, store.ErrForgotten) || !errors.Is(err, ErrUnchanged) {
			return fmt.Errorf("tried again past the window: %+v %v, want ErrForgotten and ErrUnchanged", acks, err)
		}
		if got := l.node.raft.LastIndex(); got != index {
			t.Errorf("the refused send was proposed: raft's last index %d, was %d", got, index)
		}
		acks, err = send(store.After{Epoch: g.Epoch, Seq: 3}, newID(20))
		if err := stored("a try after a seq the window holds", acks, err, 6, false); err != nil {
			return err
		}
		acks, err = send(store.After{Epoch: g.Epoch + 1}, newID(21))
		return stored("a try after another epoch's seq", acks, err, 7, false)
	})
}

package groupd

import (
	"testing"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// TestSendAfterWindow: a send naming after (PROTOCOL.md §8.5: where the
// log stood before an earlier try of its messages) is refused
// window_passed, marked unchanged and storing nothing, once the group's
// dedup window may have forgotten a message stored after it and the send
// carries an ID the log does not find; it is stored or acknowledged as
// before while the window reaches back to after, when every ID is a
// duplicate, or when after_epoch is another epoch's. Info says the daemon
// checks it. Before session 21 such a retry stored a second copy of a
// message whose first the window had forgotten.
func TestSendAfterWindow(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{SendRate: -1, MaxBatch: 1024, Storage: StorageConfig{Memory: true}})
	g := gid(d)
	p := joined(t, d, "ann")
	in := p.info(g)
	if !in.SendAfter {
		t.Fatal("info does not say the daemon checks a send's after")
	}
	epoch := in.Epoch
	sendAfter := func(after, afterEpoch uint64, msgs []wire.Outgoing) (wire.Sent, error) {
		t.Helper()
		var s wire.Sent
		err := p.call(wire.OpSend, wire.Send{Group: g, Messages: msgs, After: after, AfterEpoch: afterEpoch}, &s)
		return s, err
	}
	stored := func(what string, s wire.Sent, err error, seq uint64, dup bool) {
		t.Helper()
		if err != nil || len(s.Acks) != 1 || s.Acks[0].Seq != seq || s.Acks[0].Duplicate != dup {
			t.Fatalf("%s: %+v %v, want seq %d, duplicate %v", what, s, err, seq, dup)
		}
	}
	first := outgoing("in doubt")
	s, err := sendAfter(0, epoch, first)
	stored("the first try", s, err, 1, false)
	s, err = sendAfter(0, epoch, first)
	stored("tried again within the window", s, err, 1, true)

	// Past the window: the first try's ID forgotten.
	for sent := 0; sent < store.DefaultDedupWindow; {
		n := min(1024, store.DefaultDedupWindow-sent)
		_, err := p.send(g, outgoing(make([]string, n)...))
		must(t, err)
		sent += n
	}
	last := uint64(1 + store.DefaultDedupWindow)
	_, err = sendAfter(0, epoch, first)
	if we := wantCode(t, err, wire.CodeWindowPassed); we != nil && !we.Unchanged {
		t.Errorf("refused past the window: %+v, not marked unchanged", we)
	}
	if got := p.info(g).Last; got != last {
		t.Fatalf("the log's last is %d after the refusal, want %d: it stored the message", got, last)
	}
	s, err = sendAfter(last-10, epoch, outgoing("new"))
	stored("a try after a seq the window holds", s, err, last+1, false)
	s, err = sendAfter(0, epoch+1, outgoing("another epoch's"))
	stored("a try after another epoch's seq", s, err, last+2, false)
}

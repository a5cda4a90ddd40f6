package cell

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/store"
)

// TestGatheredSendsOverRetention: sends the leader gathers into one raft
// entry (and each replica's state machine merges further, one append per
// group for every ApplyBatch) may together be more messages than a
// replica's log retains, though each send alone fits. The state machine
// must still apply them: the log keeps the newest that fit. (It appended
// the merged batch whole, the log refused it as larger than retention
// could hold, and every replica retried it for ever: the group took no
// message again, cell-wide.)
func TestGatheredSendsOverRetention(t *testing.T) {
	const limit = 4
	c := newTestCell(t, 3, false, func(cfg *Config) {
		// The leader must stay while the test holds its state machine (as
		// TestConcurrentSendsShareEntries).
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, 3*time.Second
		cfg.Host.(*testHost).limits = store.Config{MaxMessages: limit}
	})
	l := c.leader()
	g := l.group("lobby")
	gs := l.node.fsm.group(g.ID)
	proposing := func() (inFlight, gathered int) {
		gs.propMu.Lock()
		defer gs.propMu.Unlock()
		if gs.prop.open != nil {
			gathered = len(gs.prop.open.entries)
		}
		return gs.prop.proposing, gathered
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(waitTimeout); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				p, o := proposing()
				t.Fatalf("waiting for %s: %d entries in flight, %d messages gathered", what, p, o)
			}
		}
	}
	before := l.node.raft.LastIndex()
	release := l.host.holdAppends()
	defer release()

	const sends = maxProposing + 3*limit
	errs := make(chan error, sends)
	send := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_, err := l.node.Send(ctx, g.ID, []store.Entry{{ID: newID(i), From: alice, Body: []byte("m" + strconv.Itoa(i))}}, nil)
		errs <- err
	}
	// maxProposing sends, one entry each, held in the leader's apply; the
	// rest gather into one entry of 3*limit messages.
	for i := range maxProposing {
		go send(i)
		waitFor("an entry in flight", func() bool { p, _ := proposing(); return p == i+1 })
	}
	for i := maxProposing; i < sends; i++ {
		go send(i)
	}
	waitFor("the gathered entry", func() bool { _, o := proposing(); return o == sends-maxProposing })
	release()
	for range sends {
		if err := <-errs; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if n := l.node.raft.LastIndex() - before; n > maxProposing+1 {
		t.Fatalf("%d raft entries for %d sends: they were not gathered", n, sends)
	}
	want := l.messages(g.ID)
	if len(want) == 0 || len(want) > limit || want[len(want)-1].Seq != sends {
		t.Fatalf("the leader holds %d messages ending at %d; want at most %d, ending at %d", len(want), want[len(want)-1].Seq, limit, sends)
	}
	for _, m := range c.members {
		m.waitLast(g.ID, sends)
		got := m.messages(g.ID)
		if len(got) > limit {
			t.Fatalf("%s holds %d messages; retention is %d", m.addr, len(got), limit)
		}
		for i, msg := range got {
			if w := want[len(want)-len(got)+i]; msg.Seq != w.Seq || msg.ID != w.ID || msg.Time != w.Time {
				t.Fatalf("%s message seq %d differs from the leader's %d", m.addr, msg.Seq, w.Seq)
			}
		}
	}
}

// TestMemberWithLessRetention: a member started with less retention than
// the others (its operator's mistake, or a change of limits rolled out one
// host at a time) applies what the cell commits, keeping only what its
// limits allow, instead of refusing a batch the leader took and retrying
// it for ever (it then served no new message of the group).
func TestMemberWithLessRetention(t *testing.T) {
	const limit, batch = 2, 8
	started := 0
	c := newTestCell(t, 3, true, func(cfg *Config) {
		if started == 0 {
			cfg.Host.(*testHost).limits = store.Config{MaxMessages: limit}
		}
		started++
	})
	small := c.members[0]
	g := c.leader().group("lobby")
	ids := make([][16]byte, batch)
	bodies := make([]string, batch)
	for i := range batch {
		ids[i], bodies[i] = newID(i), "m"+strconv.Itoa(i)
	}
	c.send(g.ID, alice, ids, bodies)
	for _, m := range c.members {
		m.waitLast(g.ID, batch)
		want := batch
		if m == small {
			want = limit
		}
		if got := m.messages(g.ID); len(got) != want || got[len(got)-1].Seq != batch {
			t.Fatalf("%s holds %d messages; want the last %d of %d", m.addr, len(got), want, batch)
		}
	}
}

// TestMessageOverMemberRetention: a member whose retention holds fewer
// bytes than one message the cell committed (its --max-bytes is below the
// message, which the leader's retention holds) records the message as
// aged out at once: its log stands after it, empty, as retention leaves a
// log that held it a moment, and goes on with the messages after it, on
// the same sequence numbers as every other replica; a restart replays
// nothing twice. (It refused the append and retried it for ever: it
// applied nothing more of the cell.)
func TestMessageOverMemberRetention(t *testing.T) {
	const limit = 64
	var smallAddr string
	c := newTestCell(t, 3, true, func(cfg *Config) {
		if smallAddr == "" {
			smallAddr = cfg.Advertise // the first member started, and at its restarts
		}
		if cfg.Advertise == smallAddr {
			cfg.Host.(*testHost).limits = store.Config{MaxBytes: limit}
		}
	})
	small, full := c.members[0], c.members[1]
	g := c.leader().group("lobby")
	sendOne := func(i int, body string) { c.send(g.ID, alice, [][16]byte{newID(i)}, []string{body}) }
	for i := 1; i <= 5; i++ {
		sendOne(i, fmt.Sprintf("small %04d", i)) // 10 bytes
	}
	const big = 6
	sendOne(big, strings.Repeat("x", limit+1))
	for i := big + 1; i <= 10; i++ {
		sendOne(i, fmt.Sprintf("small %04d", i))
	}
	// check waits until every running member holds up to last, then
	// checks that each holds a run of the full member's messages ending
	// there, the small one none up to the big message and no more bytes
	// than its retention.
	check := func(last uint64) {
		t.Helper()
		for _, m := range c.members {
			m.waitLast(g.ID, last)
		}
		want := full.messages(g.ID)
		if len(want) != int(last) {
			t.Fatalf("%s holds %d messages, want %d", full.addr, len(want), last)
		}
		for _, m := range c.members {
			got := m.messages(g.ID)
			if len(got) == 0 || got[len(got)-1].Seq != last {
				t.Fatalf("%s holds %d messages, not ending at %d", m.addr, len(got), last)
			}
			bytes := 0
			for i, msg := range got {
				w := want[len(want)-len(got)+i]
				if msg.Seq != w.Seq || msg.ID != w.ID || msg.Time != w.Time || string(msg.Body) != string(w.Body) {
					t.Fatalf("%s message seq %d differs from %s's seq %d", m.addr, msg.Seq, full.addr, w.Seq)
				}
				bytes += len(msg.Body)
			}
			if m == small && (got[0].Seq <= big || bytes > limit) {
				t.Fatalf("%s, retaining %d bytes, holds seq %d on (%d bytes)", m.addr, limit, got[0].Seq, bytes)
			}
		}
	}
	check(10)
	// The IDs of the messages before the one aged out are still found
	// there (a retry of one, were that member to lead, gets its ack): the
	// log's dedup window is not retention's. (After a restart, a disk log
	// remembers the IDs of the messages it still holds, as any.)
	earlier := make([]store.Entry, 5)
	for i := range earlier {
		earlier[i].ID = newID(i + 1)
	}
	acks := small.host.replica(g.ID).log.Lookup(earlier, nil)
	for i, a := range acks {
		if !a.Duplicate || a.Seq != uint64(i+1) {
			t.Fatalf("%s looked up the ID of message %d: %+v, want it remembered", small.addr, i+1, a)
		}
	}
	c.restart(small)
	for i := 11; i <= 12; i++ {
		sendOne(i, fmt.Sprintf("small %04d", i))
	}
	check(12)
}

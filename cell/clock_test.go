package cell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// clocks gives each member of a test cell a clock of its own: the real
// one, offset by what the test sets for the member's address.
type clocks struct {
	mu     sync.Mutex
	offset map[string]time.Duration
}

func (k *clocks) set(addr string, d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.offset[addr] = d
}

func (k *clocks) now(addr string) func() time.Time {
	return func() time.Time {
		k.mu.Lock()
		defer k.mu.Unlock()
		return time.Now().Add(k.offset[addr])
	}
}

// lead makes m the cell's leader, ready to stamp, by leadership transfers.
func (c *testCell) lead(m *testMember) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		l := c.leader()
		if l == m {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s never came to lead", m.addr)
		}
		err := l.node.raft.LeadershipTransferToServer(raft.ServerID(m.id.Fingerprint().String()), raft.ServerAddress(m.addr)).Error()
		if err != nil {
			c.t.Logf("leadership transfer to %s: %v", m.addr, err)
		}
		waitUntil(c.t.(*testing.T), "a leader after the transfer", func() bool {
			for _, x := range c.members {
				if x.node != nil && x.node.Leading() == nil {
					return true
				}
			}
			return false
		})
	}
}

// TestClocksDisagree: issue 20's "timestamps stay strictly increasing
// across leader changes", with members whose clocks disagree. A member
// on time leads, then one an hour behind, then one whose clock steps two
// hours back while it leads, then the first again. Every replica holds
// the same history with strictly increasing timestamps; a time query
// finds exactly the messages from that time on; a retry on the slow
// leader of a message acknowledged by the fast one gets its original ack
// (the dedup window counts messages, not time); a join on a slow leader
// is not dated before the messages the cell held when it joined (it was:
// the slow leader's clock, an hour back, and the member list, sorted by
// join time, put it first); and the slow leader says in its log that its
// clock is behind the cell's, by how much.
func TestClocksDisagree(t *testing.T) {
	k := &clocks{offset: make(map[string]time.Duration)}
	logs := make(map[string]*testlog.Buffer) // each member's warnings, by address
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.Now = k.now(cfg.Advertise)
		logs[cfg.Advertise] = &testlog.Buffer{}
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs[cfg.Advertise], testlog.Output(t)), &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	fast, slow, stepper := c.members[0], c.members[1], c.members[2]
	k.set(slow.addr, -time.Hour)
	slowLog := logs[slow.addr]

	g := c.leader().group("lobby")
	ctx := context.Background()
	// on runs op on m as the cell's leader, and again, m made leader
	// again, if an election (a busy machine's) took the leadership away
	// meanwhile: a send or join asked again with the same IDs is the same.
	on := func(m *testMember, what string, op func() error) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			c.lead(m)
			err := op()
			if err == nil {
				return
			}
			var nl *NotLeaderError
			if !errors.As(err, &nl) && !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("%s on %s: %v", what, m.addr, err)
			}
			t.Logf("%s on %s: %v; again", what, m.addr, err)
		}
	}
	joined := func(m *testMember, fp wire.Fingerprint) {
		t.Helper()
		on(m, "join", func() error {
			_, err := m.node.Join(ctx, g.ID, fp, "member")
			return err
		})
	}
	send := func(m *testMember, from, n int) []store.Ack {
		t.Helper()
		var acks []store.Ack
		for i := from; i < from+n; i++ {
			on(m, fmt.Sprintf("send %d", i), func() error {
				a, err := m.node.Send(ctx, g.ID, []store.Entry{{ID: newID(i), From: alice, Body: []byte("m")}}, nil)
				acks = append(acks, a...)
				return err
			})
		}
		return acks
	}

	first := send(fast, 0, 10)
	joined(fast, wire.Fingerprint{1})
	// Behind by an hour: the retry of a message the fast leader
	// acknowledged is found, the new messages follow on.
	var again []store.Ack
	on(slow, "the retry", func() error {
		var err error
		again, err = slow.node.Send(ctx, g.ID, []store.Entry{{ID: newID(3), From: alice, Body: []byte("m")}}, nil)
		return err
	})
	if !again[0].Duplicate || again[0].Seq != first[3].Seq || again[0].Time != first[3].Time {
		t.Fatalf("a retry on the slow leader: %+v; want the original %+v as a duplicate", again, first[3])
	}
	send(slow, 10, 10)
	joined(slow, wire.Fingerprint{2})
	send(slow, 20, 5)
	if !strings.Contains(slowLog.String(), "clock is behind") {
		t.Errorf("the leader whose clock is an hour behind said nothing of it; its log:\n%s", slowLog.String())
	}
	// A clock that steps back while its member leads.
	send(stepper, 25, 5)
	k.set(stepper.addr, -2*time.Hour)
	send(stepper, 30, 5)
	joined(stepper, wire.Fingerprint{3})
	send(fast, 35, 5)
	const total = 40

	c.sameLogs(g.ID, total)
	for _, m := range c.members {
		msgs := m.messages(g.ID)
		r := m.host.replica(g.ID)
		for i, msg := range msgs {
			if msg.Seq != uint64(i+1) || i > 0 && msg.Time <= msgs[i-1].Time {
				t.Fatalf("%s: message %d at %d after %d at %d", m.addr, msg.Seq, msg.Time, msgs[max(i-1, 0)].Seq, msgs[max(i-1, 0)].Time)
			}
			got, _, _ := r.log.(*store.Log).Since(msg.Time, total, nil)
			if len(got) != total-i || got[0].Seq != msg.Seq {
				t.Fatalf("%s: since %d (message %d's time): %d messages from %d, want %d from %d", m.addr, msg.Time, msg.Seq, len(got), got[0].Seq, total-i, msg.Seq)
			}
		}
		// Each join is dated no earlier than the message before it (the
		// 10th, 20th and 35th), whatever the leader's clock said.
		r.mu.Lock()
		members := map[wire.Fingerprint]Member{}
		for fp, mb := range r.members {
			members[fp] = mb
		}
		r.mu.Unlock()
		for fp, before := range map[wire.Fingerprint]int{{1}: 10, {2}: 20, {3}: 35} {
			if j := members[fp].Joined; j < msgs[before-1].Time {
				t.Errorf("%s: member %x joined at %v, before message %d at %v", m.addr, fp[:1], time.Unix(0, j).UTC(), before, time.Unix(0, msgs[before-1].Time).UTC())
			}
		}
	}
}

package groupd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellRetryInDoubtExactlyOnce: a send whose outcome is unknown
// (client.ErrInDoubt: the leader stamped and proposed it, and the cell,
// its followers down, could not commit it before its caller gave up) is
// retried under its ID
// across a change of leader and then across restarts of the members, the
// leader of the moment among them, and is stored exactly once: the first
// retry stores it or acknowledges it as a duplicate, and every later one
// gets that ack back (Duplicate, its Seq and Time), from whichever member
// leads then. PROTOCOL.md's promise (a retry under the same ID within the
// dedup window, which after a restart is what the log retains) is what
// README tells a user to rely on for a send in doubt.
func TestCellRetryInDoubtExactlyOnce(t *testing.T) {
	// Raft's timeouts of 3 s: the leader keeps its leadership (its lease)
	// while the followers stop and it proposes the send, at any load;
	// were it to step down first, the send would be refused unchanged,
	// not in doubt, and the test asks again.
	members := startTestCell(t, 3, func(c *Config) {
		c.Cell.HeartbeatTimeout, c.Cell.ElectionTimeout, c.Cell.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, 3*time.Second
	})
	leader, g := cellLeader(t, members)
	var replicas []wire.Replica
	for _, m := range members {
		replicas = append(replicas, wire.Replica{Addr: m.addr, Fingerprint: m.fp, Leader: m == leader})
	}
	ctx := func() context.Context { return testCtx(t) }
	key := newKey(t)
	cl, err := client.New(client.Config{Identity: key, Logger: testLogger(t), NoBatching: true})
	must(t, err)
	t.Cleanup(func() { cl.Close() })
	h, err := cl.Group(wire.GroupEntry{Group: g, Name: "general", Addrs: []string{leader.addr}, Fingerprint: leader.fp, Replicas: replicas})
	must(t, err)
	_, err = h.Join(ctx(), "ann", nil)
	must(t, err)
	before, err := h.Send(ctx(), []byte("before"))
	must(t, err)

	// The followers stop: the leader takes the send, and cannot commit it.
	id := client.NewID()
	var followers []*testCellMember
	for try := 1; ; try++ {
		followers = followers[:0]
		for _, m := range members {
			if m != leader {
				followers = append(followers, m)
				m.stop()
				m.d = nil
			}
		}
		// The send's caller gives up once the leader holds it in its raft
		// log, uncommitted: its outcome is then unknown. (Until session 22
		// the test gave it 8 s, past the commit wait, and waited them out:
		// the client retries a send in doubt for cellDoubtFor, and no
		// member could settle it.) A leader that stepped down first
		// refuses it, and the send ends on its own.
		base := leader.d.node.Status().LastIndex
		sctx, cancel := context.WithCancel(t.Context())
		sent := make(chan error, 1)
		go func() {
			_, err := h.SendWithID(sctx, id, []byte("in doubt"))
			sent <- err
		}()
		ended := false
		eventually(t, "the leader to hold the send in its log, or the send to end", func() bool {
			select {
			case err = <-sent:
				ended = true
				return true
			default:
				return leader.d.node.Status().LastIndex > base
			}
		})
		cancel()
		if !ended {
			err = <-sent
		}
		for _, m := range followers {
			m.d, m.stop = startGroupDaemon(t, m.cfg)
		}
		if errors.Is(err, client.ErrInDoubt) {
			t.Logf("the send in doubt: %v", err)
			break
		}
		var we *client.Error
		if try == 3 || !errors.As(err, &we) || !we.Unchanged {
			t.Fatalf("a send the leader took and its cell could not commit: %v, want %v", err, client.ErrInDoubt)
		}
		// The leader stepped down before the send came: refused, nothing
		// proposed. Again, once the cell has a leader.
		t.Logf("try %d: the send was refused as the leader stepped down first: %v", try, err)
		leader, _ = cellLeader(t, members)
	}

	// The followers are back; the leader stops: one of them leads.
	leader.stop()
	leader.d = nil
	newLeader, _ := cellLeader(t, members)
	if newLeader == leader {
		t.Fatal("the stopped leader leads")
	}
	first, err := h.SendWithID(ctx(), id, []byte("in doubt"))
	must(t, err)
	t.Logf("its retry on the new leader: %+v", first)
	onceEach(t, g, key, members, before, first)

	// Every member restarts in turn, the leader of the moment last, and
	// the retry finds it stored, whoever leads.
	leader.d, leader.stop = startGroupDaemon(t, leader.cfg)
	onceEach(t, g, key, members, before, first)
	for _, m := range members {
		if m != newLeader && m != leader {
			m.stop()
			m.d, m.stop = startGroupDaemon(t, m.cfg)
			onceEach(t, g, key, members, before, first)
		}
	}
	newLeader.stop()
	newLeader.d, newLeader.stop = startGroupDaemon(t, newLeader.cfg)
	onceEach(t, g, key, members, before, first)
	again, err := h.SendWithID(ctx(), id, []byte("in doubt"))
	must(t, err)
	if !again.Duplicate || again.Seq != first.Seq || !again.Time.Equal(first.Time) {
		t.Fatalf("the retry after every member restarted: %+v, want the first retry's %+v as a duplicate", again, first)
	}
	onceEach(t, g, key, members, before, first)
}

// onceEach checks that every running member serves the messages acks
// acknowledged, each once, and nothing else (a member restarted or
// catching up is asked again until it serves them: MinSeq).
func onceEach(t *testing.T, g wire.UUID, key *identity.Identity, members []*testCellMember, acks ...client.Ack) {
	t.Helper()
	last := acks[len(acks)-1].Seq
	for _, m := range members {
		if m.d == nil {
			continue
		}
		var got []wire.Message
		eventually(t, "member "+m.addr+" serves the messages acknowledged", func() bool {
			msgs, _, err := dial(t, m.d.Addr(), m.fp, key).fetch(wire.Fetch{Group: g, MinSeq: last})
			if err != nil {
				t.Logf("fetch from %s: %v", m.addr, err)
				return false
			}
			got = msgs
			return true
		})
		if len(got) != len(acks) {
			t.Fatalf("%s serves %d messages, want %d, each once: %+v", m.addr, len(got), len(acks), got)
		}
		for i, msg := range got {
			if msg.ID != acks[i].ID || msg.Seq != acks[i].Seq || msg.Time != acks[i].Time.UnixNano() {
				t.Fatalf("%s message %d: %+v, acknowledged %+v", m.addr, i, msg, acks[i])
			}
		}
	}
}

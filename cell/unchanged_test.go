package cell

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestRefusedUnchanged: a join, a leave or a change of the cell refused
// before anything was proposed is marked ErrUnchanged (the daemon tells
// the client so: unchanged, PROTOCOL.md §9), with its own sentinel kept:
// asked of a member that does not lead, of one that is closed, or raft
// refusing to take a change (TestChangeDecidedBeforeRemoval); and a join
// applied as a refusal (ErrFull). Until session 20 none was, and a client
// took each for a change that may have been made.
//
// Which member leads is read as each is asked: one that leads by then (an
// election on a loaded machine) makes the change, and is not counted.
func TestRefusedUnchanged(t *testing.T) {
	c := newTestCell(t, 3, false, func(cfg *Config) { cfg.MaxMembers = 1 })
	l := c.leader()
	g := l.group("lobby")
	ctx := context.Background()
	other := func(not ...*testMember) *testMember {
		for _, m := range c.members {
			if m.node != nil && m != l && !contains(not, m) {
				return m
			}
		}
		t.Fatal("no other member running")
		return nil
	}
	f := other()
	// The follower must know the leader to refuse naming it; either way it
	// refuses.
	refused := 0
	for _, tc := range []struct {
		name string
		op   func(n *Node) error
	}{
		{"join", func(n *Node) error { _, err := n.Join(ctx, g.ID, wire.Fingerprint{1}, "one"); return err }},
		{"leave", func(n *Node) error { _, err := n.Leave(ctx, g.ID, wire.Fingerprint{1}); return err }},
		{"add member", func(n *Node) error { return n.AddMember(ctx, n.Self().Fingerprint, strangerPeer(t)) }},
		{"remove member", func(n *Node) error {
			return n.RemoveMember(ctx, n.Self().Fingerprint, other(f).id.Fingerprint())
		}},
		{"remove itself", func(n *Node) error { return n.RemoveMember(ctx, n.Self().Fingerprint, n.Self().Fingerprint) }},
	} {
		err := tc.op(f.node)
		var nl *NotLeaderError
		if !errors.As(err, &nl) {
			if f.node.Leading() == nil {
				t.Logf("%s of a member that leads by now: %v", tc.name, err)
				continue
			}
			t.Fatalf("%s of a follower: %v, want a NotLeaderError", tc.name, err)
		}
		if !errors.Is(err, ErrUnchanged) {
			t.Errorf("%s of a follower: %v, not marked ErrUnchanged", tc.name, err)
		}
		refused++
	}
	if refused == 0 {
		t.Fatal("the follower asked led each time: nothing was checked")
	}

	c.change("join", nil, func(n *Node) error { _, err := n.Join(ctx, g.ID, wire.Fingerprint{1}, "one"); return err })
	c.change("join past the limit", nil, func(n *Node) error {
		_, err := n.Join(ctx, g.ID, wire.Fingerprint{2}, "two")
		switch {
		case errors.Is(err, ErrFull) && errors.Is(err, ErrUnchanged):
			return nil
		case errors.Is(err, ErrFull):
			t.Errorf("join past the limit: %v, not marked ErrUnchanged", err)
			return nil
		case err == nil:
			t.Fatal("join past the limit: admitted, want ErrFull")
		}
		return err
	})

	closed := other()
	node := closed.node
	closed.stop()
	for name, err := range map[string]error{
		"join":       func() error { _, err := node.Join(ctx, g.ID, wire.Fingerprint{3}, "three"); return err }(),
		"leave":      func() error { _, err := node.Leave(ctx, g.ID, wire.Fingerprint{1}); return err }(),
		"add member": node.AddMember(ctx, node.Self().Fingerprint, strangerPeer(t)),
	} {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrUnchanged) {
			t.Errorf("%s of a closed member: %v, want ErrClosed marked ErrUnchanged", name, err)
		}
	}
}

// TestLostOfficeNotUnchanged: a join, a leave and a change of the cell
// that a leader took and could not commit (its followers stopped: it
// appended them, and gave up on them after CommitWait, or as it stepped
// down once its lease ran out) are not marked ErrUnchanged: a next leader
// may commit what it appended, and the client must not be told nothing
// was done. Asked of a leader that stepped down before it took them, they
// are refused NotLeaderError, unchanged, and the scenario runs again on a
// new cell. The lease is 3 s, not 300 ms, so that the leader still leads
// once its followers have stopped on a loaded machine.
func TestLostOfficeNotUnchanged(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader stepped down before it took the operations", lostOfficeNotUnchanged)
}

func lostOfficeNotUnchanged(t *testing.T) bool {
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, 3*time.Second
	})
	l := c.leader()
	g := l.group("lobby")
	c.change("join", l, func(n *Node) error {
		_, err := n.Join(context.Background(), g.ID, wire.Fingerprint{1}, "one")
		return err
	})
	var stopped sync.WaitGroup
	for _, m := range c.members {
		if m != l {
			stopped.Go(m.stop)
		}
	}
	stopped.Wait()
	ops := map[string]func(context.Context) error{
		"join": func(ctx context.Context) error {
			_, err := l.node.Join(ctx, g.ID, wire.Fingerprint{2}, "two")
			return err
		},
		"leave": func(ctx context.Context) error { _, err := l.node.Leave(ctx, g.ID, wire.Fingerprint{1}); return err },
		"add member": func(ctx context.Context) error {
			return l.node.AddMember(ctx, l.node.Self().Fingerprint, strangerPeer(t))
		},
	}
	type answer struct {
		name string
		err  error
	}
	answers := make(chan answer, len(ops))
	for name, op := range ops {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			answers <- answer{name, op(ctx)}
		}()
	}
	met := true
	for range ops {
		a := <-answers
		var nl *NotLeaderError
		switch {
		case a.err == nil:
			t.Fatalf("%s: done by a leader without a majority", a.name)
		case errors.As(a.err, &nl):
			t.Logf("%s: asked of a leader that had stepped down: %v", a.name, a.err)
			met = false
		case errors.Is(a.err, ErrUnchanged):
			t.Errorf("%s: %v: marked ErrUnchanged, though the leader may have taken it", a.name, a.err)
		case !errors.Is(a.err, ErrUnavailable):
			t.Errorf("%s: %v, want ErrUnavailable", a.name, a.err)
		default:
			t.Logf("%s: %v", a.name, a.err)
		}
	}
	return met
}

//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// cellMember is one huddle serve process of a test cell.
type cellMember struct {
	args []string
	dir  string
	addr string
	fp   wire.Fingerprint
	p    *proc
}

// newCellMembers makes n members, each with its own state directory, key
// and free UDP address, and returns them with the --cell-peer flags that
// name the first listed of them (those the cell starts with).
func newCellMembers(t *testing.T, n, listed int) ([]*cellMember, []string) {
	t.Helper()
	members := make([]*cellMember, n)
	var peers []string
	for i := range members {
		dir := t.TempDir()
		id, err := identity.LoadOrCreate(dir)
		if err != nil {
			t.Fatal(err)
		}
		members[i] = &cellMember{dir: dir, addr: testport.Cell(t), fp: id.Fingerprint()}
		if i < listed {
			peers = append(peers, "--cell-peer", id.Fingerprint().String()+"@"+members[i].addr)
		}
	}
	return members, peers
}

func (m *cellMember) start(t *testing.T) {
	t.Helper()
	m.p = startProc(t, "huddle serve "+m.addr, childEnv(t.TempDir()), false, untilStopped, append([]string{"serve"}, m.args...)...)
}

// startMembers starts members as a cell's members (peers' --cell-peer
// flags) hosting the group general, registered with registry, with a
// heartbeat of 300 ms.
func startMembers(t *testing.T, members []*cellMember, peers []string, registry string) {
	t.Helper()
	for _, m := range members {
		m.args = append([]string{"--no-mdns", "--listen", m.addr, "--registry", registry, "--state-dir", m.dir,
			"--group", "general", "--cell-heartbeat", "300ms"}, peers...)
		m.start(t)
	}
}

// TestCellLeaderKill runs a cell of three huddle serve processes and kills
// its leader with SIGKILL three times, then each member in turn,
// restarting each killed member,
// while one client sends. Every send is retried with its message ID until
// it is acknowledged; in the end every replica holds exactly the
// acknowledged messages, once each, with their acknowledged sequence
// numbers and timestamps, gapless and strictly increasing: nothing
// acknowledged was lost, nothing duplicated. A watch opened before the
// first kill delivers every message once, in order, with no reset.
func TestCellLeaderKill(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	members, peers := newCellMembers(t, 3, 3)
	startMembers(t, members, peers, reg.registry)
	var replicas []wire.Replica
	for _, m := range members {
		replicas = append(replicas, wire.Replica{Addr: m.addr, Fingerprint: m.fp})
	}
	var group string
	for _, m := range members {
		group = cellGroupLine(t, m)
	}
	gid, err := uuid.Parse(group)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	h, err := cl.Group(wire.GroupEntry{Group: gid, Name: "general", Addrs: []string{members[0].addr}, Fingerprint: members[0].fp, Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Join(ctx, "writer", nil); err != nil {
		t.Fatalf("join: %v", err)
	}

	// A watch from the start, on its own handle: it must see every
	// message once, in order, across the kills (it moves to another
	// member when its own dies), with no gap and no reset.
	w, err := cl.Group(wire.GroupEntry{Group: gid, Name: "general", Addrs: []string{members[0].addr}, Fingerprint: members[0].fp, Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := make(chan client.Event, 1024)
	var watchErr error // why the watch ended, once events is closed
	go func() {
		defer close(events)
		for ev, err := range w.Watch(watchCtx, client.Query{}) {
			if err != nil {
				watchErr = err
				return
			}
			select {
			case events <- ev:
			case <-watchCtx.Done():
				return // the test has stopped reading
			}
		}
	}()

	var acks []client.Ack
	send := func(n int) (firstAfter time.Duration) {
		start := time.Now()
		for i := range n {
			id, body := wire.NewID(), []byte(fmt.Sprintf("message %d", len(acks)))
			for {
				a, err := h.SendWithID(ctx, id, body)
				if err == nil {
					if i == 0 {
						firstAfter = time.Since(start)
					}
					acks = append(acks, a)
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("send %d: still failing when the test's time ran out: %v", len(acks), err)
				}
				// Unknown outcome: the same ID again, until acknowledged.
			}
		}
		return firstAfter
	}
	leader := func() *cellMember {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for time.Now().Before(deadline) {
			for _, m := range members {
				if !m.p.running() {
					continue
				}
				sctx, scancel := context.WithTimeout(ctx, time.Second)
				st, err := cl.CellStatus(sctx, m.addr, m.fp)
				scancel()
				if err == nil && st.State == "leader" {
					return m
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no leader")
		return nil
	}

	send(20)
	const kills = 3
	for k := range kills {
		l := leader()
		l.p.stop(t, syscall.SIGKILL)
		took := send(20)
		t.Logf("kill %d: leader %s killed with SIGKILL; sends succeeded again after %v", k+1, l.addr, took.Round(time.Millisecond))
		l.start(t) // same key, state and address: it catches up from the others
	}
	// Then each member in turn, follower or leader: the watch's own
	// member dies at least once, and the watch moves on.
	for _, m := range members {
		m.p.stop(t, syscall.SIGKILL)
		send(10)
		m.start(t)
	}
	send(20)

	// Every replica, restarted ones included, holds exactly what was
	// acknowledged.
	for _, m := range members {
		var got []client.Message
		deadline := time.Now().Add(waitTimeout)
		for {
			r, err := cl.Group(wire.GroupEntry{Group: gid, Name: "general", Addrs: []string{m.addr}, Fingerprint: m.fp})
			if err != nil {
				t.Fatal(err)
			}
			got = got[:0]
			if _, err := r.Fetch(ctx, client.Query{}, func(msg client.Message) bool {
				got = append(got, msg)
				return true
			}); err != nil {
				var we *wire.Error
				if !errors.As(err, &we) && !errors.Is(err, client.ErrUnreachable) {
					t.Fatalf("fetch from %s: %v", m.addr, err)
				}
				// Restarting, or not caught up with the join yet: again.
			}
			if len(got) >= len(acks) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(got) != len(acks) {
			t.Fatalf("%s holds %d messages; %d were acknowledged", m.addr, len(got), len(acks))
		}
		for i, msg := range got {
			a := acks[i]
			switch {
			case msg.Seq != uint64(i+1):
				t.Fatalf("%s: message %d has seq %d: not gapless", m.addr, i, msg.Seq)
			case msg.ID != a.ID || msg.Seq != a.Seq || !msg.Time.Equal(a.Time):
				t.Fatalf("%s: message %d is %s seq %d at %v; acknowledged %s seq %d at %v", m.addr, i, msg.ID, msg.Seq, msg.Time, a.ID, a.Seq, a.Time)
			case i > 0 && !msg.Time.After(got[i-1].Time):
				t.Fatalf("%s: message %d's time %v is not after %v", m.addr, i, msg.Time, got[i-1].Time)
			}
		}
	}
	for i := range acks {
		var ev client.Event
		var open bool
		select {
		case ev, open = <-events:
			if !open {
				t.Fatalf("the watch ended after %d of %d messages: %v", i, len(acks), watchErr)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("the watch delivered %d of %d messages", i, len(acks))
		}
		if ev.Kind != client.EventMessage || ev.Message.Seq != acks[i].Seq || ev.Message.ID != acks[i].ID || ev.Epoch != acks[i].Epoch {
			t.Fatalf("watch event %d: %+v (seq %d), want the message acknowledged %+v: a gap, a repeat or a reset", i, ev, ev.Message.Seq, acks[i])
		}
	}
	stopWatch()
	ids := make([]wire.ID, len(acks))
	for i, a := range acks {
		ids[i] = a.ID
	}
	slices.SortFunc(ids, func(a, b wire.ID) int { return strings.Compare(a.String(), b.String()) })
	if len(slices.Compact(ids)) != len(acks) {
		t.Fatal("an ID was acknowledged twice")
	}
	t.Logf("%d leader kills and %d member kills survived; %d acknowledged messages checked on each of %d replicas: none lost, none duplicated; one watch saw them all, in order, with no gap, repeat or reset", kills, len(members), len(acks), len(members))
}

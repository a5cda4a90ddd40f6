package groupd

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestLoneChangeAtShutdownUnchanged: a lone group's join, and leave, that
// wait for the members file's writer when the daemon shuts down are
// withdrawn (group.commit) and answered unavailable marked unchanged
// (PROTOCOL.md §9, key 7), and indeed not made. Until session 21 the
// refusal said "nothing changed" in its text alone, and a client took the
// change for one that may have been made.
func TestLoneChangeAtShutdownUnchanged(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   wire.Op
	}{{"join", wire.OpJoin}, {"leave", wire.OpLeave}} {
		t.Run(tc.name, func(t *testing.T) {
			d, stop := startGroupDaemon(t, Config{Server: server.Config{ShutdownTimeout: 200 * time.Millisecond}})
			g := d.groups[gid(d)]
			var p *peer
			var args any
			if tc.op == wire.OpJoin {
				p, args = dial(t, d.Addr(), d.Fingerprint(), nil), wire.Join{Group: g.id, Name: "late"}
			} else {
				p, args = joined(t, d, "leaving"), wire.GroupRef{Group: g.id}
			}
			g.writer <- struct{}{} // a writer is busy: the change waits
			defer func() { <-g.writer }()
			str := p.open(request(t, tc.op, args))
			eventually(t, "the change to wait for the writer", func() bool {
				g.pendingMu.Lock()
				defer g.pendingMu.Unlock()
				return len(g.pending) == 1
			})
			ended := nextFrame(str)
			stop()
			f := <-ended
			if f.kind != wire.KindError || f.err.Code != wire.CodeUnavailable || !f.err.Unchanged {
				t.Fatalf("%s withdrawn at shutdown: frame %v %+v, want unavailable marked unchanged", tc.name, f.kind, f.err)
			}
			if member := g.isMember(p.id.Fingerprint()); member != (tc.op == wire.OpLeave) {
				t.Errorf("%s refused unchanged took effect: member %v", tc.name, member)
			}
		})
	}
}

// TestFollowerNotMemberMarks: a follower asked for a read (members,
// fetch, watch) by a key it does not know as a member answers unavailable
// naming the leader (notMemberHere), marked unchanged, and with the
// members that serve the group (key 6), as every refusal of a member that
// does not lead carries them. Until session 21 it carried neither: a
// client holding an older list of replicas did not learn the new one
// from it. A follower in an election (raft's leader deposed since
// cellLeader, frequent under -race at load 30-50) knows no leader to name:
// what it answered then voids the try, run again on a new cell.
func TestFollowerNotMemberMarks(t *testing.T) {
	rerunOnNewCells(t, 3, "an election came while the followers were asked", followerNotMemberMarks)
}

func followerNotMemberMarks(t *testing.T) bool {
	members := startTestCell(t, 3, nil)
	leader, g := cellLeader(t, members)
	term := leader.d.node.Status().Term
	var want []wire.Fingerprint
	for _, m := range members {
		want = append(want, m.fp)
	}
	slices.SortFunc(want, func(a, b wire.Fingerprint) int { return slices.Compare(a[:], b[:]) })
	stranger := newKey(t)
	for _, m := range members {
		if m == leader {
			continue
		}
		hostedGroup(t, m, g)
		p := dial(t, m.d.Addr(), m.fp, stranger)
		_, _, fetchErr := p.fetch(wire.Fetch{Group: g})
		_, watchErr := p.watch(wire.Watch{Group: g})
		for op, err := range map[wire.Op]error{
			wire.OpMembers: p.call(wire.OpMembers, wire.GroupRef{Group: g}, nil),
			wire.OpFetch:   fetchErr,
			wire.OpWatch:   watchErr,
		} {
			we, ok := errors.AsType[*wire.Error](err)
			if ok && we.Code == wire.CodeNotMember && m.d.node.Leading() == nil {
				t.Logf("%s leads by now (an election): its not_member is the leader's", m.addr)
				continue
			}
			if (!ok || we.Code != wire.CodeUnavailable || we.Leader == nil) && electedSince(members, leader, term) {
				t.Logf("an election came since term %d; %v by a stranger at %s: %v", term, op, m.addr, err)
				return false
			}
			if !ok || we.Code != wire.CodeUnavailable || we.Leader == nil {
				t.Errorf("%v by a stranger at a follower: %v, want unavailable naming the leader", op, err)
				continue
			}
			if !we.Unchanged {
				t.Errorf("%v by a stranger at a follower: %+v, not marked unchanged", op, we)
			}
			var got []wire.Fingerprint
			for _, r := range we.Replicas {
				got = append(got, r.Fingerprint)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%v by a stranger at a follower names replicas %v, want the cell's %v", op, got, want)
			}
		}
	}
	return true
}

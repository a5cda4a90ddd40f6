package groupd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/cell/raftlog"
	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// bootstrapRaft writes into dir (a member's cell directory) the raft
// state a cell bootstrapped with servers leaves, as a daemon of an
// earlier version could have: one whose configuration names a member at
// an address that version took and this one refuses.
func bootstrapRaft(t *testing.T, dir string, self wire.Fingerprint, servers []raft.Server) {
	t.Helper()
	logs, err := raftlog.Open(filepath.Join(dir, "raftlog"), raftlog.Options{})
	must(t, err)
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	must(t, err)
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(self.String())
	must(t, raft.BootstrapCluster(rc, logs, logs, snaps, trans, raft.Configuration{Servers: servers}))
}

// TestCellUndialableMemberLeftOut: a cell whose raft configuration names
// a member at 0.0.0.0:PORT (taken as a member's address before session
// 22; on Linux it reaches the machine itself, so a one-machine cell could
// be configured so) serves info and registers its group, both listing the
// members a peer can dial and leaving that one out, and each member logs
// once, not per request, that it is left out and how to move it; a
// follower's refusal names the three. Until
// session 22 info and every refusal named it and a client refused them
// whole (Replica.check), and the registry refused the whole registration,
// so the cell's group dropped out of its listing.
func TestCellUndialableMemberLeftOut(t *testing.T) {
	reg := startRegistry(t, registry.Config{LeaseTTL: 600 * time.Millisecond})
	members := planTestCell(t, 3)
	// The port raft dials the member at (0.0.0.0 reaches 127.0.0.1) is
	// held by a socket that never answers, and is no other test's.
	hold := testport.UDP(t, net.IPv4(127, 0, 0, 1))
	t.Cleanup(func() { hold.Close() })
	odd := cell.Peer{Addr: fmt.Sprintf("0.0.0.0:%d", hold.LocalAddr().(*net.UDPAddr).Port), Fingerprint: newKey(t).Fingerprint()}
	servers := []raft.Server{{ID: raft.ServerID(odd.Fingerprint.String()), Address: raft.ServerAddress(odd.Addr)}}
	for _, m := range members {
		servers = append(servers, raft.Server{ID: raft.ServerID(m.fp.String()), Address: raft.ServerAddress(m.addr)})
	}
	const said = "a member of the cell is configured at an address peers do not dial, so info, refusals and registrations leave it out"
	logged := make([]atomic.Int32, len(members))
	for i, m := range members {
		bootstrapRaft(t, filepath.Join(m.dir, "cell"), m.fp, servers)
		m.cfg.Registries = []string{reg.Addr().String()}
		m.cfg.Logger = slog.New(&onMessage{Handler: testLogger(t).Handler(), msg: said, seen: func() { logged[i].Add(1) }})
		m.d, m.stop = startGroupDaemon(t, m.cfg)
	}
	leader, g := cellLeader(t, members)
	dialable := func(rs []wire.Replica) bool {
		for _, r := range rs {
			if r.Fingerprint == odd.Fingerprint || !wire.Dialable(r.Addr) {
				return false
			}
		}
		return len(rs) == 3
	}
	cl := newTestClient(t)
	r, err := cl.Registry(testCtx(t), reg.Addr().String(), reg.Fingerprint())
	must(t, err)
	eventually(t, "the registry listing the cell's group", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), peertest.Timeout)
		defer cancel()
		l, err := r.List(ctx)
		must(t, err)
		return len(l.Groups) == 1 && l.Groups[0].Group == g && dialable(l.Groups[0].Replicas)
	})
	p := dial(t, leader.d.Addr(), leader.fp, newKey(t))
	for range 2 {
		var info wire.Info
		if err := p.call(wire.OpInfo, wire.GroupRef{Group: g}, &info); err != nil {
			t.Fatalf("info of a cell with a member at %s: %v, want it answered", odd.Addr, err)
		}
		if !dialable(info.Replicas) {
			t.Fatalf("info lists the replicas %+v, want the 3 members at 127.0.0.1, not the one at %s", info.Replicas, odd.Addr)
		}
	}
	// A follower's refusal of a join names the members (key 6) and the
	// leader (key 7): the three, and a client takes it.
	follower := members[0]
	if follower == leader {
		follower = members[1]
	}
	hostedGroup(t, follower, g)
	eventually(t, "a follower's refusal naming the members", func() bool {
		err := dial(t, follower.d.Addr(), follower.fp, newKey(t)).call(wire.OpJoin, wire.Join{Group: g, Name: "ann"}, nil)
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Fatalf("a follower's join of a cell with a member at %s: %v, want a refusal a client takes", odd.Addr, err)
		}
		if we.Leader != nil && we.Leader.Fingerprint == odd.Fingerprint {
			t.Fatalf("the refusal names the leader %+v", we.Leader)
		}
		return we.Code == wire.CodeUnavailable && we.Leader != nil && dialable(we.Replicas)
	})
	for i := range members {
		if n := logged[i].Load(); n > 1 {
			t.Errorf("member %d logged %d times that the member at %s is left out, want once", i, n, odd.Addr)
		}
	}
	if n := logged[slices.Index(members, leader)].Load(); n != 1 {
		t.Errorf("the leader logged %d times that the member at %s is left out, want once", n, odd.Addr)
	}
}

package web

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// cellJoined is a Config.Joined (and JoinedCells) in memory of one cell's
// group joined under daemon, its replica set recorded; Follow sends what
// it is told on follows.
type cellJoined struct {
	group   wire.UUID
	daemon  wire.Fingerprint
	mu      sync.Mutex
	cell    []wire.Fingerprint
	follows chan []wire.Fingerprint
}

func (j *cellJoined) Groups() []wire.GroupEntry {
	return []wire.GroupEntry{{Group: j.group, Fingerprint: j.daemon, Name: "general"}}
}

func (j *cellJoined) Has(g wire.UUID, fp wire.Fingerprint) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return g == j.group && slices.Contains(j.cell, fp)
}

func (j *cellJoined) Add(wire.GroupEntry) error    { return nil }
func (j *cellJoined) Remove(wire.GroupEntry) error { return nil }

func (j *cellJoined) Cell(g wire.UUID) []wire.Fingerprint {
	j.mu.Lock()
	defer j.mu.Unlock()
	if g != j.group {
		return nil
	}
	return slices.Clone(j.cell)
}

func (j *cellJoined) Follow(g wire.UUID, member wire.Fingerprint, members []wire.Fingerprint) {
	j.follows <- slices.Clone(members)
}

// statusDaemon runs a daemon of its own key that answers cell_status
// naming itself and the keys *members holds then.
func statusDaemon(t *testing.T, id *identity.Identity, members *atomic.Pointer[[]wire.Fingerprint]) wire.Replica {
	t.Helper()
	var s *server.Server
	s = server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		if c.Op() != wire.OpCellStatus {
			return &wire.Error{Code: wire.CodeUnsupported}
		}
		rs := []wire.Replica{{Addr: s.Addr().String(), Fingerprint: id.Fingerprint()}}
		for _, fp := range *members.Load() {
			if fp != id.Fingerprint() {
				rs = append(rs, wire.Replica{Addr: "127.0.0.1:9", Fingerprint: fp})
			}
		}
		return c.Result(wire.CellStatus{Self: rs[0], State: "follower", Term: 2, Members: rs})
	})
	must(t, s.Listen(id))
	must(t, s.Start())
	t.Cleanup(s.Close)
	return wire.Replica{Addr: s.Addr().String(), Fingerprint: id.Fingerprint()}
}

// TestWebCellFollowRemovedMember: a member removed from a cell (its host
// taken out, its key stolen since) is in the replica set recorded until
// the page follows the cell; a rogue registry listing the group at that
// key, first, had the page ask it first and record its answer, a set of
// the thief's own keys, which it then dialled. The page records the set a
// majority of the recorded members answer alike (client.CellMembers): b
// and c's, the cell as it is.
func TestWebCellFollowRemovedMember(t *testing.T) {
	d, rogue := wire.Fingerprint{0xff}, wire.Fingerprint{0xfe}
	ids := make([]*identity.Identity, 2)
	for i := range ids {
		id, err := identity.Generate()
		must(t, err)
		ids[i] = id
	}
	// The thief's key first in the reference order, so that the listing
	// names it first, and the page asked it first.
	var thiefID *identity.Identity
	for thiefID == nil || slices.ContainsFunc(ids, func(o *identity.Identity) bool {
		a, b := thiefID.Fingerprint(), o.Fingerprint()
		return bytes.Compare(a[:], b[:]) > 0
	}) {
		id, err := identity.Generate()
		must(t, err)
		thiefID = id
	}
	var thiefSays, cellSays atomic.Pointer[[]wire.Fingerprint]
	thiefSays.Store(&[]wire.Fingerprint{rogue})
	thief, b, c := statusDaemon(t, thiefID, &thiefSays), statusDaemon(t, ids[0], &cellSays), statusDaemon(t, ids[1], &cellSays)
	now := []wire.Fingerprint{b.Fingerprint, c.Fingerprint, d}
	cellSays.Store(&now)
	group := wire.UUID{7}
	j := &cellJoined{group: group, daemon: b.Fingerprint, cell: []wire.Fingerprint{thief.Fingerprint, b.Fingerprint, c.Fingerprint},
		follows: make(chan []wire.Fingerprint, 16)}
	// A rogue registry lists the cell with the thief leading, beside the
	// real members and the new one (the set is another: the page asks).
	rs := []wire.Replica{{Addr: thief.Addr, Fingerprint: thief.Fingerprint, Leader: true}, b, c, {Addr: "127.0.0.1:9", Fingerprint: d}}
	slices.SortFunc(rs, func(x, y wire.Replica) int { return bytes.Compare(x.Fingerprint[:], y.Fingerprint[:]) })
	reg := listingRegistry(t, []wire.GroupEntry{{Group: group, Name: "general", Fingerprint: thief.Fingerprint, Addrs: []string{thief.Addr},
		ExpiresMS: 60_000, Replicas: rs}})
	got := followedCell(t, reg, j, "the page never followed the cell")
	want := sortedFingerprints(now) // now is the daemons' answer, read as they answer
	if !slices.Equal(got, want) {
		t.Fatalf("the page recorded %v as the cell's members; want %v, b and c's word (the thief, a member removed, said itself and %v)", got, want, rogue)
	}
}

// TestWebCellFollowAtLeadersAddrs: the registries list a joined cell's
// leader at its own address (the entry's Addrs) and, in the replica set,
// at one that does not answer (a rogue registry's, or a stale one). The
// page asked the members recorded only at their Replica.Addr, never
// followed the cell, and dialled the set it had recorded; the CLI asks at
// both (client.AddMemberAddrs). The page asks the leader at its listed
// address too, and records the set it answers.
func TestWebCellFollowAtLeadersAddrs(t *testing.T) {
	id, err := identity.Generate()
	must(t, err)
	var says atomic.Pointer[[]wire.Fingerprint]
	b := statusDaemon(t, id, &says)
	d := wire.Fingerprint{0xd}
	now := []wire.Fingerprint{b.Fingerprint, d}
	says.Store(&now)
	group := wire.UUID{7, 1}
	j := &cellJoined{group: group, daemon: b.Fingerprint, cell: []wire.Fingerprint{b.Fingerprint}, follows: make(chan []wire.Fingerprint, 16)}
	rs := []wire.Replica{{Addr: "127.0.0.1:9", Fingerprint: b.Fingerprint, Leader: true}, {Addr: "127.0.0.1:9", Fingerprint: d}}
	reg := listingRegistry(t, []wire.GroupEntry{{Group: group, Name: "general", Fingerprint: b.Fingerprint, Addrs: []string{b.Addr},
		ExpiresMS: 60_000, Replicas: rs}})
	got := followedCell(t, reg, j, "the page never followed the cell (its leader asked only at its replica address, which does not answer)")
	want := sortedFingerprints(now) // now is the daemons' answer, read as they answer
	if !slices.Equal(got, want) {
		t.Fatalf("the page recorded %v as the cell's members; want %v", got, want)
	}
}

// followedCell serves a page over the registry reg with the joined record
// j, opens it (the directory polls), and returns, sorted, the members the
// page records for the cell when it follows it; never names the failure
// if it does not within 30 s.
func followedCell(t *testing.T, reg string, j *cellJoined, never string) []wire.Fingerprint {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Client: newClient(t), Registries: []string{reg}, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, Logger: testLogger(t), Joined: j})
	must(t, err)
	serve(t, s)
	newAPI(t, s).events("") // a page open: the directory polls
	select {
	case got := <-j.follows:
		return sortedFingerprints(got)
	case <-time.After(30 * time.Second):
		t.Fatal(never)
		return nil
	}
}

// sortedFingerprints returns a sorted copy of fps: the members' answer is
// read while the daemons still read it.
func sortedFingerprints(fps []wire.Fingerprint) []wire.Fingerprint {
	out := slices.Clone(fps)
	slices.SortFunc(out, func(x, y wire.Fingerprint) int { return bytes.Compare(x[:], y[:]) })
	return out
}

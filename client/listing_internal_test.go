package client

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// fakeRegistry is a handle that only knows its fingerprint, for Merge.
func fakeRegistry(addr string, fp byte) *Registry {
	return &Registry{addr: addr, p: &peer{pin: wire.Fingerprint{fp}}}
}

func TestMerge(t *testing.T) {
	r1, r2, r3 := fakeRegistry("r1", 1), fakeRegistry("r2", 2), fakeRegistry("r3", 3)
	uuid := func(b byte) wire.UUID { return wire.UUID{b} }
	daemonA, daemonB := wire.Fingerprint{0xa}, wire.Fingerprint{0xb}
	answers := []RegistryListing{
		{Registry: r1, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemonA, Members: 1, LastSeq: 5, ExpiresMS: 3000},
			{Group: uuid(2), Name: "dev", Addrs: []string{"10.0.0.2:7374"}, Fingerprint: daemonA, ExpiresMS: 9000},
		}}},
		{Registry: r2, Err: fmt.Errorf("list: %w", ErrUnreachable)},
		{Registry: r3, Listing: Listing{Groups: []wire.GroupEntry{
			// Renewed later here: its counters win, and its address comes first.
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.1.0.1:7374", "10.0.0.1:7374"}, Fingerprint: daemonA, Members: 2, LastSeq: 7, ExpiresMS: 14000},
			// The same UUID under another daemon key: a separate entry.
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.9.9.9:7374"}, Fingerprint: daemonB, ExpiresMS: 15000},
			{Group: uuid(3), Name: "alpha", Addrs: []string{"10.0.0.3:7374"}, Fingerprint: daemonB, ExpiresMS: 1000},
		}}},
	}
	got := Merge(answers)
	want := []ListedGroup{
		{GroupEntry: wire.GroupEntry{Group: uuid(3), Name: "alpha", Addrs: []string{"10.0.0.3:7374"}, Fingerprint: daemonB, ExpiresMS: 1000}, ListedBy: []wire.Fingerprint{r3.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(2), Name: "dev", Addrs: []string{"10.0.0.2:7374"}, Fingerprint: daemonA, ExpiresMS: 9000}, ListedBy: []wire.Fingerprint{r1.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(1), Name: "lobby", Addrs: []string{"10.1.0.1:7374", "10.0.0.1:7374"}, Fingerprint: daemonA, Members: 2, LastSeq: 7, ExpiresMS: 14000}, ListedBy: []wire.Fingerprint{r1.Fingerprint(), r3.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(1), Name: "lobby", Addrs: []string{"10.9.9.9:7374"}, Fingerprint: daemonB, ExpiresMS: 15000}, ListedBy: []wire.Fingerprint{r3.Fingerprint()}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Merge =\n%+v\nwant\n%+v", got, want)
	}

	if _, err := Listed(answers); err != nil {
		t.Errorf("Listed with two answers: %v", err)
	}
	_, err := Listed([]RegistryListing{{Registry: r2, Err: fmt.Errorf("list: %w", ErrUnreachable)}})
	if !errors.Is(err, ErrNoListing) || !errors.Is(err, ErrUnreachable) {
		t.Errorf("Listed with no answer: %v, want ErrNoListing and the registry's ErrUnreachable", err)
	}
}

// TestMergeCell: registries that list a cell's group under different
// leaders give one entry, the latest registration's, whole (never one
// leader's addresses with another's key); a listing of the same UUID with
// other replicas stays apart.
func TestMergeCell(t *testing.T) {
	r1, r2, r3 := fakeRegistry("r1", 1), fakeRegistry("r2", 2), fakeRegistry("r3", 3)
	a, b, c, x := wire.Fingerprint{0xa}, wire.Fingerprint{0xb}, wire.Fingerprint{0xc}, wire.Fingerprint{0xe}
	cellOf := func(leader wire.Fingerprint, fps ...wire.Fingerprint) []wire.Replica {
		var rs []wire.Replica
		for _, fp := range fps {
			rs = append(rs, wire.Replica{Addr: fmt.Sprintf("10.0.0.%d:7374", fp[0]), Fingerprint: fp, Leader: fp == leader})
		}
		return rs
	}
	g := wire.UUID{1}
	answers := []RegistryListing{
		{Registry: r1, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: g, Name: "lobby", Addrs: []string{"10.0.0.10:7374"}, Fingerprint: a, ExpiresMS: 3000, Replicas: cellOf(a, a, b, c)},
		}}},
		{Registry: r2, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: g, Name: "lobby", Addrs: []string{"10.0.0.11:7374"}, Fingerprint: b, ExpiresMS: 9000, Replicas: cellOf(b, c, b, a)},
		}}},
		{Registry: r3, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: g, Name: "lobby", Addrs: []string{"10.0.0.14:7374"}, Fingerprint: x, ExpiresMS: 12000, Replicas: cellOf(x, x, b, c)},
		}}},
	}
	got := Merge(answers)
	if len(got) != 2 {
		t.Fatalf("Merge gave %d entries, want 2: %+v", len(got), got)
	}
	var cell ListedGroup
	for _, e := range got {
		if e.Fingerprint != x {
			cell = e
		}
	}
	if cell.Fingerprint != b || fmt.Sprint(cell.Addrs) != "[10.0.0.11:7374]" || len(cell.ListedBy) != 2 {
		t.Fatalf("the cell's entry: %+v, want r2's (leader b at 10.0.0.11:7374), listed by r1 and r2", cell)
	}
}

// TestMergeKeepsOtherNames: registries listing one group (its UUID and
// daemon key, or its replicas) under different names give one entry whose
// Name is the longest lease's and whose OtherNames are the rest: a rogue
// registry renaming the real lobby in the merged listing left no trace of
// the name lobby, so that its own group listed as lobby was no duplicate.
func TestMergeKeepsOtherNames(t *testing.T) {
	honest, rogue := fakeRegistry("r1", 1), fakeRegistry("r2", 2)
	daemon, impostor := wire.Fingerprint{0xa}, wire.Fingerprint{0xe}
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: daemon, Leader: true}, {Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{0xb}}}
	got := Merge([]RegistryListing{
		{Registry: honest, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: wire.UUID{1}, Name: "lobby", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 3000},
			{Group: wire.UUID{2}, Name: "builds", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 3000, Replicas: replicas},
			{Group: wire.UUID{3}, Name: "dev", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 3000},
		}}},
		{Registry: rogue, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: wire.UUID{1}, Name: "renamed", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 60000},
			{Group: wire.UUID{2}, Name: "renamed too", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 60000, Replicas: replicas},
			{Group: wire.UUID{3}, Name: "dev", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 60000},
			{Group: wire.UUID{9}, Name: "lobby", Addrs: []string{"10.6.6.6:7374"}, Fingerprint: impostor, ExpiresMS: 60000},
		}}},
	})
	want := map[wire.UUID]string{{1}: "renamed [lobby]", {2}: "renamed too [builds]", {3}: "dev []", {9}: "lobby []"}
	for _, g := range got {
		if s := fmt.Sprintf("%s %v", g.Name, g.OtherNames); s != want[g.Group] {
			t.Errorf("group %v merged as %q, want %q", g.Group[0], s, want[g.Group])
		}
		delete(want, g.Group)
	}
	if len(want) > 0 {
		t.Errorf("groups not merged: %v", want)
	}
}

// TestMergeOneEntryPerRegistry: a rogue registry listing a real group over
// and over, each time under another name with 16 addresses of its own
// and the longest lease, is taken at its first entry of it: the merged
// group holds at most 16 of its addresses, before the real one, and one
// name of its. Every entry counted: 16,000 addresses to dial in turn
// (5 s each where nothing answers) before the real one, compared each with
// all the others as they were merged (this Merge took 89 s), and 1,000
// other names.
func TestMergeOneEntryPerRegistry(t *testing.T) {
	honest, rogue := fakeRegistry("r1", 1), fakeRegistry("r2", 2)
	daemon := wire.Fingerprint{0xa}
	var flood []wire.GroupEntry
	for i := range 1000 {
		e := wire.GroupEntry{Group: wire.UUID{1}, Name: fmt.Sprint("lobby", i), Fingerprint: daemon, ExpiresMS: 60000}
		for j := range wire.MaxAddrs {
			e.Addrs = append(e.Addrs, fmt.Sprintf("10.6.%d.%d:%d", i/250, i%250, 7000+j))
		}
		flood = append(flood, e)
	}
	got := Merge([]RegistryListing{
		{Registry: rogue, Listing: Listing{Groups: flood}},
		{Registry: honest, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: wire.UUID{1}, Name: "lobby", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemon, ExpiresMS: 3000},
		}}},
	})
	if len(got) != 1 {
		t.Fatalf("%d groups merged, want 1", len(got))
	}
	g := got[0]
	if len(g.Addrs) != wire.MaxAddrs+1 || g.Addrs[wire.MaxAddrs] != "10.0.0.1:7374" {
		t.Errorf("%d addresses merged, the real one at %d; want %d, the real one last", len(g.Addrs), slices.Index(g.Addrs, "10.0.0.1:7374"), wire.MaxAddrs+1)
	}
	if g.Name != "lobby0" || !slices.Equal(g.OtherNames, []string{"lobby"}) {
		t.Errorf("merged as %q, %d other names (%q...); want lobby0, [lobby]", g.Name, len(g.OtherNames), g.OtherNames[:min(3, len(g.OtherNames))])
	}
}

// TestMergeCellKeyNotADaemonKey: a cell's group is merged under a name
// made of its replicas' keys (ReplicaSet), which a listing may give as a
// group of one daemon's key (a listing's key is anyone's to claim): a
// rogue registry listing the cell's UUID so had Merge take the two for one
// group. With the rogue's lease the longer, the real cell's entry added its
// members' addresses to a map the rogue's never made: a panic, in every
// program that merged the listings (huddle groups, send, ...); with it the
// shorter, the rogue's registry counted among the cell's. They are two
// groups.
func TestMergeCellKeyNotADaemonKey(t *testing.T) {
	replicas := []wire.Replica{{Addr: "10.0.0.1:7374", Fingerprint: wire.Fingerprint{1}, Leader: true},
		{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}}, {Addr: "10.0.0.3:7374", Fingerprint: wire.Fingerprint{3}}}
	cell := wire.GroupEntry{Group: wire.UUID{7}, Name: "ops", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: wire.Fingerprint{1}, Replicas: replicas, ExpiresMS: 10_000}
	for _, lease := range []uint64{1_000, 1 << 40} {
		rogue := wire.GroupEntry{Group: wire.UUID{7}, Name: "ops", Addrs: []string{"10.6.6.6:7374"}, Fingerprint: ReplicaSet(replicas), ExpiresMS: lease}
		var groups []ListedGroup
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("the rogue's lease %d ms: Merge panicked: %v", lease, p)
				}
			}()
			groups = Merge([]RegistryListing{
				{Registry: fakeRegistry("rogue", 6), Listing: Listing{Groups: []wire.GroupEntry{rogue}}},
				{Registry: fakeRegistry("real", 1), Listing: Listing{Groups: []wire.GroupEntry{cell}}},
			})
		}()
		if len(groups) != 2 {
			t.Errorf("the rogue's lease %d ms: merged %+v; want the cell's group and the rogue's apart", lease, groups)
			continue
		}
		for _, g := range groups {
			if g.Fingerprint == cell.Fingerprint && (len(g.Replicas) != 3 || len(g.ListedBy) != 1 || !slices.Equal(g.MemberAddrs[replicas[1].Fingerprint], []string{replicas[1].Addr})) {
				t.Errorf("the rogue's lease %d ms: the cell's group merged as %+v", lease, g)
			}
			if g.Fingerprint == rogue.Fingerprint && (len(g.Replicas) != 0 || g.MemberAddrs != nil) {
				t.Errorf("the rogue's lease %d ms: the rogue's group merged as %+v", lease, g)
			}
		}
	}
}

package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// readJoinedBefore reads the joined file in dir as huddle binaries before
// session 15's cell lines do (loadJoined as it was at fca605c).
func readJoinedBefore(t *testing.T, dir string) map[joinedGroup]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, joinedFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := make(map[joinedGroup]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 3)
		if len(fields) < 2 {
			continue
		}
		id, err1 := uuid.Parse(fields[0])
		fp, err2 := wire.ParseFingerprint(fields[1])
		if err1 != nil || err2 != nil {
			continue
		}
		name := ""
		if len(fields) == 3 {
			name = fields[2]
		}
		set[joinedGroup{id, fp}] = name
	}
	return set
}

// TestJoinedCellFileCompatible: a cell's group joined is recorded with
// its replica set on a line of its own, which older binaries skip (they
// read every group as before), and a file they wrote (no such line) is
// read as before: the group joined at its key, no set.
func TestJoinedCellFileCompatible(t *testing.T) {
	dir := t.TempDir()
	a, b, c := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}
	cell := wire.GroupEntry{Group: wire.UUID{7}, Name: "general chat", Fingerprint: a, Addrs: []string{"127.0.0.1:1"},
		Replicas: []wire.Replica{{Addr: "127.0.0.1:1", Fingerprint: a, Leader: true}, {Addr: "127.0.0.1:2", Fingerprint: b}, {Addr: "127.0.0.1:3", Fingerprint: c}}}
	one := wire.GroupEntry{Group: wire.UUID{8}, Name: "lobby", Fingerprint: wire.Fingerprint{9}}
	set, _ := loadJoined(dir)
	s := &session{home: dir, joined: set}
	s.record(t.Context(), cell)
	s.record(t.Context(), one)
	old := readJoinedBefore(t, dir)
	if want := map[joinedGroup]string{{cell.Group, a}: "general chat", {one.Group, one.Fingerprint}: "lobby"}; len(old) != 2 || old[joinedGroup{cell.Group, a}] != want[joinedGroup{cell.Group, a}] || old[joinedGroup{one.Group, one.Fingerprint}] != "lobby" {
		t.Errorf("an older binary reads %v; want %v", old, want)
	}
	set, err := loadJoined(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l := set[joinedGroup{cell.Group, a}]; l.name != "general chat" || !slices.Equal(l.cell, []wire.Fingerprint{a, b, c}) {
		t.Errorf("the cell's group reads back as %+v; want its name and its three members", l)
	}
	if l := set[joinedGroup{one.Group, one.Fingerprint}]; l.name != "lobby" || l.cell != nil {
		t.Errorf("the group of one daemon reads back as %+v; want its name, no set", l)
	}

	// A file an older binary wrote: its lines alone.
	if err := os.WriteFile(filepath.Join(dir, joinedFile), []byte(cell.Group.String()+" "+a.String()+" general chat\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err = loadJoined(dir)
	if err != nil {
		t.Fatal(err)
	}
	moved := cell
	moved.Fingerprint, moved.Addrs = b, []string{"127.0.0.1:2"}
	if l := set[joinedGroup{cell.Group, a}]; l.name != "general chat" || l.cell != nil || !set.has(moved) {
		t.Errorf("an older file's cell group reads as %+v (listed under another member: joined %v); want it as before", l, set.has(moved))
	}
}

// TestJoinedCellTrusted: a cell's group whose set is recorded is the
// listing that names a member of it, whatever else it names: one entry,
// of the recorded members alone. A rogue listing of its UUID with one
// member's key and its own leading counted as the group joined, and was
// dialled at the rogue's key; a member the cell's operator removed left
// the group "another key".
func TestJoinedCellTrusted(t *testing.T) {
	a, b, c, d, x := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}, wire.Fingerprint{4}, wire.Fingerprint{0xee}
	id := wire.UUID{7}
	set := joinedSet{{id, a}: {name: "general", cell: []wire.Fingerprint{a, b, c}}}
	replaced := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: id, Name: "general", Fingerprint: d, Addrs: []string{"d:1"},
		Replicas: []wire.Replica{{Addr: "b:1", Fingerprint: b}, {Addr: "c:1", Fingerprint: c}, {Addr: "d:1", Fingerprint: d, Leader: true}}}}
	rogue := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: id, Name: "general", Fingerprint: x, Addrs: []string{"x:1"},
		Replicas: []wire.Replica{{Addr: "x:1", Fingerprint: a}, {Addr: "x:1", Fingerprint: x, Leader: true}}},
		MemberAddrs: map[wire.Fingerprint][]string{a: {"x:1"}, x: {"x:1"}}}
	if !set.has(replaced.GroupEntry) {
		t.Errorf("the cell's group, its member joined at removed, is not the group joined")
	}
	got := set.trusted([]client.ListedGroup{rogue, replaced})
	if len(got) != 1 {
		t.Fatalf("trusted listing: %+v; want one entry", got)
	}
	e := got[0]
	var keys []wire.Fingerprint
	for _, r := range e.Replicas {
		keys = append(keys, r.Fingerprint)
	}
	if e.Fingerprint == x || e.Fingerprint == d || !slices.Equal(keys, []wire.Fingerprint{a, b, c}) || e.MemberAddrs[x] != nil || e.MemberAddrs[d] != nil {
		t.Errorf("trusted entry: %+v; want members a, b, c alone, led by none of the others", e)
	}
	if k, ok := set.find(e.GroupEntry); !ok || k != (joinedGroup{id, a}) {
		t.Errorf("the trusted entry is not the group joined")
	}
	if !set.stale([]client.ListedGroup{rogue, replaced}, joinedGroup{id, a}) {
		t.Errorf("listings naming d and x are taken for the set recorded")
	}

	// b, a member the set trusts, says the cell is b, c, d: recorded,
	// under b's key (a is no longer a member); x's word is not.
	if followed(id, x, []wire.Fingerprint{x})(set) {
		t.Errorf("the rogue's key changed the set")
	}
	if !followed(id, b, []wire.Fingerprint{b, c, d})(set) {
		t.Fatal("b's word was not recorded")
	}
	if l, ok := set[joinedGroup{id, b}]; !ok || len(set) != 1 || !slices.Equal(l.cell, []wire.Fingerprint{b, c, d}) || l.name != "general" {
		t.Errorf("after b's word: %+v; want general at b, members b, c, d", set)
	}
	if followed(id, b, []wire.Fingerprint{d, c, b})(set) {
		t.Errorf("the same set, in another order, was taken for a change")
	}
}

// TestJoinedCellTwoLines: a cell's group recorded on two lines, under two
// members' keys, one with its replica set and one without (binaries before
// session 15 recorded a cell's group again under each member that led at a
// join; the first command of session 15's then followed the cell for one
// of them). A listing led by a third member is found by both lines, and
// find took whichever the map gave first, anew at each call: trusted, which
// asks find again of each listing, then found no listing of the line it
// had picked, and gave an empty entry in the group's place (no UUID, no
// key) about half the time, the group itself gone from the listing the
// command resolved against. Each listing is now found by one line, the
// same at every call.
func TestJoinedCellTwoLines(t *testing.T) {
	a, b, c := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}
	id := wire.UUID{7}
	set := joinedSet{
		{id, a}: {name: "general", cell: []wire.Fingerprint{a, b, c}},
		{id, b}: {name: "general"},
	}
	listed := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: id, Name: "general", Fingerprint: c, Addrs: []string{"c:1"},
		Replicas: []wire.Replica{{Addr: "a:1", Fingerprint: a}, {Addr: "b:1", Fingerprint: b}, {Addr: "c:1", Fingerprint: c, Leader: true}}}}
	first, _ := set.find(listed.GroupEntry)
	for range 64 {
		if k, ok := set.find(listed.GroupEntry); !ok || k != first {
			t.Fatalf("find gave %v (%v), then %v: want the same line every time", first, ok, k)
		}
		got := set.trusted([]client.ListedGroup{listed})
		if len(got) != 1 || got[0].Group != id || got[0].Fingerprint.IsZero() {
			t.Fatalf("trusted listing: %+v; want the group, once", got)
		}
	}
}

// TestJoinedOldLinePinned: a cell's group on a line without its replica
// set (written by a binary before session 15) trusts the key the line
// holds alone until a follow records the set: a rogue's listing of that
// key beside one of its own, leading, was taken as it was, and the
// command (and huddle web, through Cell) dialled the rogue's key whenever
// the follow went unanswered.
func TestJoinedOldLinePinned(t *testing.T) {
	a, x := wire.Fingerprint{1}, wire.Fingerprint{0xee}
	id := wire.UUID{7}
	set := joinedSet{{id, a}: {name: "general"}}
	rogue := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: id, Name: "general", Fingerprint: x, Addrs: []string{"x:1"},
		Replicas: []wire.Replica{{Addr: "a:1", Fingerprint: a}, {Addr: "x:1", Fingerprint: x, Leader: true}}},
		MemberAddrs: map[wire.Fingerprint][]string{a: {"a:1", "x:2"}, x: {"x:1"}}}
	if !set.has(rogue.GroupEntry) {
		t.Fatal("the listing naming the key joined is not the group joined")
	}
	got := set.trusted([]client.ListedGroup{rogue})
	if len(got) != 1 {
		t.Fatalf("trusted listing: %+v; want one entry", got)
	}
	e := got[0]
	if e.Fingerprint != a || len(e.Replicas) != 1 || e.Replicas[0].Fingerprint != a || e.MemberAddrs[x] != nil || !slices.Contains(e.Addrs, "a:1") {
		t.Errorf("trusted entry: %+v; want the key joined alone, at its listed address", e)
	}
	if !set.stale([]client.ListedGroup{rogue}, joinedGroup{id, a}) {
		t.Errorf("the old line is not followed")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, joinedFile), []byte(id.String()+" "+a.String()+" general\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &joinedRecord{dir: dir}
	if got := r.Cell(id); !slices.Equal(got, []wire.Fingerprint{a}) {
		t.Errorf("huddle web's record of the old line: %v; want the key joined alone", got)
	}
	// Followed, the line records the set the member answered.
	r.Follow(id, a, []wire.Fingerprint{a, x})
	if got := r.Cell(id); !slices.Equal(got, []wire.Fingerprint{a, x}) {
		t.Errorf("after a's word: %v; want a, x", got)
	}
}

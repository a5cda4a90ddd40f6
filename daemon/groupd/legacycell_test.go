package groupd

import (
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/wire"
)

// TestCellLegacyNamesShown: a cell keeps the names its groups were created
// under and its members joined under, and one of before session 23 may
// hold a name with a blank at an end ("team ", " bob "), which registries
// now refuse in a registration. The group daemon serves such a group, and
// shows such a member, under the name it shows as, as it reads a members
// file of before (TestLegacyNamesLoad): the cell's replica opened with
// them is named "team", its member "bob".
func TestCellLegacyNamesShown(t *testing.T) {
	leader, _ := cellLeader(t, startTestCell(t, 3, nil))
	h := leader.d.host
	id := uuid.New()
	r, err := h.OpenGroup(cell.GroupSpec{ID: id, Name: "team ", Epoch: 1, DedupWindow: 1024})
	must(t, err)
	fp := wire.Fingerprint{9}
	r.Joined(cell.Member{Fingerprint: fp, Name: " bob\u3000", Joined: 1})
	h.mu.Lock()
	g := h.groups[id]
	h.mu.Unlock()
	if g == nil {
		t.Fatalf("the cell's group %s is not hosted after OpenGroup", id)
	}
	if g.name != "team" {
		t.Fatalf("the cell's group created as %q hosted as %q, want %q", "team ", g.name, "team")
	}
	if ms := g.memberList(0); len(ms) != 1 || ms[0].Fingerprint != fp || ms[0].Name != "bob" {
		t.Errorf("a member joined as %q in the cell listed as %+v, want %q", " bob\u3000", ms, "bob")
	}
	if err := wire.CheckName(g.name); err != nil {
		t.Errorf("the group's name %q, which it registers under: %v", g.name, err)
	}
}

// TestCellLegacyNameTwice: a cell of before session 23 may hold a group
// created as "team" and another as "team " (and "team" and U+3000), which
// show alike: a daemon configured with --group team takes the one created
// as "team", and of those that only show as a name, the first in the order
// of the names they were created under (as groups.json's entries are
// renamed: loadGroupIDs). byName found every one, so awaitCellGroups,
// finding more groups than names, waited for ever.
func TestCellLegacyNameTwice(t *testing.T) {
	leader, _ := cellLeader(t, startTestCell(t, 3, nil))
	h := leader.d.host
	open := func(name string) wire.UUID {
		t.Helper()
		id := uuid.New()
		_, err := h.OpenGroup(cell.GroupSpec{ID: id, Name: name, Epoch: 1, DedupWindow: 1024})
		must(t, err)
		return wire.UUID(id)
	}
	legacy := open("team ")
	exact := open("team")
	second := open("lunch\u3000")
	first := open("lunch ")
	for _, tc := range []struct {
		name string
		want wire.UUID
	}{
		{"team", exact},
		{"lunch", first},
	} {
		found, _ := h.byName([]string{tc.name})
		if len(found) != 1 || found[0].id != tc.want {
			var ids []wire.UUID
			for _, g := range found {
				ids = append(ids, g.id)
			}
			t.Errorf("byName(%q) = %v, want [%v] (created as %q: %v, %v; as %q: %v, %v)", tc.name, ids, tc.want, "team", exact, legacy, "lunch ", first, second)
		}
	}
}

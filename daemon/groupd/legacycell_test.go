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

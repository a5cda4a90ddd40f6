package cell

import (
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestLackingByNameOrUUID: a configured group the cell has under its name
// or under its UUID is not created again. A cell's group created under a
// name the rules refuse since session 23 ("team ") is configured under
// the name it shows as ("team") with its UUID (the group daemon renames
// its groups.json entry): it was proposed again at each leader's start,
// the create refused by the cell's state and logged as a group created.
func TestLackingByNameOrUUID(t *testing.T) {
	team, lobby, fresh := wire.UUID{1}, wire.UUID{2}, wire.UUID{3}
	have := []*groupState{{spec: GroupSpec{ID: team, Name: "team "}}, {spec: GroupSpec{ID: lobby, Name: "lobby"}}}
	got := lacking(have, []GroupConfig{
		{ID: team, Name: "team"},          // the legacy group, by UUID
		{ID: wire.UUID{9}, Name: "lobby"}, // by name (a state directory's UUID lost)
		{ID: fresh, Name: "fresh"},        // new
		{Name: "unnamed id"},              // new, its UUID made at create
	})
	if want := []GroupConfig{{ID: fresh, Name: "fresh"}, {Name: "unnamed id"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lacking = %v, want %v", got, want)
	}
	// A member whose state directory never held "team " (added since, or
	// its directory new) configures "team" under a UUID of its own: the
	// group that shows as "team" is that group, not one to create beside
	// it (which every member would then serve as "team", without the
	// history).
	if got := lacking(have, []GroupConfig{{ID: wire.UUID{7}, Name: "team"}}); len(got) != 0 {
		t.Errorf("lacking = %v for \"team\" under a new UUID beside the cell's \"team \", want none", got)
	}
}

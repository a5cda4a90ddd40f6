package wire

import (
	"errors"
	"strings"
	"testing"
)

// TestResultsHoldReplicas: an info or a cell_add/cell_remove answer
// naming more members of a cell than any listing holds (MaxReplicas), or
// a member without a key, or an info naming its group longer than a name
// may be, is refused as it is decoded. Both were taken as they came: a
// daemon's answer could name as many members as a frame holds, which a
// client took for the cell's.
func TestResultsHoldReplicas(t *testing.T) {
	var many []Replica
	for i := range MaxReplicas + 1 {
		many = append(many, Replica{Addr: "10.0.0.1:7374", Fingerprint: Fingerprint{byte(i + 1)}})
	}
	keyless := []Replica{{Addr: "10.0.0.1:7374"}}
	for _, tc := range []struct {
		name  string
		body  any
		into  any
		large bool // ErrTooLarge, not another rule
	}{
		{"info of ten replicas", Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: many}, new(Info), true},
		{"info of a keyless replica", Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: keyless}, new(Info), false},
		{"info of a long name", Info{Group: UUID{7}, Name: strings.Repeat("n", MaxNameBytes+1), Epoch: 1}, new(Info), true},
		{"cell change of ten members", CellChanged{Members: many}, new(CellChanged), true},
		{"cell change of a keyless member", CellChanged{Members: keyless}, new(CellChanged), false},
		{"cell change of no member", CellChanged{}, new(CellChanged), false},
	} {
		b, err := encMode.Marshal(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		err = decodeBody(bodyDecMode, b, tc.into)
		if err == nil || tc.large != errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want it refused (too large: %v)", tc.name, err, tc.large)
		}
	}
	b, err := encMode.Marshal(Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: many[:MaxReplicas]})
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeBody(bodyDecMode, b, new(Info)); err != nil {
		t.Errorf("info of %d replicas: %v", MaxReplicas, err)
	}
}

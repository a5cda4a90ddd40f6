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
	wantRefused(t, []refusedBody{
		{"info of ten replicas", Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: many}, new(Info), true},
		{"info of a keyless replica", Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: keyless}, new(Info), false},
		{"info of a long name", Info{Group: UUID{7}, Name: strings.Repeat("n", MaxNameBytes+1), Epoch: 1}, new(Info), true},
		{"cell change of ten members", CellChanged{Members: many}, new(CellChanged), true},
		{"cell change of a keyless member", CellChanged{Members: keyless}, new(CellChanged), false},
		{"cell change of no member", CellChanged{}, new(CellChanged), false},
	})
	b, err := encMode.Marshal(Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: many[:MaxReplicas]})
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeBody(bodyDecMode, b, new(Info)); err != nil {
		t.Errorf("info of %d replicas: %v", MaxReplicas, err)
	}
}

// TestConfiguredReplicasMayBeLegacy: a cell_status or cell_add/cell_remove
// answer naming a member at an address that is not host:port (a
// configuration made before session 20 may hold "box:http") is taken, the
// member listed as it is and not Dialable, so that huddle cell
// status can show the cell its operator must repair; until session 22 the
// whole answer was refused. An info or a registration listing such a
// replica is still refused (its groups are served at host:port only), and
// an empty or over-long address in any of them.
func TestConfiguredReplicasMayBeLegacy(t *testing.T) {
	leader := Replica{Addr: "10.0.0.1:7374", Fingerprint: Fingerprint{1}, Leader: true}
	legacy := Replica{Addr: "box:http", Fingerprint: Fingerprint{2}}
	members := []Replica{leader, legacy}
	for _, tc := range []struct {
		name string
		body any
		into any
	}{
		{"cell status of a legacy member", CellStatus{Self: leader, State: "leader", LastContact: -1, Leader: &leader, Members: members}, new(CellStatus)},
		{"cell status led by a legacy member", CellStatus{Self: leader, State: "follower", LastContact: 3, Leader: &Replica{Addr: "box:http", Fingerprint: Fingerprint{2}, Leader: true},
			Members: []Replica{{Addr: leader.Addr, Fingerprint: leader.Fingerprint}, {Addr: "box:http", Fingerprint: Fingerprint{2}, Leader: true}}}, new(CellStatus)},
		{"cell status, a legacy member's key mismatch", CellStatus{Self: leader, State: "leader", LastContact: -1, Members: members,
			KeyMismatches: []CellKeyMismatch{{Member: legacy, Addr: "10.0.0.3:7374", Presented: Fingerprint{3}}}}, new(CellStatus)},
		{"cell change of a legacy member", CellChanged{Members: members}, new(CellChanged)},
	} {
		b, err := encMode.Marshal(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeBody(bodyDecMode, b, tc.into); err != nil {
			t.Errorf("%s: %v, want it taken", tc.name, err)
		}
	}
	var st CellStatus
	b, _ := encMode.Marshal(CellStatus{Self: leader, State: "leader", LastContact: -1, Members: members})
	if err := decodeBody(bodyDecMode, b, &st); err != nil || len(st.Members) != 2 || st.Members[1] != legacy || Dialable(st.Members[1].Addr) || !Dialable(st.Members[0].Addr) || Dialable("224.0.0.251:5353") || Dialable("0.0.0.0:7001") {
		t.Errorf("cell status decoded as %+v (%v): want both members, the second marked legacy", st.Members, err)
	}

	wantRefused(t, []refusedBody{
		{"info of a legacy replica", Info{Group: UUID{7}, Name: "g", Epoch: 1, Replicas: members}, new(Info), false},
		{"cell status of an empty address", CellStatus{Self: leader, State: "leader", Members: []Replica{leader, {Fingerprint: Fingerprint{2}}}}, new(CellStatus), false},
		{"cell status of a long address", CellStatus{Self: leader, State: "leader", Members: []Replica{leader, {Addr: strings.Repeat("a", MaxAddrBytes+1), Fingerprint: Fingerprint{2}}}}, new(CellStatus), true},
		{"cell change of a keyless legacy member", CellChanged{Members: []Replica{leader, {Addr: "box:http"}}}, new(CellChanged), false},
	})
}

// refusedBody is an answer's body that decoding must refuse: large says
// it is refused as ErrTooLarge, not by another rule.
type refusedBody struct {
	name  string
	body  any
	into  any
	large bool
}

// wantRefused encodes each body and checks that decoding it into its into
// is refused, for the reason it names.
func wantRefused(t *testing.T, cases []refusedBody) {
	t.Helper()
	for _, tc := range cases {
		b, err := encMode.Marshal(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		err = decodeBody(bodyDecMode, b, tc.into)
		if err == nil || tc.large != errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want it refused (too large: %v)", tc.name, err, tc.large)
		}
	}
}

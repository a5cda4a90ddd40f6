package wire

import (
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

// TestCellKeyMismatchEncoding: cell_status's key 12 (a member's
// configuration naming a wrong key, PROTOCOL.md) is encoded as
// documented, decodes back, is absent from a status without mismatches
// (so older clients see the same bytes), and one without the key presented
// or with a bad address is refused.
func TestCellKeyMismatchEncoding(t *testing.T) {
	old := Fingerprint{9}
	k := CellKeyMismatch{Member: Replica{Addr: "10.0.0.3:7374", Fingerprint: Fingerprint{3}}, Addr: "10.0.0.1:7374", Named: &old, Presented: Fingerprint{1}}
	b, err := encMode.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	want := "a4" +
		"01a2" + "016d31302e302e302e333a37333734" + "025820" + "03" + "00000000000000000000000000000000000000000000000000000000000000" +
		"026d31302e302e302e313a37333734" +
		"035820" + "09" + "00000000000000000000000000000000000000000000000000000000000000" +
		"045820" + "01" + "00000000000000000000000000000000000000000000000000000000000000"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoded\n%s\nwant\n%s", got, want)
	}
	st := CellStatus{Self: Replica{Addr: "10.0.0.1:7374", Fingerprint: Fingerprint{1}}, State: "leader", LastContact: -1}
	plain, err := encMode.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	st.KeyMismatches = []CellKeyMismatch{k, {Member: k.Member, Addr: k.Addr, Presented: Fingerprint{1}}}
	full, err := encMode.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got CellStatus
	if err := decodeBody(bodyDecMode, full, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.KeyMismatches) != 2 || *got.KeyMismatches[0].Named != old || got.KeyMismatches[1].Named != nil || got.KeyMismatches[1].Presented != (Fingerprint{1}) {
		t.Fatalf("decoded %+v", got.KeyMismatches)
	}
	var older CellStatus
	if err := decodeBody(bodyDecMode, plain, &older); err != nil || older.KeyMismatches != nil {
		t.Fatalf("a status without mismatches: %+v, %v", older.KeyMismatches, err)
	}
	for _, bad := range []CellKeyMismatch{
		{Member: k.Member, Addr: k.Addr},
		{Member: k.Member, Addr: "10.0.0.1", Presented: Fingerprint{1}},
		{Member: Replica{Addr: "10.0.0.3:7374"}, Addr: k.Addr, Presented: Fingerprint{1}},
	} {
		st.KeyMismatches = []CellKeyMismatch{bad}
		b, err := encMode.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeBody(bodyDecMode, b, &got); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: %v, want bad_request", bad, err)
		}
	}
}

// TestCellStatusGroupsBounded: cell_status lists at most MaxCellGroups
// groups, and says how many more the member hosts in key 13
// (groups_omitted), absent when none is (older clients see the same
// bytes). A status listing more, or a group's name longer than a name may
// be, is refused: a member hosting many groups, or a hostile one, made an
// answer as large as a frame, every byte of which a client decoded.
func TestCellStatusGroupsBounded(t *testing.T) {
	st := CellStatus{Self: Replica{Addr: "10.0.0.1:7374", Fingerprint: Fingerprint{1}}, State: "leader", LastContact: -1}
	plain, err := encMode.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	st.GroupsOmitted = 5
	omitted, err := encMode.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	// The same map with one more pair, 13: 5.
	if got, want := hex.EncodeToString(omitted), "aa"+hex.EncodeToString(plain)[2:]+"0d05"; got != want {
		t.Fatalf("groups_omitted 5:\n%s\nwant\n%s", got, want)
	}
	var got CellStatus
	if err := decodeBody(bodyDecMode, omitted, &got); err != nil || got.GroupsOmitted != 5 {
		t.Fatalf("decoded groups_omitted %d, %v", got.GroupsOmitted, err)
	}
	name := string(make([]byte, MaxNameBytes))
	for i := range MaxCellGroups {
		st.Groups = append(st.Groups, CellGroup{Group: UUID{byte(i), byte(i >> 8)}, Name: name, Epoch: 1, Last: 1 << 40, Members: 8192})
	}
	full, err := encMode.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a status of %d groups with the longest names: %d bytes", MaxCellGroups, len(full))
	if err := decodeBody(bodyDecMode, full, &got); err != nil || len(got.Groups) != MaxCellGroups {
		t.Fatalf("a status of %d groups: %d decoded, %v", MaxCellGroups, len(got.Groups), err)
	}
	for what, bad := range map[string]func(*CellStatus){
		"a group too many":       func(s *CellStatus) { s.Groups = append(s.Groups, s.Groups[0]) },
		"a name a byte too long": func(s *CellStatus) { s.Groups = []CellGroup{{Name: name + "x"}} },
	} {
		s := st
		s.Groups = slices.Clone(st.Groups)
		bad(&s)
		b, err := encMode.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeBody(bodyDecMode, b, &got); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", what, err)
		}
	}
}

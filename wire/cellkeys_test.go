package wire

import (
	"encoding/hex"
	"errors"
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

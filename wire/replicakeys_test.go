package wire

import (
	"bytes"
	"errors"
	"testing"
)

// TestReplicaKeysOnce: a list of replicas names each key once, as a
// cell's configuration does (raft's server IDs are the members'
// fingerprints). Until session 23 one key could be listed up to
// MaxReplicas times, each copy at any address: a registration listed one
// daemon as nine replicas, and an info had a client try one key at nine
// addresses. A registration, an info, a refusal's replicas and a cell's
// status naming a key twice are refused; a listing's entry naming one
// twice is left out and the rest of the page kept, as a registry of
// before may list one (a page refused whole for it would hide every
// group on it).
func TestReplicaKeysOnce(t *testing.T) {
	a := Replica{Addr: "10.0.0.1:7374", Fingerprint: tDaemon, Leader: true}
	b := Replica{Addr: "10.0.0.2:7374", Fingerprint: Fingerprint{2}}
	again := Replica{Addr: "10.0.0.3:7374", Fingerprint: tDaemon}
	twice := []Replica{a, b, again}

	var buf bytes.Buffer
	if err := WriteRequest(&buf, OpRegister, &Register{Group: tGroup, Name: "lunch", Port: 7374, Replicas: twice}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeRequest(&buf); err == nil || errors.Is(err, ErrTooLarge) {
		t.Errorf("a registration naming key %s twice: %v, want it refused as a bad request", tDaemon.Short(), err)
	}
	buf.Reset()
	if err := WriteRequest(&buf, OpRegister, &Register{Group: tGroup, Name: "lunch", Port: 7374, Replicas: []Replica{a, b}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeRequest(&buf); err != nil {
		t.Errorf("a registration naming two keys once each: %v", err)
	}

	wantRefused(t, []refusedBody{
		{"info naming a key twice", Info{Group: tGroup, Name: "g", Epoch: 1, Replicas: twice}, new(Info), false},
		{"refusal naming a key twice", Error{Code: CodeUnavailable, Message: "ask another", Replicas: twice}, new(Error), false},
		{"cell status naming a key twice", CellStatus{Self: a, State: "leader", LastContact: -1, Members: twice}, new(CellStatus), false},
		{"cell change naming a key twice", CellChanged{Members: twice}, new(CellChanged), false},
	})

	other := GroupEntry{Group: UUID{7}, Name: "after", Addrs: []string{"10.0.0.8:7401"}, Fingerprint: tDaemon}
	page := &Groups{Epoch: 1, Groups: []GroupEntry{{Group: tGroup, Name: "lunch", Addrs: []string{a.Addr}, Fingerprint: tDaemon, Replicas: twice}, other}}
	switch back, err := listedBack(t, page); {
	case err != nil:
		t.Errorf("a listing with an entry naming a key twice: the page refused (%v), want the entry left out", err)
	case len(back.Groups) != 1 || back.Groups[0].Group != other.Group:
		t.Errorf("a listing with an entry naming a key twice: kept %+v, want only the entry after it", back.Groups)
	case len(back.Skipped) != 1 || back.Skipped[0].Group != tGroup || !errors.Is(back.Skipped[0].Err, errRepeatedReplica):
		t.Errorf("a listing with an entry naming a key twice: skipped %+v, want that entry, its key repeated", back.Skipped)
	}
}

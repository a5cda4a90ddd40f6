package wire

import (
	"bytes"
	"errors"
	"testing"
)

// TestListedAddressIsHostPort: a listing's addresses are held to what a
// registration's may be, host:port (TestAddressIsHostPort), as its
// replicas' are: they were held to their length only, so a registry
// could list a group at "10.0.0.1:http" (a service name a resolver turns
// into port 80), at port 0, or at a host of blanks and line breaks, for
// every client to dial. An entry with such an address, its own or a
// replica's, is dropped into Skipped and the rest of the page kept: a
// registry of before session 12 listed what anyone registered, and a
// page refused whole for one such entry (session 18) hid every group of
// it from every new client.
func TestListedAddressIsHostPort(t *testing.T) {
	other := GroupEntry{Group: UUID{7}, Name: "after", Addrs: []string{"10.0.0.8:7401"}, Fingerprint: tDaemon}
	decode := func(e GroupEntry) (Groups, error) {
		return listedBack(t, &Groups{Epoch: 1, Groups: []GroupEntry{e, other}, Next: []byte("more")})
	}
	at := func(a string) GroupEntry {
		return GroupEntry{Group: tGroup, Name: "lunch", Addrs: []string{"10.0.0.7:7401", a}, Fingerprint: tDaemon}
	}
	replicaAt := func(a string) GroupEntry {
		return GroupEntry{Group: tGroup, Name: "lunch", Addrs: []string{"10.0.0.7:7401"}, Fingerprint: tDaemon,
			Replicas: []Replica{{Addr: "10.0.0.7:7401", Fingerprint: tDaemon, Leader: true}, {Addr: a, Fingerprint: Fingerprint{2}}}}
	}
	for _, a := range []string{"10.0.0.1:7374", "[fd00::1]:7374", "[fe80::1%eth0]:7400", "box.local:1", "hôte:65535"} {
		for _, e := range []GroupEntry{at(a), replicaAt(a)} {
			back, err := decode(e)
			if err != nil || len(back.Groups) != 2 || len(back.Skipped) != 0 {
				t.Errorf("a listing at %q: %d entries, %d skipped, %v; want both kept", a, len(back.Groups), len(back.Skipped), err)
			}
		}
	}
	for _, a := range []string{
		"10.0.0.1", "10.0.0.1:", ":7374", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http", "10.0.0.1:-1",
		"\x1b[2J:1", "box\n10.0.0.9:1", "a b:1", "a\u202eb:1", "[::1:1",
	} {
		for _, e := range []GroupEntry{at(a), replicaAt(a)} {
			back, err := decode(e)
			switch {
			case err != nil:
				t.Errorf("a listing at %q: the page refused (%v), want its entry skipped and the rest kept", a, err)
			case len(back.Groups) != 1 || back.Groups[0].Group != other.Group || string(back.Next) != "more":
				t.Errorf("a listing at %q: kept %+v (next %q), want only the entry after it", a, back.Groups, back.Next)
			case len(back.Skipped) != 1 || back.Skipped[0].Group != tGroup || back.Skipped[0].Name != "lunch" || !errors.Is(back.Skipped[0].Err, errNotHostPort):
				t.Errorf("a listing at %q: skipped %+v, want the one entry, not host:port", a, back.Skipped)
			}
		}
	}
}

// listedBack writes g as a list result and reads it back as a client
// does: what it keeps, or why it refuses the page.
func listedBack(t *testing.T, g *Groups) (Groups, error) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteResponse(&buf, KindResult, g); err != nil {
		t.Fatal(err)
	}
	_, raw, err := ReadResponse(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	var back Groups
	err = raw.Decode(&back)
	return back, err
}

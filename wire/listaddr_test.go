package wire

import (
	"bytes"
	"testing"
)

// TestListedAddressIsHostPort: a listing's addresses are held to what a
// registration's may be, host:port (TestAddressIsHostPort), as its
// replicas' were: they were held to their length only, so a registry
// could list a group at "10.0.0.1:http" (a service name a resolver turns
// into port 80), at port 0, or at a host of blanks and line breaks, for
// every client to dial.
func TestListedAddressIsHostPort(t *testing.T) {
	decode := func(a string) error {
		var buf bytes.Buffer
		g := &Groups{Epoch: 1, Groups: []GroupEntry{{Group: tGroup, Name: "lunch", Addrs: []string{"10.0.0.7:7401", a}, Fingerprint: tDaemon}}}
		if err := WriteResponse(&buf, KindResult, g); err != nil {
			t.Fatal(err)
		}
		_, raw, err := ReadResponse(&buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		var back Groups
		return raw.Decode(&back)
	}
	for _, a := range []string{"10.0.0.1:7374", "[fd00::1]:7374", "[fe80::1%eth0]:7400", "box.local:1", "hôte:65535"} {
		if err := decode(a); err != nil {
			t.Errorf("a listing at %q refused: %v", a, err)
		}
	}
	for _, a := range []string{
		"10.0.0.1", "10.0.0.1:", ":7374", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http", "10.0.0.1:-1",
		"\x1b[2J:1", "box\n10.0.0.9:1", "a b:1", "a\u202eb:1", "[::1:1",
	} {
		if err := decode(a); err == nil {
			t.Errorf("a listing at %q: accepted, want refused", a)
		}
	}
}

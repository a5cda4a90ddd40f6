package wire

import (
	"bytes"
	"testing"
)

// TestAddressIsDialable: an address a registration, a replica or a
// listing names is one host's: an IP literal that is unspecified,
// multicast (the mDNS group, any other) or the IPv4 broadcast address is
// bad_request, where the registry and a cell's members read it, and
// clients leave out a listed entry naming one (§7.4: an entry whose
// address is not host:port). Until session 22 a stranger could list a
// group at 224.0.0.251:5353, and a rogue registry a cell's real member
// there, so that each client dialling it sent its QUIC Initials to the
// whole link. Unicast addresses of every kind are kept.
func TestAddressIsDialable(t *testing.T) {
	for _, a := range []string{
		"0.0.0.0:7374", "[::]:7374", "224.0.0.251:5353", "239.255.255.250:1900", "[ff02::fb]:5353",
		"[ff05::1%eth0]:1", "255.255.255.255:7373", "[::ffff:224.0.0.1]:1", "[::ffff:0.0.0.0]:1",
	} {
		for _, err := range registersNaming(t, a) {
			if err == nil || ToError(err).Code != CodeBadRequest {
				t.Errorf("%q: %v, want bad_request", a, err)
			}
		}
		if CheckAddr(a) == nil {
			t.Errorf("CheckAddr(%q) passed", a)
		}
	}
	for _, a := range []string{
		"10.0.0.255:7374", "192.168.1.255:1", "127.0.0.1:7373", "[::1]:7373", "[fe80::1%eth0]:7374",
		"169.254.0.1:1", "box.local:7374", "224.example:1",
	} {
		if err := CheckAddr(a); err != nil {
			t.Errorf("CheckAddr(%q): %v, want it kept", a, err)
		}
	}
	// A client leaves out a listed entry naming one, says so, and keeps
	// the rest of the page.
	var buf bytes.Buffer
	if err := WriteResponse(&buf, KindResult, Groups{Epoch: 1, Groups: []GroupEntry{
		{Group: tGroup, Name: "rogue", Addrs: []string{"224.0.0.251:5353"}, Fingerprint: Fingerprint{1}},
		{Group: tGroup, Name: "kept", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: Fingerprint{2}},
	}}); err != nil {
		t.Fatal(err)
	}
	_, v, err := decodeResponse(&buf, OpList)
	if err != nil {
		t.Fatal(err)
	}
	if gs := v.(*Groups); len(gs.Groups) != 1 || gs.Groups[0].Name != "kept" || len(gs.Skipped) != 1 || gs.Skipped[0].Name != "rogue" {
		t.Fatalf("listing %+v: want the entry at the mDNS group left out and said, the other kept", gs)
	}
}

package cli

import (
	"fmt"
	"slices"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestDoctorUnlistedAddrsBounded: when a lone daemon answers at none of
// its listed addresses, doctor asks its port at the host of the
// registries that list its group, and nowhere else: a rogue registry
// listing a group at 16 ports had doctor ask each of them at every other
// registry's host too (a port scan of hosts it does not run).
func TestDoctorUnlistedAddrsBounded(t *testing.T) {
	var rogue, honest wire.Fingerprint
	rogue[0], honest[0] = 1, 2
	l := &listing{reports: []registryReport{
		{addr: "127.0.0.5:7373", fp: rogue},
		{addr: "127.0.0.6:7373", fp: honest},
	}}
	var listed []string
	for i := range wire.MaxAddrs {
		listed = append(listed, fmt.Sprintf("10.9.0.%d:%d", i+1, 9000+i))
	}
	g := client.ListedGroup{ListedBy: []wire.Fingerprint{rogue}}
	got := unlistedAddrs(l, g, listed)
	for _, a := range got {
		if a != "127.0.0.5:9000" && a != "127.0.0.5:9001" {
			t.Errorf("asks %s: want only the listing registry's host, at the first %d ports", a, maxUnlistedPorts)
		}
	}
	if !slices.Contains(got, "127.0.0.5:9000") {
		t.Errorf("asks %v: want the daemon's first port at its registry's host, 127.0.0.5:9000", got)
	}
}

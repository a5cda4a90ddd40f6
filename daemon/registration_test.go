package daemon

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestRegistration runs a group daemon against a real registry: it
// registers its groups, renews them with fresh counters, registers again
// after the registry restarts (same key, new epoch), and deregisters them
// on Close.
func TestRegistration(t *testing.T) {
	regDir := t.TempDir()
	r1, err := NewRegistry(RegistryConfig{StateDir: regDir, Listen: "127.0.0.1:0", LeaseTTL: 300 * time.Millisecond, Logger: testLogger(t)})
	must(t, err)
	must(t, r1.Listen())
	r1done := make(chan error, 1)
	go func() { r1done <- r1.Serve(context.Background()) }()
	regAddr := r1.Addr().String()

	d, stop := startGroupDaemon(t, GroupConfig{
		Groups:              []GroupSpec{{Name: "general"}, {Name: "ops", Secret: []byte("s")}},
		Registry:            regAddr,
		RegistryFingerprint: r1.Fingerprint(),
	})
	port := d.Addr().(*net.UDPAddr).Port
	lister := dial(t, r1.Addr(), r1.Fingerprint(), nil)
	listed := func(p *peer) map[wire.UUID]wire.GroupEntry {
		m := make(map[wire.UUID]wire.GroupEntry)
		for _, e := range listGroups(t, p).Groups {
			m[e.Group] = e
		}
		return m
	}
	eventually(t, "both groups registered", func() bool { return len(listed(lister)) == 2 })
	for _, h := range d.Groups() {
		e := listed(lister)[h.ID]
		if e.Name != h.Name || e.Fingerprint != d.Fingerprint() || len(e.Addrs) != 1 || e.Addrs[0] != fmt.Sprintf("127.0.0.1:%d", port) {
			t.Fatalf("entry %+v for %+v", e, h)
		}
	}

	// Renewals carry the counters.
	p := joined(t, d, "p")
	_, err = p.send(gid(d), outgoing("a", "b"))
	must(t, err)
	eventually(t, "a renew with the new counters", func() bool {
		e := listed(lister)[gid(d)]
		return e.Members == 1 && e.LastSeq == 2
	})

	// The registry restarts on the same address with the same key: the
	// daemon's next renew gets epoch_mismatch and it registers again.
	must(t, r1.Close())
	must(t, <-r1done)
	r2 := startRegistry(t, RegistryConfig{StateDir: regDir, Listen: regAddr, LeaseTTL: time.Hour})
	lister2 := dial(t, r2.Addr(), r2.Fingerprint(), nil)
	eventually(t, "the groups registered again", func() bool { return len(listed(lister2)) == 2 })
	if e := listed(lister2)[gid(d)]; e.LastSeq != 2 || e.Members != 1 {
		t.Fatalf("after re-registering: %+v", e)
	}

	// Close deregisters at once (the new leases last an hour).
	stop()
	if got := listGroups(t, lister2).Groups; len(got) != 0 {
		t.Fatalf("listed after the daemon closed: %+v", got)
	}
}

// TestRegistrationAdvertise checks that advertised addresses are what the
// registry lists.
func TestRegistrationAdvertise(t *testing.T) {
	r := startRegistry(t, RegistryConfig{})
	startGroupDaemon(t, GroupConfig{
		Registry:            r.Addr().String(),
		RegistryFingerprint: r.Fingerprint(),
		Advertise:           []string{"chat.example:7400", "[2001:db8::1]:7400"},
	})
	lister := dial(t, r.Addr(), r.Fingerprint(), nil)
	eventually(t, "the group registered", func() bool { return len(listGroups(t, lister).Groups) == 1 })
	e := listGroups(t, lister).Groups[0]
	if fmt.Sprint(e.Addrs) != "[chat.example:7400 [2001:db8::1]:7400]" {
		t.Fatalf("addrs %v", e.Addrs)
	}
}

// TestRegistrationUnreachable checks that a daemon whose registry is down
// serves anyway and closes promptly.
func TestRegistrationUnreachable(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	addr := c.LocalAddr().String()
	c.Close() // nothing listens there now
	d, stop := startGroupDaemon(t, GroupConfig{Registry: addr})
	p := joined(t, d, "p")
	p.info(gid(d))
	stop()
}

package web

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
)

// TestDiscoveredRegistryByKey: a registry mDNS reports at another address
// (it moved, or its key answers at many: anyone can run copies of a key
// at any number of ports, or of IPv6 addresses) is one registry, polled at
// its latest address. huddle web added one per address, each polled by a
// goroutine of its own, without bound: Browse bounds the keys it reports,
// not the addresses of each.
func TestDiscoveredRegistryByKey(t *testing.T) {
	first := t.TempDir()
	var regs []*registry.Daemon
	for i := range 3 {
		dir := first
		if i > 0 {
			dir = t.TempDir()
			key, err := os.ReadFile(filepath.Join(first, identity.KeyFile))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, identity.KeyFile), key, 0o600))
		}
		r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: dir, Logger: testLogger(t)})
		must(t, err)
		must(t, r.Listen())
		t.Cleanup(func() { r.Close() })
		regs = append(regs, r)
	}
	c := newClient(t)
	d := newDirectory(Config{Client: c, Logger: testLogger(t)})
	for _, r := range regs {
		if r.Fingerprint() != regs[0].Fingerprint() {
			t.Fatal("the registries do not share their key")
		}
		reg, err := c.Registry(context.Background(), r.Addr().String(), r.Fingerprint())
		must(t, err)
		d.addRegistry(reg)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.regs) != 1 || d.regs[0].addr != regs[2].Addr().String() {
		var addrs []string
		for _, rs := range d.regs {
			addrs = append(addrs, rs.addr)
		}
		t.Errorf("one key found at 3 addresses: registries %q, want one, at the latest (%s)", addrs, regs[2].Addr())
	}
}

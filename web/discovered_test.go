package web

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
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

// TestDiscoveredRegistryGone: a registry discovery says is gone leaves the
// directory, its poller stops and its connection closes. huddle web polled
// every registry it had found for as long as it ran, each by a goroutine
// of its own, and discovery could free no place for a new one (Browse
// bounds the keys); then (until session 13) it kept the dropped registry's
// connection, and the goroutines that serve it, until it stopped.
func TestDiscoveredRegistryGone(t *testing.T) {
	reg := startRegistry(t)
	c := newClient(t)
	// The client's socket, and a connection both ends serve, open before
	// the goroutines are counted.
	other := startRegistry(t)
	o, err := c.Registry(testCtx(t), other.Addr().String(), other.Fingerprint())
	must(t, err)
	_, err = o.List(testCtx(t))
	must(t, err)
	found := make(chan func(*client.Registry), 1)
	gone := make(chan func(wire.Fingerprint), 1)
	d := newDirectory(Config{Client: c, Logger: testLogger(t), PollInterval: time.Second,
		Discover: func(ctx context.Context, f func(*client.Registry), g func(wire.Fingerprint)) error {
			found <- f
			gone <- g
			<-ctx.Done()
			return nil
		}})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan struct{})
	go func() { d.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	add := <-found // discovery runs
	before := goleak.IgnoreCurrent()
	r, err := c.Registry(ctx, reg.Addr().String(), reg.Fingerprint())
	must(t, err)
	add(r)
	until(t, "its poller running", func() bool { return pollers() == 1 })
	d.merge()
	d.mu.Lock()
	listed := len(d.list.Registries)
	d.mu.Unlock()
	if listed != 1 {
		t.Fatalf("a registry found: %d listed, want 1", listed)
	}
	(<-gone)(reg.Fingerprint())
	until(t, "its poller stopped", func() bool { return pollers() == 0 })
	d.mu.Lock()
	kept := len(d.regs)
	listed = len(d.list.Registries)
	d.mu.Unlock()
	if kept != 0 || listed != 0 {
		t.Errorf("a registry gone: %d registries kept, %d listed; want none", kept, listed)
	}
	// Its connection closed: the goroutines of both ends are gone.
	var leaked error
	t.Cleanup(func() {
		if t.Failed() && leaked != nil {
			t.Log(leaked)
		}
	})
	until(t, "the goroutines of its connection to end", func() bool {
		leaked = goleak.Find(before)
		return leaked == nil
	})
}

// pollers counts the goroutines polling a registry.
func pollers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "web.(*directory).pollRegistry(")
}

// until waits for cond, checking it every 10 ms, and fails t when the
// test's context ends first.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// hostileRegistry runs a registry of its own making that lists n groups,
// each with a name of 60 bytes, in one page; it returns its address.
func hostileRegistry(t *testing.T, n int) string {
	t.Helper()
	groups := make([]wire.GroupEntry, n)
	for i := range groups {
		groups[i] = wire.GroupEntry{Group: wire.UUID{byte(i >> 8), byte(i), 9}, Name: fmt.Sprintf("flood-%054d", i),
			Addrs: []string{"127.0.0.1:1"}, Fingerprint: wire.Fingerprint{9}, ExpiresMS: 60_000}
	}
	return listingRegistry(t, groups)
}

// listingRegistry runs a registry of its own making that lists groups, in
// one page; it returns its address.
func listingRegistry(t *testing.T, groups []wire.GroupEntry) string {
	t.Helper()
	id, err := identity.Generate()
	must(t, err)
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "registry"}, func(ctx context.Context, c *server.Call) error {
		var l wire.List
		if err := c.Decode(&l); err != nil {
			return err
		}
		return c.Result(wire.Groups{Epoch: 1, Groups: groups})
	})
	must(t, s.Listen(id))
	must(t, s.Start())
	t.Cleanup(s.Close)
	return s.Addr().String()
}

// TestListingsBounded: the registries' listings huddle web holds are
// bounded in all (Config.MaxListingBytes), each registry to an equal part:
// a registry listing more than its part is shown as too_large with none of
// its groups, and leaves the others theirs. huddle web held each
// registry's listing up to the client's bound of 64 MiB: 32 registries
// found over mDNS made it hold 2 GiB.
func TestListingsBounded(t *testing.T) {
	reg := startRegistry(t)
	startGroups(t, reg, groupd.Config{})
	flood := hostileRegistry(t, 400) // about 90 KiB of entries
	c := newClient(t)
	// Two registries share 64 KiB: 32 KiB each.
	s, err := New(Config{Listen: "127.0.0.1:0", Client: c, Registries: []string{flood, reg.Addr().String()}, Secret: testSecret,
		PollInterval: 100 * time.Millisecond, MaxListingBytes: 64 << 10, Logger: testLogger(t)})
	must(t, err)
	serve(t, s)
	a := newAPI(t, s)
	a.groupID("lobby") // the honest registry's group is listed
	var l listJSON
	var flooded *registryJSON
	until(t, "the registry over its part to be asked", func() bool {
		a.do("GET", "/api/groups", nil, &l)
		flooded = nil
		for i, r := range l.Registries {
			if r.Addr == flood {
				flooded = &l.Registries[i]
			}
		}
		return flooded != nil && (flooded.OK || flooded.Error != "")
	})
	for _, g := range l.Groups {
		if strings.HasPrefix(g.Name, "flood-") {
			t.Fatalf("a group of the registry over its part is listed: %s", g.Name)
		}
	}
	if flooded.OK || flooded.Code != "too_large" {
		t.Fatalf("the registry over its part: %+v, want ok false, code too_large", flooded)
	}
	t.Log(flooded.Error)
	s.dir.mu.Lock()
	held := 0
	for _, rs := range s.dir.regs {
		held += rs.held
		if rs.addr == flood && len(rs.entries) > 0 {
			t.Errorf("the listing over its part is held: %d entries", len(rs.entries))
		}
	}
	s.dir.mu.Unlock()
	if held > 64<<10 {
		t.Errorf("%d bytes of listings held, over the bound of 64 KiB", held)
	}
}

// TestDiscoveredRegistryMovesMidListing: a registry found at another
// address while its listing is read at the old one is polled at the new
// one, and the listing cut short by closing the old handle is not taken
// for the registry's failure (session 13's close of the old handle made
// the page say it was not answering until the next poll).
func TestDiscoveredRegistryMovesMidListing(t *testing.T) {
	id, err := identity.Generate()
	must(t, err)
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	registryAt := func(hold bool) string {
		s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "registry"}, func(ctx context.Context, c *server.Call) error {
			var l wire.List
			if err := c.Decode(&l); err != nil {
				return err
			}
			if hold {
				asked <- struct{}{}
				select {
				case <-release:
				case <-c.Gone():
					return c.Lost()
				}
			}
			return c.Result(wire.Groups{Epoch: 1})
		})
		must(t, s.Listen(id))
		must(t, s.Start())
		t.Cleanup(s.Close)
		return s.Addr().String()
	}
	old, moved := registryAt(true), registryAt(false)
	c := newClient(t)
	d := newDirectory(Config{Client: c, Logger: testLogger(t)})
	open := func(addr string) *client.Registry {
		r, err := c.Registry(testCtx(t), addr, id.Fingerprint())
		must(t, err)
		return r
	}
	d.addRegistry(open(old))
	d.mu.Lock()
	rs := d.regs[0]
	d.mu.Unlock()
	listed := make(chan struct{})
	go func() { defer close(listed); d.listRegistry(testCtx(t), rs) }()
	<-asked // the listing is being read at the old address
	d.addRegistry(open(moved))
	<-listed
	close(release)
	d.mu.Lock()
	addr, polled, lastErr := rs.addr, rs.polled, rs.err
	d.mu.Unlock()
	if addr != moved || polled || lastErr != nil {
		t.Errorf("after a move mid-listing: at %s, polled %v, error %v; want at %s, the cut listing not counted", addr, polled, lastErr, moved)
	}
	d.listRegistry(testCtx(t), rs)
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs.err != nil || !rs.polled {
		t.Errorf("listing at the new address: %v", rs.err)
	}
	for _, rs := range d.regs {
		rs.reg.Close()
	}
}

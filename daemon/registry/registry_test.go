package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// startRegistry starts a registry on 127.0.0.1 port 0, serving until the
// test ends. Zero fields of cfg get test values (StateDir: a new directory).
func startRegistry(t *testing.T, cfg Config) *Daemon {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = peertest.Logger(t)
	}
	r, err := New(cfg)
	peertest.Must(t, err)
	peertest.Must(t, r.Listen())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(context.Background()) }()
	t.Cleanup(func() {
		peertest.Must(t, r.Close())
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

func listGroups(t *testing.T, p *peertest.Peer) wire.Groups {
	t.Helper()
	var g wire.Groups
	peertest.Must(t, p.Call(wire.OpList, wire.List{}, &g))
	return g
}

func TestRegistryRegisterListRenewDeregister(t *testing.T) {
	r := startRegistry(t, Config{})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g1, g2 := uuid.New(), uuid.New()

	var lease wire.Lease
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g1, Name: "zeta", Addrs: []string{"10.0.0.1:7400"}, Members: 3, LastSeq: 9}, &lease))
	if lease.Epoch != r.epoch || lease.TTLMS != uint64(DefaultLeaseTTL.Milliseconds()) {
		t.Fatalf("lease %+v, want epoch %d ttl %v", lease, r.epoch, DefaultLeaseTTL)
	}
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g2, Name: "alpha", Addrs: []string{"[fe80::1%eth0]:7400"}}, nil))

	got := listGroups(t, p)
	if got.Epoch != r.epoch || len(got.Groups) != 2 {
		t.Fatalf("list %+v, want 2 groups in epoch %d", got, r.epoch)
	}
	if got.Groups[0].Name != "alpha" || got.Groups[1].Name != "zeta" {
		t.Fatalf("list order %q, %q: want alpha, zeta", got.Groups[0].Name, got.Groups[1].Name)
	}
	z := got.Groups[1]
	if z.Group != g1 || z.Fingerprint != p.ID.Fingerprint() || z.Members != 3 || z.LastSeq != 9 ||
		len(z.Addrs) != 1 || z.Addrs[0] != "10.0.0.1:7400" || z.ExpiresMS == 0 || z.ExpiresMS > 15000 {
		t.Fatalf("entry %+v", z)
	}

	peertest.Must(t, p.Call(wire.OpRenew, wire.Renew{Group: g1, Epoch: lease.Epoch, Members: 4, LastSeq: 12}, &lease))
	if z := listGroups(t, p).Groups[1]; z.Members != 4 || z.LastSeq != 12 {
		t.Fatalf("after renew: %+v", z)
	}

	peertest.Must(t, p.Call(wire.OpDeregister, wire.Deregister{Group: g1}, nil))
	peertest.Must(t, p.Call(wire.OpDeregister, wire.Deregister{Group: g1}, nil)) // not listed: succeeds
	if got := listGroups(t, p); len(got.Groups) != 1 || got.Groups[0].Group != g2 {
		t.Fatalf("after deregister: %+v", got)
	}
	peertest.WantCode(t, p.Call(wire.OpRenew, wire.Renew{Group: g1, Epoch: lease.Epoch}, nil), wire.CodeNotFound)
}

func TestRegistrySameNameSortsByUUID(t *testing.T) {
	r := startRegistry(t, Config{})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	a := uuid.MustParse("00000000-0000-4000-8000-000000000001")
	b := uuid.MustParse("00000000-0000-4000-8000-000000000002")
	for _, g := range []uuid.UUID{b, a} {
		peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "same", Port: 1}, nil))
	}
	got := listGroups(t, p).Groups
	if len(got) != 2 || got[0].Group != a || got[1].Group != b {
		t.Fatalf("got %v, want %v then %v", got, a, b)
	}
}

func TestRegistryEmptyAddrsListsSourceAddress(t *testing.T) {
	r := startRegistry(t, Config{})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g := uuid.New()
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "lan", Port: 7401}, nil))
	got := listGroups(t, p).Groups
	if len(got) != 1 || len(got[0].Addrs) != 1 || got[0].Addrs[0] != "127.0.0.1:7401" {
		t.Fatalf("got %+v, want the source address 127.0.0.1:7401", got)
	}
}

func TestRegistryRejectsBadRegistrations(t *testing.T) {
	r := startRegistry(t, Config{})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	tests := []struct {
		name string
		reg  wire.Register
		want wire.Code
	}{
		{"zero uuid", wire.Register{Name: "x", Port: 1}, wire.CodeBadRequest},
		{"no name", wire.Register{Group: uuid.New(), Port: 1}, wire.CodeBadRequest},
		{"no port nor addrs", wire.Register{Group: uuid.New(), Name: "x"}, wire.CodeBadRequest},
		{"addr without port", wire.Register{Group: uuid.New(), Name: "x", Addrs: []string{"10.0.0.1"}}, wire.CodeBadRequest},
		{"long name", wire.Register{Group: uuid.New(), Name: string(make([]byte, 65)), Port: 1}, wire.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peertest.WantCode(t, p.Call(wire.OpRegister, tt.reg, nil), tt.want)
		})
	}
	if got := listGroups(t, p).Groups; len(got) != 0 {
		t.Fatalf("listed %+v after rejected registrations", got)
	}
}

func TestRegistryLeaseExpires(t *testing.T) {
	r := startRegistry(t, Config{LeaseTTL: 300 * time.Millisecond})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g := uuid.New()
	var lease wire.Lease
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "brief", Port: 1}, &lease))
	if lease.TTLMS != 300 {
		t.Fatalf("TTLMS %d, want 300", lease.TTLMS)
	}
	peertest.Eventually(t, "the lease to lapse", func() bool { return len(listGroups(t, p).Groups) == 0 })
	peertest.WantCode(t, p.Call(wire.OpRenew, wire.Renew{Group: g, Epoch: lease.Epoch}, nil), wire.CodeNotFound)

	// A lapsed UUID is free: another key may take it.
	q := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	peertest.Must(t, q.Call(wire.OpRegister, wire.Register{Group: g, Name: "taken", Port: 1}, nil))
}

// manualClock returns a clock for Config.Now that stands still until
// advance moves it on.
func manualClock() (clock func() time.Time, advance func(time.Duration)) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance = func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	return clock, advance
}

// TestRegistryLeaseExpiresByClock checks expiry against the injected clock:
// a listing hides a lease whose time has passed even before a sweep. The
// registry sees the hour pass in steps shorter than its sweep period, as a
// running registry does: one step of an hour would be a pause of the
// registry, which lapses nothing (TestRegistryListsLeasesAfterItsPause).
func TestRegistryLeaseExpiresByClock(t *testing.T) {
	clock, advance := manualClock()
	r := startRegistry(t, Config{LeaseTTL: time.Hour, Now: clock})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "clocked", Port: 1}, nil))
	if got := listGroups(t, p).Groups; len(got) != 1 || got[0].ExpiresMS != uint64(time.Hour.Milliseconds()) {
		t.Fatalf("got %+v, want one group expiring in an hour", got)
	}
	step := r.sweepEvery() / 2
	for left := time.Hour - step; left > 0; left -= step {
		advance(step)
		if got := listGroups(t, p).Groups; len(got) != 1 || got[0].ExpiresMS != uint64(left.Milliseconds()) {
			t.Fatalf("got %+v, want one group expiring in %v", got, left)
		}
	}
	advance(step)
	if got := listGroups(t, p).Groups; len(got) != 0 {
		t.Fatalf("got %+v after the TTL passed, want none", got)
	}
}

// TestRegistryLeaseSurvivesItsPause checks that time the registry itself
// was not running does not lapse leases: a registry paused longer than a
// renewal's slack (a loaded machine, SIGSTOP) finds, on resuming, renewals
// waiting in its socket for leases its clock says lapsed. Leases of a
// registry that kept running still lapse one TTL after their last renewal.
func TestRegistryLeaseSurvivesItsPause(t *testing.T) {
	const ttl = 3 * time.Second
	clock, advance := manualClock()
	r := startRegistry(t, Config{LeaseTTL: ttl, Now: clock})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	kept, dropped := uuid.New(), uuid.New()
	var lease wire.Lease
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: kept, Name: "kept", Port: 1}, &lease))
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: dropped, Name: "dropped", Port: 1}, nil))

	// The registry does not run for 5 s, longer than the TTL; the renewals
	// sent meanwhile are read on resuming.
	advance(5 * time.Second)
	peertest.Must(t, p.Call(wire.OpRenew, wire.Renew{Group: kept, Epoch: lease.Epoch}, nil))
	peertest.Must(t, p.Call(wire.OpRenew, wire.Renew{Group: dropped, Epoch: lease.Epoch}, nil))

	// Running, the registry sees the time pass in steps shorter than its
	// sweep period; kept is renewed, dropped is not, and lapses.
	for range 2 * ttl / (100 * time.Millisecond) {
		advance(100 * time.Millisecond)
		peertest.Must(t, p.Call(wire.OpRenew, wire.Renew{Group: kept, Epoch: lease.Epoch}, nil))
	}
	peertest.WantCode(t, p.Call(wire.OpRenew, wire.Renew{Group: dropped, Epoch: lease.Epoch}, nil), wire.CodeNotFound)
	if got := listGroups(t, p).Groups; len(got) != 1 || got[0].Name != "kept" {
		t.Fatalf("got %+v, want kept only", got)
	}
}

// TestRegistryListsLeasesAfterItsPause checks that a listing right after
// the registry itself was not running shows the leases the sweep keeps: a
// list read first on resuming, before the renewals queued behind it, used
// to judge the leases by the clock alone and leave them out. The TTL is
// long so that no sweep tick (a tenth of it) comes between the pause and
// the listing to move the leases on in its place.
func TestRegistryListsLeasesAfterItsPause(t *testing.T) {
	const ttl = time.Minute
	clock, advance := manualClock()
	r := startRegistry(t, Config{LeaseTTL: ttl, Now: clock})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "paused", Port: 1}, nil))

	advance(2 * ttl)
	got := listGroups(t, p).Groups
	if len(got) != 1 || got[0].Name != "paused" {
		t.Fatalf("listed right after a %v pause of the registry: %+v, want paused", 2*ttl, got)
	}
	if left := time.Duration(got[0].ExpiresMS) * time.Millisecond; left < ttl-r.sweepEvery() {
		t.Errorf("listed with %v left, want the %v it had when the registry stopped, less a sweep period", left, ttl)
	}
}

func TestRegistryOwnership(t *testing.T) {
	r := startRegistry(t, Config{})
	owner := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	thief := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g := uuid.New()
	var lease wire.Lease
	peertest.Must(t, owner.Call(wire.OpRegister, wire.Register{Group: g, Name: "mine", Port: 1}, &lease))

	peertest.WantCode(t, thief.Call(wire.OpRegister, wire.Register{Group: g, Name: "theirs", Port: 2}, nil), wire.CodeUnauthorized)
	peertest.WantCode(t, thief.Call(wire.OpRenew, wire.Renew{Group: g, Epoch: lease.Epoch}, nil), wire.CodeUnauthorized)
	peertest.WantCode(t, thief.Call(wire.OpDeregister, wire.Deregister{Group: g}, nil), wire.CodeUnauthorized)

	got := listGroups(t, thief).Groups
	if len(got) != 1 || got[0].Name != "mine" || got[0].Fingerprint != owner.ID.Fingerprint() {
		t.Fatalf("got %+v, want the owner's registration untouched", got)
	}
	// The owner may register again (new name, same UUID).
	peertest.Must(t, owner.Call(wire.OpRegister, wire.Register{Group: g, Name: "renamed", Port: 1}, nil))
	if got := listGroups(t, owner).Groups; len(got) != 1 || got[0].Name != "renamed" {
		t.Fatalf("got %+v after re-registering", got)
	}
}

func TestRegistryEpochMismatchAfterRestart(t *testing.T) {
	dir := t.TempDir()
	r1, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Logger: peertest.Logger(t)})
	peertest.Must(t, err)
	peertest.Must(t, r1.Listen())
	errc := make(chan error, 1)
	go func() { errc <- r1.Serve(context.Background()) }()
	p := peertest.Dial(t, r1.Addr(), r1.Fingerprint(), nil)
	g := uuid.New()
	var lease wire.Lease
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "g", Port: 1}, &lease))
	fp1, epoch1 := r1.Fingerprint(), r1.epoch
	peertest.Must(t, r1.Close())
	peertest.Must(t, <-errc)

	r2 := startRegistry(t, Config{StateDir: dir})
	if r2.Fingerprint() != fp1 {
		t.Fatalf("fingerprint changed across a restart: %v, was %v", r2.Fingerprint(), fp1)
	}
	if r2.epoch == epoch1 || r2.epoch == 0 {
		t.Fatalf("epoch %d after a restart, was %d: want a new nonzero one", r2.epoch, epoch1)
	}
	q := peertest.Dial(t, r2.Addr(), r2.Fingerprint(), p.ID)
	we := peertest.WantCode(t, q.Call(wire.OpRenew, wire.Renew{Group: g, Epoch: lease.Epoch}, nil), wire.CodeEpochMismatch)
	if we.Epoch != r2.epoch {
		t.Fatalf("epoch_mismatch carries epoch %d, want %d", we.Epoch, r2.epoch)
	}
	if !errors.Is(we, wire.ErrEpochMismatch) {
		t.Fatalf("%v does not match wire.ErrEpochMismatch", we)
	}
}

func TestRegistryMaxGroups(t *testing.T) {
	r := startRegistry(t, Config{MaxGroups: 2})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	g := uuid.New()
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "a", Port: 1}, nil))
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "b", Port: 1}, nil))
	peertest.WantCode(t, p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "c", Port: 1}, nil), wire.CodeUnavailable)
	peertest.Must(t, p.Call(wire.OpRegister, wire.Register{Group: g, Name: "a2", Port: 1}, nil)) // re-registering is not one more
}

func TestRegistryLifecycle(t *testing.T) {
	if err := (Config{}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate without StateDir: %v, want ErrInvalidConfig", err)
	}
	r, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: peertest.Logger(t)})
	peertest.Must(t, err)
	if r.Addr() != nil || !r.Fingerprint().IsZero() {
		t.Fatal("New did I/O: address or fingerprint known before Listen")
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx) }()
	peertest.Eventually(t, "the registry to listen", func() bool { return r.Readiness() == nil })
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	listGroups(t, p)
	if err := r.Serve(ctx); !errors.Is(err, ErrServing) {
		t.Fatalf("second Serve: %v, want ErrServing", err)
	}
	cancel()
	peertest.Must(t, <-errc)
	peertest.Must(t, r.Close())
	peertest.Must(t, r.Close())
	if err := r.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
	if err := r.Listen(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Listen after Close: %v, want ErrClosed", err)
	}
}

func TestRegistryCloseWithoutServe(t *testing.T) {
	r, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0"})
	peertest.Must(t, err)
	peertest.Must(t, r.Close())
	// A reserved port (testport.Cell): one the kernel chose could be
	// taken, once freed, by any other test process's socket bound to
	// port 0, before this one binds it again.
	r, err = New(Config{StateDir: t.TempDir(), Listen: testport.Cell(t)})
	peertest.Must(t, err)
	peertest.Must(t, r.Listen())
	addr := r.Addr().(*net.UDPAddr)
	peertest.Must(t, r.Close())
	// The port is free again.
	c, err := net.ListenUDP("udp", addr)
	peertest.Must(t, err)
	c.Close()
}

// TestRegistryGroupsPerKeyAndAddr checks the registration limits per key
// and per source address: one key registers up to its limit, a second key
// from the same address up to the address's, a key from another address
// is not held back by either, re-registering is never one more, and a
// deregistration frees a place.
func TestRegistryGroupsPerKeyAndAddr(t *testing.T) {
	r := startRegistry(t, Config{MaxGroupsPerKey: 3, MaxGroupsPerAddr: 5})
	register := func(p *peertest.Peer, name string) error {
		return p.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: name, Port: 1}, nil)
	}
	a := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	first := uuid.New()
	peertest.Must(t, a.Call(wire.OpRegister, wire.Register{Group: first, Name: "a0", Port: 1}, nil))
	for i := 1; i < 3; i++ {
		peertest.Must(t, register(a, fmt.Sprint("a", i)))
	}
	if we := peertest.WantCode(t, register(a, "a3"), wire.CodeUnavailable); !strings.Contains(we.Message, "per key") {
		t.Fatalf("the key's fourth group: %q, want the per-key limit named", we.Message)
	}
	peertest.Must(t, a.Call(wire.OpRegister, wire.Register{Group: first, Name: "a0 renamed", Port: 1}, nil)) // not one more
	b := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)                                                    // same address, another key
	peertest.Must(t, register(b, "b0"))
	peertest.Must(t, register(b, "b1"))
	if we := peertest.WantCode(t, register(b, "b2"), wire.CodeUnavailable); !strings.Contains(we.Message, "per address") {
		t.Fatalf("the address's sixth group: %q, want the per-address limit named", we.Message)
	}
	elsewhere := peertest.DialFrom(t, "127.0.0.2", r.Addr(), r.Fingerprint())
	peertest.Must(t, register(elsewhere, "c0"))
	peertest.Must(t, a.Call(wire.OpDeregister, wire.Deregister{Group: first}, nil))
	peertest.Must(t, register(b, "b2")) // the address has room again
	if n := len(listGroups(t, a).Groups); n != 6 {
		t.Fatalf("%d groups listed, want 6", n)
	}
}

// TestRegistryListingPages registers more groups than one page holds,
// some with the longest names and address lists: the listing comes in
// pages, each within a frame, in name order, with no group twice or
// missing, and the Go client reads them all. A cursor the registry did not
// issue is bad_request.
func TestRegistryListingPages(t *testing.T) {
	const groups = 3000
	// Leases outlast the registrations however loaded the machine: the subject
	// is paging, not expiry.
	r := startRegistry(t, Config{MaxGroups: groups, MaxGroupsPerKey: groups, MaxGroupsPerAddr: groups, LeaseTTL: time.Hour})
	p := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	addrs := make([]string, wire.MaxAddrs)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("%s:%d", strings.Repeat("h", wire.MaxAddrBytes-6), 10000+i)
	}
	want := make(map[wire.UUID]bool)
	for i := range groups {
		reg := wire.Register{Group: uuid.New(), Name: fmt.Sprintf("g%05d", i), Port: 1}
		if i%10 == 0 {
			reg.Name, reg.Addrs = fmt.Sprintf("g%05d%s", i, strings.Repeat("x", wire.MaxNameBytes-6)), addrs
		}
		peertest.Must(t, p.Call(wire.OpRegister, reg, nil))
		want[reg.Group] = true
	}

	var after []byte
	var listed []wire.GroupEntry
	pages := 0
	for {
		fs := p.Do(wire.OpList, wire.List{After: after})
		if len(fs) != 1 || fs[0].Kind != wire.KindResult || len(fs[0].Raw) > wire.MaxFrameSize {
			t.Fatalf("page %d: %+v, want one result within a frame", pages, fs)
		}
		var g wire.Groups
		fs[0].Decode(t, &g)
		pages++
		listed = append(listed, g.Groups...)
		if len(g.Next) == 0 {
			break
		}
		after = g.Next
	}
	if pages < 3 || len(listed) != groups {
		t.Fatalf("%d groups in %d pages, want %d in several", len(listed), pages, groups)
	}
	for i, e := range listed {
		if !want[e.Group] {
			t.Fatalf("group %s listed twice or never registered", e.Group)
		}
		delete(want, e.Group)
		if i > 0 && listed[i-1].Name >= e.Name {
			t.Fatalf("%q listed after %q: want name order", e.Name, listed[i-1].Name)
		}
	}

	cl, err := client.New(client.Config{Identity: peertest.NewKey(t), Logger: peertest.Logger(t)})
	peertest.Must(t, err)
	t.Cleanup(func() { cl.Close() })
	reg, err := cl.Registry(peertest.Ctx(t), r.Addr().String(), r.Fingerprint())
	peertest.Must(t, err)
	all, err := reg.List(peertest.Ctx(t))
	peertest.Must(t, err)
	// (A client.Listing has no Next: the client follows it to the end.)
	if len(all.Groups) != groups || all.Epoch != r.epoch {
		t.Fatalf("client List: %d groups (epoch %d), want all %d", len(all.Groups), all.Epoch, groups)
	}

	for _, bad := range [][]byte{{1}, make([]byte, 16), append(make([]byte, 16), strings.Repeat("n", wire.MaxNameBytes+1)...), make([]byte, wire.MaxCursorBytes+1)} {
		peertest.WantCode(t, p.Call(wire.OpList, wire.List{After: bad}, nil), wire.CodeBadRequest)
	}
}

// TestRegistryCellReplicas: the registry's rules for a group replicated by
// a cell (PROTOCOL.md §13): a registration that names no leader keeps the
// leader an earlier one named; a replica's deregistration leaves the
// group listed while another replica holds it (under no leader, if the
// one leaving led), and the last one's removes it.
func TestRegistryCellReplicas(t *testing.T) {
	reg := startRegistry(t, Config{})
	ctx := peertest.Ctx(t)
	var keys [3]*client.Registry
	var replicas []client.Replica
	for i := range keys {
		id := peertest.NewKey(t)
		cl, err := client.New(client.Config{Identity: id, Logger: peertest.Logger(t)})
		peertest.Must(t, err)
		t.Cleanup(func() { cl.Close() })
		keys[i], err = cl.Registry(ctx, reg.Addr().String(), reg.Fingerprint())
		peertest.Must(t, err)
		replicas = append(replicas, client.Replica{Addr: fmt.Sprintf("10.0.0.%d:7374", i+1), Fingerprint: id.Fingerprint()})
	}
	g := uuid.New()
	register := func(i, leader int) {
		t.Helper()
		rs := slices.Clone(replicas)
		if leader >= 0 {
			rs[leader].Leader = true
		}
		_, err := keys[i].Register(ctx, client.Registration{Group: g, Name: "lobby", Addrs: []string{replicas[i].Addr}, Replicas: rs})
		peertest.Must(t, err)
	}
	// listed returns the leader listed (-1: none), or -2 if the group is
	// not listed.
	listed := func() int {
		t.Helper()
		l, err := keys[0].List(ctx)
		peertest.Must(t, err)
		if len(l.Groups) == 0 {
			return -2
		}
		e := l.Groups[0]
		lead := -1
		for i, rp := range e.Replicas {
			if rp.Leader {
				if lead != -1 {
					t.Fatalf("two leaders listed: %+v", e.Replicas)
				}
				lead = i
				if e.Fingerprint != rp.Fingerprint || len(e.Addrs) != 1 || e.Addrs[0] != rp.Addr {
					t.Fatalf("the entry is under %s %v, but %s leads", e.Fingerprint.Short(), e.Addrs, rp.Fingerprint.Short())
				}
			}
		}
		return lead
	}
	check := func(what string, want int) {
		t.Helper()
		if got := listed(); got != want {
			t.Fatalf("%s: listed leader %d, want %d (-1 none, -2 not listed)", what, got, want)
		}
	}
	register(0, 0)
	register(1, 0)
	register(2, 0)
	check("all three name replica 0", 0)
	register(1, -1)
	check("replica 1 knows no leader", 0)
	register(2, 1)
	check("replica 2 names replica 1", 1)
	peertest.Must(t, keys[0].Deregister(ctx, g))
	check("replica 0 deregistered", 1)
	peertest.Must(t, keys[1].Deregister(ctx, g))
	check("the leader, replica 1, deregistered", -1)
	register(0, 2)
	check("replica 0 back, naming replica 2", 2)
	peertest.Must(t, keys[2].Deregister(ctx, g))
	check("replica 2 deregistered", -1)
	peertest.Must(t, keys[0].Deregister(ctx, g))
	check("the last holder deregistered", -2)

	// The counts listed are the leader's: a lagging member's registration
	// (a new one that has not copied the history yet) does not lower them.
	counts := func(i, leader int, members, last uint64) (uint64, uint64) {
		t.Helper()
		rs := slices.Clone(replicas)
		rs[leader].Leader = true
		_, err := keys[i].Register(ctx, client.Registration{Group: g, Name: "lobby", Addrs: []string{replicas[i].Addr}, Replicas: rs, Members: members, LastSeq: last})
		peertest.Must(t, err)
		l, err := keys[0].List(ctx)
		peertest.Must(t, err)
		return l.Groups[0].Members, l.Groups[0].LastSeq
	}
	for _, c := range []struct {
		who, leader          int
		members, last        uint64
		wantMembers, wantSeq uint64
	}{
		{0, 0, 3, 10, 3, 10},
		{1, 0, 0, 0, 3, 10},  // lagging
		{2, 0, 0, 12, 3, 12}, // ahead of the leader's last registration
		{0, 0, 2, 12, 2, 12}, // the leader: a member left
	} {
		if m, seq := counts(c.who, c.leader, c.members, c.last); m != c.wantMembers || seq != c.wantSeq {
			t.Fatalf("replica %d registered %d members, last %d: listed %d, %d; want %d, %d", c.who, c.members, c.last, m, seq, c.wantMembers, c.wantSeq)
		}
	}
}

// TestRegistryNoListingUnderAnothersKey: a registration for a cell's group
// names the replicas and their leader, and the entry is listed under the
// leader's address and key. A key that named another daemon as the leader
// of a group that daemon never registered had the group listed under that
// daemon's key and address: anyone could put any group in the listing as
// hosted by any daemon. The leader named is now listed only once its own
// key registered the group; until then the entry is the registering key's.
func TestRegistryNoListingUnderAnothersKey(t *testing.T) {
	r := startRegistry(t, Config{})
	victim := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	thief := peertest.Dial(t, r.Addr(), r.Fingerprint(), nil)
	mine := uuid.New()
	peertest.Must(t, victim.Call(wire.OpRegister, wire.Register{Group: mine, Name: "mine", Addrs: []string{"10.0.0.1:7374"}}, nil))

	replicas := []wire.Replica{
		{Addr: "10.0.0.9:7374", Fingerprint: thief.ID.Fingerprint()},
		{Addr: "10.0.0.1:7374", Fingerprint: victim.ID.Fingerprint(), Leader: true},
	}
	// The victim's own group, claimed as a cell's: refused, as any
	// registration of a lease another key holds.
	peertest.WantCode(t, thief.Call(wire.OpRegister, wire.Register{Group: mine, Name: "mine", Addrs: []string{"10.0.0.9:7374"}, Replicas: replicas}, nil), wire.CodeUnauthorized)

	claimed := uuid.New()
	peertest.Must(t, thief.Call(wire.OpRegister, wire.Register{Group: claimed, Name: "lobby", Addrs: []string{"10.0.0.9:7374"}, Replicas: replicas}, nil))
	entry := func() wire.GroupEntry {
		t.Helper()
		for _, e := range listGroups(t, victim).Groups {
			if e.Group == claimed {
				return e
			}
		}
		t.Fatal("the claimed group is not listed")
		return wire.GroupEntry{}
	}
	e := entry()
	if e.Fingerprint != thief.ID.Fingerprint() || len(e.Addrs) != 1 || e.Addrs[0] != "10.0.0.9:7374" {
		t.Fatalf("a group the victim never registered is listed under %s %v, want the registering key's", e.Fingerprint.Short(), e.Addrs)
	}
	for _, rp := range e.Replicas {
		if rp.Leader {
			t.Fatalf("listed with %s as its leader, which never registered it: %+v", rp.Fingerprint.Short(), e.Replicas)
		}
	}
	for _, g := range listGroups(t, victim).Groups {
		if g.Group == mine && (g.Fingerprint != victim.ID.Fingerprint() || g.Name != "mine") {
			t.Fatalf("the victim's own group changed: %+v", g)
		}
	}

	// Once the leader named registers the group itself (as a cell's
	// leader does), it is listed under the leader.
	peertest.Must(t, victim.Call(wire.OpRegister, wire.Register{Group: claimed, Name: "lobby", Addrs: []string{"10.0.0.1:7374"}, Replicas: replicas}, nil))
	peertest.Must(t, thief.Call(wire.OpRegister, wire.Register{Group: claimed, Name: "lobby", Addrs: []string{"10.0.0.9:7374"}, Replicas: replicas}, nil))
	if e := entry(); e.Fingerprint != victim.ID.Fingerprint() || e.Addrs[0] != "10.0.0.1:7374" {
		t.Fatalf("listed under %s %v once the leader registered it, want the leader's", e.Fingerprint.Short(), e.Addrs)
	}
}

// TestRegistryThisHostsDaemonFromTheLAN: a group daemon beside its
// registry (huddle up: the daemon registers at 127.0.0.1 with its port
// alone) is listed at the registration's source address, 127.0.0.1; a
// user on another machine of the LAN was given 127.0.0.1:PORT, their own
// machine, and could not join (seen walking the README across two network
// namespaces). A client that reached the registry at one of its host's
// other addresses is given that address with the daemon's port; one on
// this host still 127.0.0.1. In a network namespace of its own, where
// 10.77.0.1 stands for this host's LAN address.
func TestRegistryThisHostsDaemonFromTheLAN(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		if out, err := exec.Command("ip", "addr", "add", "10.77.0.1/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add: %v: %s", err, out)
		}
		r := startRegistry(t, Config{Listen: ":0"}) // every address, as huddle up's
		port := r.Addr().(*net.UDPAddr).Port
		at := func(ip string) *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: port} }
		daemon := peertest.DialFrom(t, "127.0.0.1", at("127.0.0.1"), r.Fingerprint())
		peertest.Must(t, daemon.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "lobby", Port: 7374}, nil))
		// A daemon that named its address is listed there, for everyone.
		peertest.Must(t, daemon.Call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "named", Addrs: []string{"127.0.0.1:7375"}}, nil))
		for _, tc := range []struct{ from, lobby string }{
			{"127.0.0.1", "127.0.0.1:7374"},
			{"10.77.0.1", "10.77.0.1:7374"},
		} {
			p := peertest.DialFrom(t, tc.from, at(tc.from), r.Fingerprint())
			got := map[string][]string{}
			for _, e := range listGroups(t, p).Groups {
				got[e.Name] = e.Addrs
			}
			if !slices.Equal(got["lobby"], []string{tc.lobby}) || !slices.Equal(got["named"], []string{"127.0.0.1:7375"}) {
				t.Errorf("listed to a client at %s: %v; want lobby at %s, named at 127.0.0.1:7375", tc.from, got, tc.lobby)
			}
		}
	})
}

// TestRegistryCountsNeverGoBack: a group's listed last_seq does not go
// back while its registrations name one log epoch (register key 8), nor
// ever by a renew; a registration naming another epoch (the group's
// history was lost) starts the counts afresh, and one naming none (a
// daemon before session 21) is taken as given, unless a cell's member
// that does not lead sends it. A cell's member count is the leader's.
// Until session 21 a renew set both counts as given, and a leader's
// registration (one just elected, that has not applied all its
// predecessor listed) set last_seq lower than listed.
func TestRegistryCountsNeverGoBack(t *testing.T) {
	r := startRegistry(t, Config{})
	keys := []*peertest.Peer{
		peertest.Dial(t, r.Addr(), r.Fingerprint(), nil),
		peertest.Dial(t, r.Addr(), r.Fingerprint(), nil),
	}
	p := keys[0]
	listed := func(g wire.UUID) (uint64, uint64) {
		t.Helper()
		for _, e := range listGroups(t, p).Groups {
			if e.Group == g {
				return e.Members, e.LastSeq
			}
		}
		t.Fatalf("group %s not listed", g)
		return 0, 0
	}
	type step struct {
		what                 string
		key                  int
		renew                bool
		leader               int // cells: the replica registering names (-1: none)
		epoch, members, last uint64
		wantMembers, wantSeq uint64
	}
	run := func(g wire.UUID, rs []wire.Replica, steps []step) {
		t.Helper()
		var lease wire.Lease
		for _, s := range steps {
			if s.renew {
				peertest.Must(t, keys[s.key].Call(wire.OpRenew, wire.Renew{Group: g, Epoch: lease.Epoch, Members: s.members, LastSeq: s.last}, &lease))
			} else {
				reg := wire.Register{Group: g, Name: "lobby", Addrs: []string{"10.0.0.1:7400"}, Members: s.members, LastSeq: s.last, LogEpoch: s.epoch}
				if rs != nil {
					reg.Replicas = slices.Clone(rs)
					if s.leader >= 0 {
						reg.Replicas[s.leader].Leader = true
					}
					reg.Addrs = []string{rs[s.key].Addr}
				}
				peertest.Must(t, keys[s.key].Call(wire.OpRegister, reg, &lease))
			}
			if m, seq := listed(g); m != s.wantMembers || seq != s.wantSeq {
				t.Errorf("%s: listed %d members, last_seq %d; want %d, %d", s.what, m, seq, s.wantMembers, s.wantSeq)
			}
		}
	}
	t.Run("lone", func(t *testing.T) {
		run(uuid.New(), nil, []step{
			{what: "registered", epoch: 7, members: 3, last: 10, wantMembers: 3, wantSeq: 10},
			{what: "a renew overtaken by an earlier one", renew: true, members: 2, last: 9, wantMembers: 2, wantSeq: 10},
			{what: "renewed", renew: true, members: 4, last: 12, wantMembers: 4, wantSeq: 12},
			{what: "registered again, same log epoch, lower", epoch: 7, members: 4, last: 11, wantMembers: 4, wantSeq: 12},
			{what: "registered with a new log (epoch 8)", epoch: 8, members: 1, last: 2, wantMembers: 1, wantSeq: 2},
			{what: "registered naming no epoch", members: 1, last: 0, wantMembers: 1, wantSeq: 0},
		})
	})
	t.Run("cell", func(t *testing.T) {
		rs := []wire.Replica{
			{Addr: "10.0.0.1:7374", Fingerprint: keys[0].ID.Fingerprint()},
			{Addr: "10.0.0.2:7374", Fingerprint: keys[1].ID.Fingerprint()},
		}
		run(uuid.New(), rs, []step{
			{what: "the leader registered", key: 0, leader: 0, epoch: 5, members: 3, last: 10, wantMembers: 3, wantSeq: 10},
			{what: "the other member registered, lagging", key: 1, leader: 0, epoch: 5, members: 1, last: 4, wantMembers: 3, wantSeq: 10},
			{what: "the other member renewed, lagging", key: 1, renew: true, members: 1, last: 4, wantMembers: 3, wantSeq: 10},
			{what: "the other member, elected, registered before applying all", key: 1, leader: 1, epoch: 5, members: 3, last: 8, wantMembers: 3, wantSeq: 10},
			{what: "the new leader renewed", key: 1, renew: true, members: 2, last: 11, wantMembers: 2, wantSeq: 11},
			{what: "the old leader renewed", key: 0, renew: true, members: 3, last: 11, wantMembers: 2, wantSeq: 11},
			{what: "the leader registered a new history (epoch 6)", key: 1, leader: 1, epoch: 6, members: 1, last: 1, wantMembers: 1, wantSeq: 1},
			{what: "the leader registered naming no epoch", key: 1, leader: 1, members: 1, last: 0, wantMembers: 1, wantSeq: 0},
			{what: "a member naming no leader nor epoch", key: 0, leader: -1, members: 5, last: 3, wantMembers: 1, wantSeq: 3},
		})
	})
	// A cell of daemons before and after session 21 (an upgrade, one
	// member at a time): a member that does not lead and names no epoch
	// (the older) leaves the listed epoch as it was; until then the lease
	// forgot it, and the next leader's registration, in that epoch, set
	// last_seq lower than listed.
	t.Run("cell of two versions", func(t *testing.T) {
		rs := []wire.Replica{
			{Addr: "10.0.0.1:7374", Fingerprint: keys[0].ID.Fingerprint()},
			{Addr: "10.0.0.2:7374", Fingerprint: keys[1].ID.Fingerprint()},
		}
		run(uuid.New(), rs, []step{
			{what: "the leader registered", key: 0, leader: 0, epoch: 5, members: 3, last: 10, wantMembers: 3, wantSeq: 10},
			{what: "an older member registered, naming no epoch", key: 1, leader: 0, members: 3, last: 9, wantMembers: 3, wantSeq: 10},
			{what: "the first, elected again, registered before applying all", key: 0, leader: 0, epoch: 5, members: 3, last: 8, wantMembers: 3, wantSeq: 10},
		})
	})
}

package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/internal/netlab"
)

// fakeRegistry stands in for the registry's QUIC listener: it answers any
// UDP packet with its fingerprint, which is enough for a Verify that checks
// "is the advertised fingerprint the one listening there".
type fakeRegistry struct {
	addr netip.AddrPort
	stop func() // closes it (also at cleanup)
}

func startFakeRegistry(t *testing.T, listen, fp string) *fakeRegistry {
	t.Helper()
	pc, err := net.ListenPacket("udp4", listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fp), from)
		}
	}()
	stop := sync.OnceFunc(func() { pc.Close(); <-done })
	t.Cleanup(stop)
	return &fakeRegistry{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), stop: stop}
}

// verifyFP is a Verify that asks the fake registry at addr for its
// fingerprint and compares it to the advertised one.
func verifyFP(ctx context.Context, r discovery.Advertised, addr netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("fp?")); err != nil {
		return err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if got := string(buf[:n]); got != r.Fingerprint {
		return fmt.Errorf("fingerprint mismatch: advertised %q, registry has %q", r.Fingerprint, got)
	}
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logWatch is a logger that also lets a test wait for log records: the
// events the package logs (an answer heard, a responder started).
type logWatch struct {
	slog.Handler
	mu      *sync.Mutex
	records *[]slog.Record
	changed *chan struct{}
}

func watchLog(t *testing.T) (*slog.Logger, logWatch) {
	ch := make(chan struct{})
	w := logWatch{Handler: testLogger(t).Handler(), mu: &sync.Mutex{}, records: &[]slog.Record{}, changed: &ch}
	return slog.New(w), w
}

func (w logWatch) Handle(ctx context.Context, r slog.Record) error {
	w.mu.Lock()
	*w.records = append(*w.records, r.Clone())
	close(*w.changed)
	*w.changed = make(chan struct{})
	w.mu.Unlock()
	return w.Handler.Handle(ctx, r)
}

func (w logWatch) WithAttrs(as []slog.Attr) slog.Handler { return w } // not used by the package
func (w logWatch) WithGroup(string) slog.Handler         { return w }

// count returns how many records have message msg and, if key is not
// empty, the attribute key with value val.
func (w logWatch) count(msg, key, val string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range *w.records {
		if r.Message != msg {
			continue
		}
		ok := key == ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && a.Value.String() == val {
				ok = true
			}
			return !ok
		})
		if ok {
			n++
		}
	}
	return n
}

// attr returns the value of attribute key in the first record with
// message msg ("" if none).
func (w logWatch) attr(msg, key string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range *w.records {
		if r.Message != msg {
			continue
		}
		val := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				val = a.Value.String()
			}
			return val == ""
		})
		return val
	}
	return ""
}

// attrWhere returns the value of attribute key2 in the first record with
// message msg and attribute key = val ("" if none).
func (w logWatch) attrWhere(msg, key, val, key2 string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range *w.records {
		if r.Message != msg {
			continue
		}
		match, got := false, ""
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case key:
				match = a.Value.String() == val
			case key2:
				got = a.Value.String()
			}
			return true
		})
		if match {
			return got
		}
	}
	return ""
}

// wait waits until count(msg, key, val) reaches n, failing t at ctx's end.
func (w logWatch) wait(ctx context.Context, t *testing.T, n int, msg, key, val string) {
	t.Helper()
	for {
		w.mu.Lock()
		changed := *w.changed
		w.mu.Unlock()
		if w.count(msg, key, val) >= n {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no %d log records %q with %s=%s", n, msg, key, val)
		}
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// advertise runs an Advertiser until the test ends.
func advertise(t *testing.T, cfg discovery.AdvertiserConfig) *discovery.Advertiser {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	a, err := discovery.NewAdvertiser(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Serve(context.Background()) }()
	t.Cleanup(func() {
		a.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return a
}

func TestFindLoopback(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reg := startFakeRegistry(t, "127.0.0.1:0", "fp-real")
		advertise(t, discovery.AdvertiserConfig{
			Instance: "huddle registry on test", Host: "real.local.",
			Port: int(reg.addr.Port()), Fingerprint: "fp-real", Version: "1.2.3",
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		r, addr, err := discovery.Find(ctx, discovery.BrowseConfig{Verify: verifyFP, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Find took %v", time.Since(start))
		if addr != reg.addr {
			t.Errorf("addr = %v, want %v", addr, reg.addr)
		}
		want := discovery.Advertised{
			Instance: "huddle registry on test (fp-real)", Host: "real.local.",
			Addrs:       []netip.AddrPort{reg.addr, netip.AddrPortFrom(netip.IPv6Loopback(), reg.addr.Port())},
			OnLink:      2,
			Fingerprint: "fp-real",
			Version:     "1.2.3", Proto: discovery.Proto, Iface: "lo",
		}
		if fmt.Sprint(r) != fmt.Sprint(want) {
			t.Errorf("registry = %+v\nwant       %+v", r, want)
		}
	})
}

func TestFindSkipsSpoofed(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reg := startFakeRegistry(t, "127.0.0.1:0", "fp-real")
		// The spoofer claims the real registry's address with its own
		// fingerprint, as a stale or hostile advertiser would.
		advertise(t, discovery.AdvertiserConfig{
			Instance: "spoof", Host: "spoof.local.",
			Port: int(reg.addr.Port()), Fingerprint: "fp-spoof",
		})
		advertise(t, discovery.AdvertiserConfig{
			Instance: "real", Host: "real.local.",
			Port: int(reg.addr.Port()), Fingerprint: "fp-real",
		})
		for i := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, _, err := discovery.Find(ctx, discovery.BrowseConfig{Verify: verifyFP, Logger: testLogger(t)})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if r.Fingerprint != "fp-real" || r.Instance != "real (fp-real)" {
				t.Errorf("Find #%d = %q %q, want the real registry", i, r.Instance, r.Fingerprint)
			}
		}

		reports, answers, err := discovery.Diagnose(context.Background(), discovery.BrowseConfig{Verify: verifyFP}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) == 0 {
			t.Error("Diagnose returned no interface reports")
		}
		got := make(map[string]bool) // instance -> verified
		for _, a := range answers {
			t.Logf("answer %+v", a)
			got[a.Registry.Instance] = a.Err == nil
		}
		if want := map[string]bool{"real (fp-real)": true, "spoof (fp-spoof)": false}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Diagnose verdicts = %v, want %v", got, want)
		}
	})
}

func TestFindNotFound(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, _, err := discovery.Find(ctx, discovery.BrowseConfig{Verify: verifyFP})
		if !errors.Is(err, discovery.ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Find with nothing advertised: %v, want ErrNotFound wrapping DeadlineExceeded", err)
		}
	})
}

func TestBrowseSeesLateRegistry(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		early := startFakeRegistry(t, "127.0.0.1:0", "fp-early")
		reg := startFakeRegistry(t, "127.0.0.1:0", "fp-late")
		advertise(t, discovery.AdvertiserConfig{Host: "early.local.", Port: int(early.addr.Port()), Fingerprint: "fp-early"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		log, w := watchLog(t)
		found := make(chan string, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 200 * time.Millisecond, Logger: log},
				func(r discovery.Advertised, addr netip.AddrPort) { found <- r.Fingerprint + "@" + addr.String() })
		}()
		next := func() string {
			t.Helper()
			select {
			case f := <-found:
				return f
			case <-ctx.Done():
				t.Fatal("Browse reported nothing more")
				return ""
			}
		}
		// Browsing runs and has reported what was there.
		if got, want := next(), "fp-early@"+early.addr.String(); got != want {
			t.Fatalf("first report %s, want %s", got, want)
		}
		advertise(t, discovery.AdvertiserConfig{Host: "late.local.", Port: int(reg.addr.Port()), Fingerprint: "fp-late"})
		if got, want := next(), "fp-late@"+reg.addr.String(); got != want {
			t.Fatalf("second report %s, want %s", got, want)
		}
		// Later queries answer again (each answer is logged), and are not
		// reported again.
		w.wait(ctx, t, 6, "discovery: answer", "fp", "fp-late")
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		close(found)
		for f := range found {
			t.Errorf("reported again: %s", f)
		}
	})
}

// TestBrowseForgetsGone checks that Browse tells its caller of a registry
// gone (Gone) after ForgetAfter without verifying, and keeps one that
// still verifies although its answers are not verified again that soon
// (recheckOK is longer): Browse verifies it at its address. Before, a
// registry reported held its place while Browse ran.
func TestBrowseForgetsGone(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		stays := startFakeRegistry(t, "127.0.0.1:0", "fp-stays")
		leaves := startFakeRegistry(t, "127.0.0.1:0", "fp-leaves")
		advertise(t, discovery.AdvertiserConfig{Host: "stays.local.", Port: int(stays.addr.Port()), Fingerprint: "fp-stays"})
		left := advertise(t, discovery.AdvertiserConfig{Host: "leaves.local.", Port: int(leaves.addr.Port()), Fingerprint: "fp-leaves"})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		found := make(chan string, 10)
		gone := make(chan string, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 200 * time.Millisecond, ForgetAfter: 800 * time.Millisecond,
				Gone: func(r discovery.Advertised) { gone <- r.Fingerprint }, Logger: testLogger(t)},
				func(r discovery.Advertised, addr netip.AddrPort) { found <- r.Fingerprint })
		}()
		next := func(c chan string, what string) string {
			t.Helper()
			select {
			case f := <-c:
				return f
			case <-ctx.Done():
				t.Fatalf("no %s reported", what)
				return ""
			}
		}
		seen := map[string]bool{next(found, "registry"): true, next(found, "registry"): true}
		if !seen["fp-stays"] || !seen["fp-leaves"] {
			t.Fatalf("found %v, want both registries", seen)
		}
		left.Close()
		leaves.stop()
		if got := next(gone, "registry gone"); got != "fp-leaves" {
			t.Errorf("gone: %s, want fp-leaves (fp-stays still verifies)", got)
		}
		// Another round of checks passes with fp-stays kept: a new
		// registry is found within it, and nothing more is gone.
		again := startFakeRegistry(t, "127.0.0.1:0", "fp-new")
		advertise(t, discovery.AdvertiserConfig{Host: "new.local.", Port: int(again.addr.Port()), Fingerprint: "fp-new"})
		if got := next(found, "new registry"); got != "fp-new" {
			t.Errorf("found %s, want fp-new", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		close(gone)
		for g := range gone {
			t.Errorf("also gone: %s", g)
		}
	})
}

func TestSelectInterfacesLoopbackFallback(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reports, err := discovery.SelectInterfaces(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 1 || reports[0].Name != "lo" || !reports[0].Used {
			t.Errorf("reports = %+v, want lo used", reports)
		}
		reports, err = discovery.SelectInterfaces([]string{"nope0"})
		if !errors.Is(err, discovery.ErrNoInterface) {
			t.Errorf("SelectInterfaces(nope0) error = %v, want ErrNoInterface", err)
		}
		t.Logf("reports %+v; error: %v", reports, err)
	})
}

func TestAdvertiserClose(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		log, w := watchLog(t)
		a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- a.Serve(context.Background()) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.wait(ctx, t, 1, "discovery: advertising registry", "iface", "lo")
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil && !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("Serve = %v, want nil (or ErrClosed if it started after Close)", err)
		}
		if err := a.Serve(context.Background()); !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("Serve after Close = %v, want ErrClosed", err)
		}
	})
}

func TestNewAdvertiserValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  discovery.AdvertiserConfig
	}{
		{"no port", discovery.AdvertiserConfig{Fingerprint: "fp"}},
		{"port too big", discovery.AdvertiserConfig{Port: 70000, Fingerprint: "fp"}},
		{"no fingerprint", discovery.AdvertiserConfig{Port: 7373}},
		{"huge fingerprint", discovery.AdvertiserConfig{Port: 7373, Fingerprint: string(make([]byte, 300))}},
		{"a format character in the instance name", discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Instance: "office\u200b"}},
		{"a filler in the instance name", discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Instance: "office\u3164"}},
		{"a blank a variation selector hides at the end of the instance name", discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Instance: "office \ufe0f"}},
		{"an instance name of a variation selector alone", discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Instance: "\ufe0f"}},
		{"a control character in the instance name", discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", Instance: "office\x1b[2J"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := discovery.NewAdvertiser(tc.cfg); !errors.Is(err, discovery.ErrInvalidConfig) {
				t.Errorf("NewAdvertiser = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, _, err := discovery.Find(context.Background(), discovery.BrowseConfig{}); !errors.Is(err, discovery.ErrInvalidConfig) {
		t.Errorf("Find without Verify = %v, want ErrInvalidConfig", err)
	}
}

func TestBrowseReportsRestartWithNewKey(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		seen := make(chan string, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 200 * time.Millisecond},
				func(r discovery.Advertised, addr netip.AddrPort) { seen <- r.Fingerprint })
		}()
		next := func() string {
			select {
			case fp := <-seen:
				return fp
			case <-ctx.Done():
				t.Fatal("Browse reported nothing")
				return ""
			}
		}

		old := startFakeRegistry(t, "127.0.0.1:0", "fp-old")
		a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{Instance: "reg", Host: "reg.local.", Port: int(old.addr.Port()), Fingerprint: "fp-old"})
		if err != nil {
			t.Fatal(err)
		}
		go a.Serve(ctx)
		if got := next(); got != "fp-old" {
			t.Fatalf("first report %q, want fp-old", got)
		}
		a.Close()

		// The registry restarts with a new key (and port), same instance.
		fresh := startFakeRegistry(t, "127.0.0.1:0", "fp-new")
		advertise(t, discovery.AdvertiserConfig{Instance: "reg", Host: "reg.local.", Port: int(fresh.addr.Port()), Fingerprint: "fp-new"})
		if got := next(); got != "fp-new" {
			t.Fatalf("second report %q, want fp-new", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// dummyIface makes an interface name in the test's namespace holding
// addr, up and multicast-capable: one end of a veth pair whose other end
// is up with no address, so what it sends goes nowhere that answers, and
// its multicast loops back to the namespace's own sockets, which is all a
// test needs.
func dummyIface(t *testing.T, name, addr string) {
	t.Helper()
	ip(t, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	ip(t, "link", "set", name+"p", "up")
	ip(t, "link", "set", name, "up", "multicast", "on")
	ip(t, "addr", "add", addr, "dev", name)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

func TestAdvertiserFollowsAddressChange(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		dummyIface(t, "d0", "10.99.0.1/24")
		reg := startFakeRegistry(t, "0.0.0.0:0", "fp")
		on := []string{"d0"}
		advertise(t, discovery.AdvertiserConfig{Host: "reg.local.", Port: int(reg.addr.Port()), Fingerprint: "fp", Interfaces: on, RescanInterval: 100 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		seen := make(chan netip.AddrPort, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, Interfaces: on, QueryInterval: 200 * time.Millisecond},
				func(r discovery.Advertised, addr netip.AddrPort) { seen <- addr })
		}()
		want := []string{"10.99.0.1", "10.98.0.2"}
		for i, w := range want {
			select {
			case addr := <-seen:
				if addr.Addr().String() != w {
					t.Fatalf("report %d at %v, want %s", i, addr, w)
				}
			case <-ctx.Done():
				t.Fatalf("no report %d (want %s)", i, w)
			}
			if i == 0 {
				// The registry's host moves to another address.
				ip(t, "addr", "add", "10.98.0.2/24", "dev", "d0")
				ip(t, "addr", "del", "10.99.0.1/24", "dev", "d0")
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestNoMulticastRoute browses and advertises in a namespace with no route
// at all for multicast (no default route, no 224.0.0.0/4): the sockets
// join and send by interface index, so discovery still works (issue 17.3).
func TestNoMulticastRoute(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		ip(t, "route", "del", "224.0.0.0/4", "dev", "lo")
		if out, err := exec.Command("ip", "route", "get", "224.0.0.251").CombinedOutput(); err == nil {
			t.Fatalf("a route to 224.0.0.251 is left: %s", out)
		}
		reg := startFakeRegistry(t, "127.0.0.1:0", "fp-real")
		advertise(t, discovery.AdvertiserConfig{Port: int(reg.addr.Port()), Fingerprint: "fp-real"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, addr, err := discovery.Find(ctx, discovery.BrowseConfig{Verify: verifyFP, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if addr != reg.addr || r.Fingerprint != "fp-real" {
			t.Errorf("found %s at %v, want fp-real at %v", r.Fingerprint, addr, reg.addr)
		}
		reports, _, err := discovery.Diagnose(ctx, discovery.BrowseConfig{Verify: verifyFP}, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range reports {
			if rep.Used && (!rep.Joined || rep.JoinErr != nil || rep.SendErr != nil || rep.Queries == 0 || rep.Responses == 0) {
				t.Errorf("interface report %+v: want joined, queries sent and responses heard", rep)
			}
		}
	})
}

// TestAdvertiseOnlyAcceptedAddrs checks that only addresses the registry's
// socket accepts are advertised: a registry bound to 127.0.0.1 advertises
// nothing on d0 and says so; one bound to one of d0's addresses advertises
// that address alone (issue 17.1).
func TestAdvertiseOnlyAcceptedAddrs(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		dummyIface(t, "d0", "10.99.0.1/24")
		ip(t, "addr", "add", "10.99.0.7/24", "dev", "d0")
		on := []string{"d0"}
		local := startFakeRegistry(t, "127.0.0.1:0", "fp-local")
		one := startFakeRegistry(t, "10.99.0.7:0", "fp-one")
		log, w := watchLog(t)
		advertise(t, discovery.AdvertiserConfig{Port: int(local.addr.Port()), Listen: local.addr.Addr(), Fingerprint: "fp-local", Interfaces: on, Logger: log})
		advertise(t, discovery.AdvertiserConfig{Port: int(one.addr.Port()), Listen: one.addr.Addr(), Fingerprint: "fp-one", Interfaces: on})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.wait(ctx, t, 1, "discovery: the registry is advertised on no interface; clients must be given its address", "", "")
		if n := w.count("discovery: advertising registry", "", ""); n != 0 {
			t.Errorf("the loopback-only registry logged %d times that it advertises", n)
		}

		_, answers, err := discovery.Diagnose(ctx, discovery.BrowseConfig{Verify: verifyFP, Interfaces: on}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range answers {
			got = append(got, fmt.Sprint(a.Registry.Fingerprint, a.Registry.Addrs, a.Err))
		}
		if want := []string{fmt.Sprint("fp-one", []netip.AddrPort{one.addr}, nil)}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("answers on d0: %v, want %v", got, want)
		}
	})
}

// TestInstanceNamesUnique runs two registries of different keys with the
// same configured instance name on one host: each is advertised under a
// name of its own, and browsing reports both (issue 17.2).
func TestInstanceNamesUnique(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		a := startFakeRegistry(t, "127.0.0.1:0", "aaaa-aaaa-aaaa")
		b := startFakeRegistry(t, "127.0.0.1:0", "bbbb-bbbb-bbbb")
		advertise(t, discovery.AdvertiserConfig{Instance: "huddle registry on raspberrypi", Port: int(a.addr.Port()), Fingerprint: "aaaa-aaaa-aaaa"})
		advertise(t, discovery.AdvertiserConfig{Instance: "huddle registry on raspberrypi", Port: int(b.addr.Port()), Fingerprint: "bbbb-bbbb-bbbb"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		found := make(chan string, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP},
				func(r discovery.Advertised, addr netip.AddrPort) {
					found <- r.Instance + " " + r.Host + " " + addr.String()
				})
		}()
		got := map[string]bool{}
		for len(got) < 2 {
			select {
			case f := <-found:
				got[f] = true
			case <-ctx.Done():
				t.Fatalf("Browse reported only %v", got)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		host, _ := os.Hostname()
		host, _, _ = strings.Cut(host, ".")
		want := map[string]bool{
			"huddle registry on raspberrypi (aaaa-aaaa) " + strings.ToLower(host) + "-aaaaaaaa.local. " + a.addr.String(): true,
			"huddle registry on raspberrypi (bbbb-bbbb) " + strings.ToLower(host) + "-bbbbbbbb.local. " + b.addr.String(): true,
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("reports %v, want %v", got, want)
		}
	})
}

// TestConflictRenames runs two advertisers that would use one instance
// name (the same key, copied to a second registry): one of them sees the
// other's announcement, renames, and from then on every answer names two
// instances (RFC 6762 §9; issue 17.2).
func TestConflictRenames(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		a := startFakeRegistry(t, "127.0.0.1:0", "same-key")
		b := startFakeRegistry(t, "127.0.0.1:0", "same-key")
		log, w := watchLog(t) // both advertisers log here
		advertise(t, discovery.AdvertiserConfig{Port: int(a.addr.Port()), Fingerprint: "same-key", Logger: log})
		advertise(t, discovery.AdvertiserConfig{Port: int(b.addr.Port()), Fingerprint: "same-key", Logger: log})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		const renamed = "discovery: renamed the registry's mDNS instance after a conflict"
		w.wait(ctx, t, 1, renamed, "", "")
		// The rename is logged when decided; the old name's responder
		// stops, and answers a query until it has, a moment later. Ask
		// once the new name is advertised.
		w.wait(ctx, t, 1, "discovery: advertising registry", "instance", w.attr(renamed, "now"))
		_, answers, err := discovery.Diagnose(ctx, discovery.BrowseConfig{Verify: verifyFP}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string][]netip.AddrPort{}
		for _, an := range answers {
			names[an.Registry.Instance] = append(names[an.Registry.Instance], an.Registry.Addrs[0])
		}
		if len(names) != 2 {
			t.Fatalf("instances answered: %v, want two names", names)
		}
		for name, addrs := range names {
			if len(addrs) != 1 {
				t.Errorf("instance %q answered with %v: two adverts under one name", name, addrs)
			}
		}
		// Both registries announced twice by now, the renamed one under its
		// new name: nothing renamed again.
		if n := w.count(renamed, "", ""); n != 1 {
			t.Errorf("%d renames, want 1", n)
		}
	})
}

// TestJoinFailureWarnsOnce makes every multicast join fail (the namespace's
// limit of memberships per socket is 0): the advertiser warns once, with
// what to do, however often it rescans; Diagnose says the join failed and
// why, while its queries still go out.
func TestJoinFailureWarnsOnce(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		if out, err := exec.Command("sysctl", "-w", "net.ipv4.igmp_max_memberships=0").CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v: %s", err, out)
		}
		log, w := watchLog(t)
		advertise(t, discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp", RescanInterval: 20 * time.Millisecond, Logger: log})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		const cannot = "discovery: cannot advertise the registry on lo"
		w.wait(ctx, t, 5, cannot, "iface", "lo") // five rescans
		warned := 0
		w.mu.Lock()
		for _, r := range *w.records {
			if r.Message == cannot && r.Level == slog.LevelWarn {
				warned++
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "fix" && !strings.Contains(a.Value.String(), "igmp_max_memberships") {
						t.Errorf("the warning's fix is %q, want the sysctl to raise", a.Value)
					}
					return true
				})
			}
		}
		w.mu.Unlock()
		if warned != 1 {
			t.Errorf("%d warnings for the same failure, want 1", warned)
		}

		reports, _, err := discovery.Diagnose(ctx, discovery.BrowseConfig{Verify: verifyFP}, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		var se *discovery.SocketError
		if len(reports) != 1 || reports[0].Joined || !errors.As(reports[0].JoinErr, &se) || se.Op != "join" || reports[0].Queries == 0 || reports[0].SendErr != nil {
			t.Fatalf("reports %+v: want lo not joined (a join SocketError), queries sent", reports)
		}
		t.Logf("join error: %v; advice: %s", se, se.Advice())
	})
}

// TestSendRefusedWarnsOnce drops every packet to the mDNS group in the
// namespace's firewall (an nftables OUTPUT rule, as a host firewall
// would): queries fail with a permission error, the browser warns once
// however often it queries, and Diagnose says the queries could not be
// sent, with advice that names the firewall.
func TestSendRefusedWarnsOnce(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		nft, err := exec.LookPath("nft")
		if err != nil {
			const msg = "needs nft (Debian package nftables)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + " (CI=true, so this is a failure, not a skip)")
			}
			t.Skip(msg)
		}
		for _, rule := range []string{
			"add table inet huddletest",
			`add chain inet huddletest out { type filter hook output priority 0; }`,
			"add rule inet huddletest out ip daddr 224.0.0.251 udp dport 5353 drop",
		} {
			if out, err := exec.Command(nft, rule).CombinedOutput(); err != nil {
				t.Fatalf("nft %s: %v: %s", rule, err, out)
			}
		}
		log, w := watchLog(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		const cannot = "discovery: cannot send mDNS queries on lo"
		bctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(bctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 20 * time.Millisecond, Logger: log},
				func(discovery.Advertised, netip.AddrPort) {})
		}()
		w.wait(ctx, t, 5, cannot, "iface", "lo") // five queries refused
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		warned := 0
		w.mu.Lock()
		for _, r := range *w.records {
			if r.Message == cannot && r.Level == slog.LevelWarn {
				warned++
			}
		}
		w.mu.Unlock()
		if warned != 1 {
			t.Errorf("%d warnings for the same refusal, want 1", warned)
		}

		reports, _, err := discovery.Diagnose(ctx, discovery.BrowseConfig{Verify: verifyFP}, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		var se *discovery.SocketError
		if len(reports) != 1 || !errors.As(reports[0].SendErr, &se) || se.Op != "send" || !strings.Contains(se.Advice(), "firewall") || !reports[0].Joined {
			t.Fatalf("reports %+v: want lo joined, its sends refused with firewall advice", reports)
		}
		t.Logf("send error: %v; advice: %s", se, se.Advice())
	})
}

// TestRenamesBounded has a spoofer claim a registry's mDNS instance name
// with a copy of its fingerprint (TXT is never verified) and records that
// sort above its own, and claim each new name as the registry renames: the
// registry renames at most discovery.MaxRenames times, then keeps its name
// and says why. Each rename lengthened the name (" #N"), without end.
func TestRenamesBounded(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reg := startFakeRegistry(t, "127.0.0.1:0", "same-key")
		log, w := watchLog(t)
		advertise(t, discovery.AdvertiserConfig{Port: int(reg.addr.Port()), Fingerprint: "same-key", Logger: log})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		const (
			advertising = "discovery: advertising registry"
			renamed     = "discovery: renamed the registry's mDNS instance after a conflict"
			kept        = "discovery: keeping the registry's mDNS instance name despite a conflict"
		)
		w.wait(ctx, t, 1, advertising, "", "")
		name := w.attr(advertising, "instance")
		spoofer, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
		if err != nil {
			t.Fatal(err)
		}
		defer spoofer.Close()
		resend := time.NewTicker(200 * time.Millisecond)
		defer resend.Stop()
		for i := 0; ; i++ {
			if i > discovery.MaxRenames {
				t.Fatalf("renamed %d times", i)
			}
			fqdn := strings.NewReplacer(".", `\.`, `\`, `\\`).Replace(name) + "._huddle._udp.local."
			hdr := func(n string, t uint16) dns.RR_Header {
				return dns.RR_Header{Name: n, Rrtype: t, Class: dns.ClassINET | 1<<15, Ttl: 120}
			}
			m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Answer: []dns.RR{
				&dns.PTR{Hdr: hdr("_huddle._udp.local.", dns.TypePTR), Ptr: fqdn},
				&dns.SRV{Hdr: hdr(fqdn, dns.TypeSRV), Target: "zzz.local.", Port: 65535},
				&dns.TXT{Hdr: hdr(fqdn, dns.TypeTXT), Txt: []string{"proto=huddle/1", "fp=same-key"}},
				&dns.A{Hdr: hdr("zzz.local.", dns.TypeA), A: net.IPv4(127, 0, 0, 99)},
			}}
			out, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			// Claimed until the registry renames or says it keeps the name.
			for w.count(renamed, "was", name) == 0 && w.count(kept, "", "") == 0 {
				if _, err := spoofer.Write(out); err != nil {
					t.Fatal(err)
				}
				w.mu.Lock()
				changed := *w.changed
				w.mu.Unlock()
				select { // a record logged, or a while without: claim again
				case <-changed:
				case <-resend.C:
				case <-ctx.Done():
					t.Fatalf("no rename nor refusal after claiming %q", name)
				}
			}
			if w.count(kept, "", "") > 0 {
				if n := w.count(renamed, "", ""); n != discovery.MaxRenames {
					t.Errorf("kept its name after %d renames, want %d", n, discovery.MaxRenames)
				}
				return
			}
			name = w.attrWhere(renamed, "was", name, "now")
			w.wait(ctx, t, 1, advertising, "instance", name)
		}
	})
}

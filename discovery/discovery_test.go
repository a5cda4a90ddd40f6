package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/internal/netlab"
)

// fakeRegistry stands in for the registry's QUIC listener: it answers any
// UDP packet with its fingerprint, which is enough for a Verify that checks
// "is the advertised fingerprint the one listening there".
type fakeRegistry struct {
	addr netip.AddrPort
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
	t.Cleanup(func() { pc.Close(); <-done })
	return &fakeRegistry{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// verifyFP is a Verify that asks the fake registry at addr for its
// fingerprint and compares it to the advertised one.
func verifyFP(ctx context.Context, r discovery.Registry, addr netip.AddrPort) error {
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
		want := discovery.Registry{
			Instance: "huddle registry on test", Host: "real.local.",
			Addrs:       []netip.AddrPort{reg.addr, netip.AddrPortFrom(netip.IPv6Loopback(), reg.addr.Port())},
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
			if r.Fingerprint != "fp-real" || r.Instance != "real" {
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
		if want := map[string]bool{"real": true, "spoof": false}; fmt.Sprint(got) != fmt.Sprint(want) {
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
		reg := startFakeRegistry(t, "127.0.0.1:0", "fp-late")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var (
			mu    sync.Mutex
			seen  []string
			first = make(chan struct{})
		)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 200 * time.Millisecond, Logger: testLogger(t)},
				func(r discovery.Registry, addr netip.AddrPort) {
					mu.Lock()
					defer mu.Unlock()
					seen = append(seen, r.Fingerprint+"@"+addr.String())
					if len(seen) == 1 {
						close(first)
					}
				})
		}()
		time.Sleep(500 * time.Millisecond) // browsing has started and found nothing
		advertise(t, discovery.AdvertiserConfig{Host: "late.local.", Port: int(reg.addr.Port()), Fingerprint: "fp-late"})
		select {
		case <-first:
		case <-ctx.Done():
			t.Fatal("Browse never reported the registry that appeared later")
		}
		time.Sleep(600 * time.Millisecond) // more queries answer; no duplicate reports
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"fp-late@" + reg.addr.String()}; fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("found calls = %v, want %v", seen, want)
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
		a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{Port: 7373, Fingerprint: "fp"})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- a.Serve(context.Background()) }()
		time.Sleep(50 * time.Millisecond)
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
				func(r discovery.Registry, addr netip.AddrPort) { seen <- r.Fingerprint })
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

func TestAdvertiserFollowsAddressChange(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reg := startFakeRegistry(t, "0.0.0.0:0", "fp")
		advertise(t, discovery.AdvertiserConfig{Host: "reg.local.", Port: int(reg.addr.Port()), Fingerprint: "fp", RescanInterval: 100 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		seen := make(chan netip.AddrPort, 10)
		done := make(chan error, 1)
		go func() {
			done <- discovery.Browse(ctx, discovery.BrowseConfig{Verify: verifyFP, QueryInterval: 200 * time.Millisecond},
				func(r discovery.Registry, addr netip.AddrPort) { seen <- addr })
		}()
		want := []string{"127.0.0.1", "10.99.0.1"}
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
				// hashicorp/mdns keeps the last A record of an answer, so
				// the new address is what browsers see once re-advertised.
				if out, err := exec.Command("ip", "addr", "add", "10.99.0.1/24", "dev", "lo").CombinedOutput(); err != nil {
					t.Fatalf("ip addr add: %v: %s", err, out)
				}
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

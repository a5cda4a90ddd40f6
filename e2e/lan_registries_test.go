//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testbin"
)

// steadyFor is how long TestLANRegistries watches a steady LAN for
// flapping (issue 17: 60 s).
const steadyFor = 60 * time.Second

// TestLANRegistries runs issue 17's LAN: two registries on two hosts of the
// same host name (every namespace shares this machine's), group daemons on
// three other hosts finding them over mDNS, one of them on a host with no
// default route and no multicast route, a registry bound to loopback only
// on another host, and users on the LAN.
//
//	LAN A (10.77.0.0/24): ra registry A (.1), rb registry B (.2),
//	                      ga "alpha" (.3), gb "beta" (.4), cli (.5),
//	                      lonly registry on 127.0.0.1 only (.6),
//	                      nr "gamma", no route for multicast (.7)
//
// It checks that the loopback-only registry is advertised nowhere and
// tried by nobody; that nothing flaps for steadyFor (every group registered
// once at each registry, no lease expiring, each registry found once by
// each daemon) while both registries list every group; that with registry
// A killed every group is still listed and usable from every host; and
// that A, restarted, lists every group again. It logs the figures issue
// 17 sets targets for: huddle groups' p50 with two registries, the time to
// re-register after the restart, and the lease expiries while steady.
func TestLANRegistries(t *testing.T) {
	// Parallel: its LAN is namespaces of its own, and most of its time is
	// the steady period's waiting, which the other tests can use.
	t.Parallel()
	lan := netlab.New(t)
	ra := lan.AddHost("ra", "10.77.0.1/24")
	rb := lan.AddHost("rb", "10.77.0.2/24")
	ga := lan.AddHost("ga", "10.77.0.3/24")
	gb := lan.AddHost("gb", "10.77.0.4/24")
	cliHost := lan.AddHost("cli", "10.77.0.5/24")
	lonly := lan.AddHost("lonly", "10.77.0.6/24")
	nr := lan.AddHost("nr", "10.77.0.7/24")
	// No route for multicast on nr (and netlab adds no default route):
	// joins and sends that name no interface fail there with ENODEV.
	nr.Run(context.Background(), "ip", "route", "del", "224.0.0.0/4")
	if out, err := testbin.CombinedOutput(nr.Command(context.Background(), "ip", "route", "get", "224.0.0.251")); err == nil {
		t.Fatalf("nr still has a route to 224.0.0.251: %s", out)
	}

	state := t.TempDir()
	const lease = "3s" // renewed every second: a flap would show at once
	startReg := func(h *netlab.Host, name string) *lanDaemon {
		return startLANDaemon(t, h, "registry", "--listen", ":7373", "--lease", lease, "--state-dir", filepath.Join(state, name))
	}
	regA, regB := startReg(ra, "ra"), startReg(rb, "rb")
	lonlyReg := startLANDaemon(t, lonly, "registry", "--listen", "127.0.0.1:7373", "--lease", lease, "--state-dir", filepath.Join(state, "lonly"))
	alpha := startLANDaemon(t, ga, "serve", "--group", "alpha", "--listen", ":7374", "--state-dir", filepath.Join(state, "alpha"))
	beta := startLANDaemon(t, gb, "serve", "--group", "beta", "--listen", ":7374", "--state-dir", filepath.Join(state, "beta"))
	gamma := startLANDaemon(t, nr, "serve", "--group", "gamma", "--listen", ":7374", "--state-dir", filepath.Join(state, "gamma"))
	groupDaemons := []*lanDaemon{alpha, beta, gamma}
	all := []string{"alpha", "beta", "gamma"}

	cli := &lanUser{t: t, host: cliHost, home: filepath.Join(state, "alice")}
	addrA, addrB := "10.77.0.1:7373", "10.77.0.2:7373"
	cli.waitGroupsAt(addrA, all...)
	cli.waitGroupsAt(addrB, all...)

	// The loopback-only registry says so at start, and nobody tries it.
	if l := lonlyReg.log(); !strings.Contains(l, "not advertising the registry on eth0") || strings.Contains(l, "msg=\"discovery: advertising registry\"") {
		t.Errorf("the loopback-only registry's log does not say it is not advertised:\n%s", l)
	}

	// Steady: every second, both registries list every group.
	start := time.Now()
	tick := time.NewTicker(time.Second)
	for time.Since(start) < steadyFor {
		<-tick.C
		for _, addr := range []string{addrA, addrB} {
			if missing := cli.missingAt(addr, all); len(missing) > 0 {
				t.Errorf("%v into the steady period, %s does not list %v", time.Since(start).Round(time.Second), addr, missing)
			}
		}
	}
	tick.Stop()
	for _, reg := range []*lanDaemon{regA, regB} {
		l := reg.log()
		for _, g := range all {
			if n := strings.Count(l, `msg="group registered" group=`+g+" "); n != 1 {
				t.Errorf("%s registered %s %d times in %v, want once (no flapping)", reg.name, g, n, steadyFor)
			}
		}
		if n := strings.Count(l, "group lease expired"); n != 0 {
			t.Errorf("%s: %d leases expired while the LAN was steady", reg.name, n)
		}
	}
	if t.Failed() {
		for _, d := range append([]*lanDaemon{regA, regB}, groupDaemons...) {
			t.Logf("%s log:\n%s", d.name, d.log())
		}
	}
	t.Logf("steady for %v: each group registered once at each registry, 0 lease expiries", steadyFor)
	for _, d := range groupDaemons {
		if n := strings.Count(d.log(), "registry found over mDNS"); n != 2 {
			t.Errorf("%s found %d registries over mDNS, want the 2 (once each):\n%s", d.name, n, d.log())
		}
		if strings.Contains(d.log(), "10.77.0.6") {
			t.Errorf("%s tried the loopback-only registry:\n%s", d.name, d.log())
		}
	}
	if l := lonlyReg.log(); strings.Contains(l, "group registered") {
		t.Errorf("a group registered with the loopback-only registry:\n%s", l)
	}

	// The user's view, found over mDNS: every group, each listed by both
	// registries; doctor sees both registries, verified, and nothing else.
	// (A command waits for a registry at most 250 ms after the first
	// answered: on a loaded machine one may miss the other, and the next
	// asks both at once from the cache.)
	var groups []groupJSON
	if !eventually(t, waitTimeout, func() bool {
		groups, _ = cli.listed()
		for _, g := range groups {
			if len(g.ListedBy) != 2 {
				return false
			}
		}
		return len(groups) == len(all)
	}) {
		t.Errorf("huddle groups over mDNS never listed every group from both registries: %+v", groups)
	}
	rep := doctorJSON(t, cli.run("doctor", "--json", "--wait", "1s"))
	var seen []string
	for _, a := range rep.MDNS {
		seen = append(seen, a.Addr)
		if a.Error != "" {
			t.Errorf("doctor rejected %+v", a)
		}
	}
	slices.Sort(seen)
	if want := []string{addrA, addrB}; !slices.Equal(slices.Compact(seen), want) {
		t.Errorf("doctor's mDNS answers are at %v, want %v only", seen, want)
	}
	for _, a := range rep.Advice {
		if strings.Contains(a, "impersonat") || strings.Contains(a, "firewall") {
			t.Errorf("doctor advises %q on a healthy LAN", a)
		}
	}

	// huddle groups over mDNS with two registries: p50 (issue 17's target:
	// under 100 ms), a figure for the closing note, not an assertion.
	var times []time.Duration
	for range 20 {
		t0 := time.Now()
		cli.ok("groups")
		times = append(times, time.Since(t0))
	}
	slices.Sort(times)
	t.Logf("huddle groups over mDNS with two registries, 20 runs: p50 %v, p95 %v, min %v, max %v",
		times[10].Round(time.Millisecond), times[19].Round(time.Millisecond), times[0].Round(time.Millisecond), times[19].Round(time.Millisecond))

	// Registry A dies: every group is still listed, and usable, from every
	// host (group daemons' hosts and the one without a multicast route
	// included).
	regA.kill()
	for _, h := range []*netlab.Host{cliHost, ga, gb, nr} {
		u := &lanUser{t: t, host: h, home: filepath.Join(state, "user-"+h.Name())}
		if missing := u.missing(all); len(missing) > 0 {
			t.Errorf("from %s with registry A down, groups %v are not listed", h.Name(), missing)
		}
	}
	cli.ok("join", "gamma", "--as", "alice")
	cli.ok("send", "gamma", "while A is down")
	if out := cli.ok("fetch", "gamma"); !strings.Contains(out, "while A is down") {
		t.Errorf("fetch with registry A down: %q", out)
	}

	// A comes back on its address with its key: every group is registered
	// with it again by the daemons' next renewal.
	restarted := time.Now()
	startReg(ra, "ra") // killed at the test's end (t.Cleanup)
	back := cli.waitGroupsAt(addrA, all...)
	t.Logf("registry A restarted: every group listed again %v after it started (renewal every %v)", back.Sub(restarted).Round(time.Millisecond), "1s")
}

// waitGroupsAt polls the registry at addr (given, no mDNS) until it lists
// every name, and returns when.
func (u *lanUser) waitGroupsAt(addr string, names ...string) time.Time {
	u.t.Helper()
	var missing []string
	if !eventually(u.t, waitTimeout, func() bool { missing = u.missingAt(addr, names); return len(missing) == 0 }) {
		u.t.Fatalf("%s never listed %v", addr, missing)
	}
	return time.Now()
}

// missingAt returns the names the registry at addr does not list now.
func (u *lanUser) missingAt(addr string, names []string) []string {
	r := u.run("groups", "--json", "--registry", addr, "--timeout", "5s")
	return missingIn(u.t, r, names)
}

// missing returns the names huddle groups (over mDNS) does not list now.
func (u *lanUser) missing(names []string) []string {
	return missingIn(u.t, u.run("groups", "--json", "--timeout", "5s"), names)
}

func missingIn(t *testing.T, r lanResult, names []string) []string {
	if r.code != 0 {
		return slices.Clone(names)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var g groupJSON
		if line != "" && json.Unmarshal([]byte(line), &g) == nil {
			have[g.Name] = true
		}
	}
	var out []string
	for _, n := range names {
		if !have[n] {
			out = append(out, n)
		}
	}
	return out
}

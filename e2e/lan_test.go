//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	hregistry "github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testbin"
)

// TestLAN runs huddle on a LAN of network namespaces with no registry
// address given anywhere: the registry is found over mDNS by the group
// daemons and by the CLI.
//
//	LAN A (10.77.0.0/24): h1 registry (.1), h2 group daemon "alpha" (.2),
//	                      h3 group daemon "beta" (.3), h4 CLI (.4),
//	                      h5 spoofer (.5), h6 group daemon "gamma" (.6),
//	                      started before its interface could multicast
//	LAN B (10.78.0.0/24): h1 (.1) and h4 (.4) again; no registry answers
//	                      there from h4's point of view that works from A
//
// The registry's host and the CLI's host both have a second interface, so
// the test also checks that the registry advertises, on each LAN, an address
// valid there, and that a CLI with two interfaces still finds it.
func TestLAN(t *testing.T) {
	t.Parallel() // its LAN is namespaces of its own, as TestLANRegistries'
	lan := netlab.New(t)
	h1 := lan.AddHost("reg", "10.77.0.1/24")
	h2 := lan.AddHost("alpha", "10.77.0.2/24")
	h3 := lan.AddHost("beta", "10.77.0.3/24")
	h4 := lan.AddHost("cli", "10.77.0.4/24")
	h5 := lan.AddHost("spoof", "10.77.0.5/24")
	lanB := lan.AddBridge("lanb")
	h1.Attach(lanB, "10.78.0.1/24")
	h4.Attach(lanB, "10.78.0.4/24")

	state := t.TempDir()
	registry := startLANDaemon(t, h1, "registry", "--listen", ":7373", "--lease", "2s", "--state-dir", filepath.Join(state, "reg"))
	startLANDaemon(t, h2, "serve", "--group", "alpha", "--listen", ":7374", "--state-dir", filepath.Join(state, "alpha"))
	beta := startLANDaemon(t, h3, "serve", "--group", "beta", "--listen", ":7374", "--state-dir", filepath.Join(state, "beta"))
	// A spoofer answers mDNS for the same service with a fingerprint its
	// QUIC handshake does not show; clients must skip it.
	startSpoofer(t, h5)

	cli := &lanUser{t: t, host: h4, home: filepath.Join(state, "alice")}
	groups := cli.waitGroups("alpha", "beta")
	for _, g := range groups {
		if len(g.Addrs) != 1 || !strings.HasPrefix(g.Addrs[0], "10.77.0.") {
			t.Errorf("group %s listed at %v, want its LAN A address", g.Name, g.Addrs)
		}
	}

	// Join, send and fetch across hosts.
	cli.ok("join", "alpha", "--as", "alice")
	cli.ok("send", "alpha", "hello", "across", "the", "lan")
	var msg struct {
		Seq  uint64 `json:"seq"`
		Text string `json:"text"`
		Name string `json:"name"`
	}
	out := cli.ok("fetch", "alpha", "--json")
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &msg); err != nil || msg.Seq != 1 || msg.Text != "hello across the lan" || msg.Name != "alice" {
		t.Fatalf("fetch over the LAN = %q (%v)", out, err)
	}

	// doctor from the CLI host: the spoofer's answer is rejected and every
	// answer from the real registry carries a LAN-reachable address.
	doc := cli.run("doctor", "--wait", "1500ms")
	t.Logf("huddle doctor on h4:\n%s", doc.stdout)
	if doc.code != 0 {
		t.Errorf("doctor exit code %d", doc.code)
	}
	rep := doctorJSON(t, cli.run("doctor", "--json", "--wait", "1500ms"))
	rejected, verified := 0, map[string]bool{}
	for _, a := range rep.MDNS {
		switch {
		case a.Error != "":
			rejected++
		case a.Iface == "eth0" && !strings.HasPrefix(a.Addr, "10.77.0."), a.Iface == "eth1" && !strings.HasPrefix(a.Addr, "10.78.0."):
			t.Errorf("an answer on %s carries an address from elsewhere: %+v", a.Iface, a)
		default:
			verified[a.Iface] = true
		}
	}
	if rejected == 0 || !verified["eth0"] || !verified["eth1"] {
		t.Errorf("doctor --json mDNS answers %+v: want the spoofer rejected, the registry verified on eth0 and eth1", rep.MDNS)
	}

	// Restart the registry: both groups come back without touching the
	// group daemons (they notice the new epoch and register again).
	registry.stop(t)
	startLANDaemon(t, h1, "registry", "--listen", ":7373", "--lease", "2s", "--state-dir", filepath.Join(state, "reg"))
	cli.waitGroups("alpha", "beta")

	// A group daemon that starts before its host can multicast (as a
	// service may start before the network) keeps trying, and registers
	// once the interface can.
	late := lan.AddHost("late", "10.77.0.6/24")
	late.Run(context.Background(), "ip", "link", "set", "eth0", "multicast", "off")
	startLANDaemon(t, late, "serve", "--group", "gamma", "--listen", ":7374", "--state-dir", filepath.Join(state, "gamma"))
	late.Run(context.Background(), "ip", "link", "set", "eth0", "multicast", "on")
	cli.waitGroups("alpha", "beta", "gamma")

	// Kill beta's daemon without a goodbye: its group vanishes once its
	// lease lapses.
	beta.kill()
	cli.waitGroupsExactly("alpha", "gamma")

	// Time from `huddle groups` starting to the groups printed, found over
	// mDNS, 20 runs: a figure for the closing note, not an assertion.
	var times []time.Duration
	for range 20 {
		start := time.Now()
		cli.ok("groups")
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	t.Logf("huddle groups over mDNS, 20 runs: p50 %v, p95 %v, min %v, max %v",
		times[len(times)/2].Round(time.Millisecond), times[len(times)*95/100].Round(time.Millisecond),
		times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
}

// lanDaemon is a huddle daemon running in a LAN host, until the test
// ends it (stop, kill): an end without that fails the test at once,
// naming it and how it ended, as startProc's untilStopped.
type lanDaemon struct {
	name   string
	cmd    *exec.Cmd
	fate   testbin.Fate
	done   chan struct{}
	stderr *bytes.Buffer
	mu     *sync.Mutex
}

func startLANDaemon(t *testing.T, h *netlab.Host, args ...string) *lanDaemon {
	t.Helper()
	cmd := h.Command(context.Background(), huddleBin, args...)
	cmd.Env = childEnv(t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &lanDaemon{name: h.Name() + " huddle " + args[0], cmd: cmd, done: make(chan struct{}), stderr: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stderr = lockedWriter{d.mu, d.stderr}
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), " listening on ") {
				once.Do(func() { close(listening) })
			}
		}
	}()
	ends := endsOf(t)
	go func() {
		cmd.Wait()
		if d.fate.Ended(cmd.ProcessState) { // reported before done closes: before the cleanup's kill returns
			what := d.fate.Unseen(d.name, cmd, args)
			ends.Note(what) // the test's waits end on it (eventually)
			t.Errorf("%s\n--- its stderr:\n%s", what, d.log())
		}
		close(d.done)
	}()
	t.Cleanup(func() { d.kill() })
	select {
	case <-listening:
	case <-d.done:
		t.Fatalf("%s exited before listening:\n%s", d.name, d.log())
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not start listening:\n%s", d.name, d.log())
	}
	return d
}

func (d *lanDaemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// stop sends SIGTERM and expects a graceful exit (code 0).
func (d *lanDaemon) stop(t *testing.T) {
	t.Helper()
	d.fate.Sent(syscall.SIGTERM, true)
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(waitTimeout):
		d.kill()
		t.Fatalf("%s did not stop after SIGTERM:\n%s", d.name, d.log())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited %d after SIGTERM:\n%s", d.name, code, d.log())
	}
}

// kill ends the daemon with SIGKILL, as a crash would.
func (d *lanDaemon) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	d.fate.Sent(syscall.SIGKILL, true)
	d.cmd.Process.Kill()
	<-d.done
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lanUser runs client verbs in a LAN host with no registry address, so
// every verb finds the registry over mDNS.
type lanUser struct {
	t    *testing.T
	host *netlab.Host
	home string
}

type lanResult struct {
	stdout, stderr string
	code           int
}

func (u *lanUser) run(args ...string) lanResult {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := u.host.Command(ctx, huddleBin, args...)
	cmd.Env = append(childEnv(u.t.TempDir()), "HUDDLE_HOME="+u.home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := testbin.Run(cmd)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("huddle %v: %v", args, err)
	}
	return lanResult{stdout.String(), stderr.String(), code}
}

func (u *lanUser) ok(args ...string) string {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("huddle %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// listed returns the groups `huddle groups --json` prints now.
func (u *lanUser) listed() ([]groupJSON, string) {
	r := u.run("groups", "--json")
	if r.code != 0 {
		return nil, r.stderr
	}
	var gs []groupJSON
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if line == "" {
			continue
		}
		var g groupJSON
		if err := json.Unmarshal([]byte(line), &g); err != nil {
			u.t.Fatalf("groups --json line %q: %v", line, err)
		}
		gs = append(gs, g)
	}
	return gs, r.stderr
}

// waitGroups polls until every name is listed.
func (u *lanUser) waitGroups(names ...string) []groupJSON {
	u.t.Helper()
	var last string
	var gs []groupJSON
	ok := eventually(u.t, waitTimeout, func() bool {
		gs, last = u.listed()
		have := map[string]bool{}
		for _, g := range gs {
			have[g.Name] = true
		}
		for _, n := range names {
			if !have[n] {
				return false
			}
		}
		return true
	})
	if !ok {
		u.t.Fatalf("groups %v never all listed; last listing %+v, stderr %s", names, gs, last)
	}
	return gs
}

// waitGroupsExactly polls until the listing is exactly names.
func (u *lanUser) waitGroupsExactly(names ...string) {
	u.t.Helper()
	var gs []groupJSON
	ok := eventually(u.t, waitTimeout, func() bool {
		gs, _ = u.listed()
		var got []string
		for _, g := range gs {
			got = append(got, g.Name)
		}
		sort.Strings(got)
		return slices.Equal(got, names)
	})
	if !ok {
		u.t.Fatalf("listing never became exactly %v; last %+v", names, gs)
	}
}

// startSpoofer runs, in host h, a registry that answers QUIC with its own
// key while advertising a different fingerprint over mDNS.
func startSpoofer(t *testing.T, h *netlab.Host) {
	t.Helper()
	startInHost(t, h, "TestLANSpoofer", "HUDDLE_SPOOF_STATE="+t.TempDir())
}

// startInHost runs, in host h, this test binary's helper process test
// with env; the returned func (also run when the test ends) stops it and
// waits for it.
func startInHost(t *testing.T, h *netlab.Host, test string, env ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.TestCommand(ctx, test, env...)
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &out}, lockedWriter{&mu, &out}
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestLANSpoofer is the spoofer's process in TestLAN; it does nothing when
// run as an ordinary test.
func TestLANSpoofer(t *testing.T) {
	if _, ok := netlab.InHost(); !ok || os.Getenv("HUDDLE_SPOOF_STATE") == "" {
		t.Skip("helper process of TestLAN")
	}
	r, err := hregistry.New(hregistry.Config{Listen: ":7373", StateDir: os.Getenv("HUDDLE_SPOOF_STATE")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{
		Instance: "huddle registry on spoof", Port: 7373, Fingerprint: other.Fingerprint().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	go r.Serve(ctx)
	fmt.Println("spoofing")
	a.Serve(ctx)
	r.Close()
}

// doctorReport is the part of huddle doctor --json the LAN tests read.
type doctorReport struct {
	Interfaces []struct {
		Name      string
		Used      bool
		Joined    bool
		JoinError string `json:"join_error"`
		SendError string `json:"send_error"`
		Queries   int
		Responses int
	}
	MDNS []struct {
		Instance, Addr, Fingerprint, Iface, Pin, Error string
	} `json:"mdns"`
	Registries []struct {
		Addr, From, Fingerprint, Pin, Error string
		Answered                            bool
		Groups                              int
	}
	Groups []struct {
		Name string
		OK   bool
	}
	Advice []string
	OK     bool
}

func doctorJSON(t *testing.T, r lanResult) doctorReport {
	t.Helper()
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return rep
}

// TestLANHuddleUp walks README's first setup across machines: huddle up
// on one host of a LAN, a user on another who names nothing (mDNS finds
// the registry) joins, sends and fetches. huddle up's group daemon
// registers from 127.0.0.1, and the user was listed 127.0.0.1:7374, their
// own machine: join failed 'server unreachable'.
func TestLANHuddleUp(t *testing.T) {
	t.Parallel() // its LAN is namespaces of its own
	lan := netlab.New(t)
	h1 := lan.AddHost("up", "10.79.0.1/24")
	h2 := lan.AddHost("cli", "10.79.0.2/24")
	state := t.TempDir()
	startLANDaemon(t, h1, "up", "--state-dir", filepath.Join(state, "up"))
	bob := &lanUser{t: t, host: h2, home: filepath.Join(state, "bob")}
	for _, g := range bob.waitGroups("lobby") {
		if !slices.Equal(g.Addrs, []string{"10.79.0.1:7374"}) {
			t.Errorf("lobby listed to another host of the LAN at %v, want 10.79.0.1:7374", g.Addrs)
		}
	}
	bob.ok("join", "lobby", "--as", "bob")
	bob.ok("send", "lobby", "hello from across the LAN")
	if out := bob.ok("fetch", "lobby"); !strings.Contains(out, "bob: hello from across the LAN") {
		t.Errorf("fetch over the LAN:\n%s", out)
	}
	// On huddle up's own host the group is reached too, whichever address
	// the registry was found at.
	alice := &lanUser{t: t, host: h1, home: filepath.Join(state, "alice")}
	alice.waitGroups("lobby")
	alice.ok("join", "lobby", "--as", "alice")
	if out := alice.ok("fetch", "lobby"); !strings.Contains(out, "bob: hello from across the LAN") {
		t.Errorf("fetch on huddle up's host:\n%s", out)
	}
}

// Package netlab builds small LANs out of Linux network namespaces so tests
// can use real multicast (mDNS) and real sockets without touching the
// machine's own interfaces.
//
// A LAN is a "switch" namespace holding a bridge, br0. Every host is its own
// namespace joined to a bridge by a veth pair: the switch end (swpN) sits in
// the switch namespace, the host end (eth0, eth1, ...) in the host's. Nothing
// is created in the namespace the test runs in, so all traffic, multicast
// included, stays inside namespaces the test made, and deleting those
// namespaces (done by t.Cleanup) removes every link with them.
//
// Each host gets lo up with multicast on, and a route for 224.0.0.0/4 through
// its first interface, so programs that join multicast groups without naming
// an interface work.
//
// Programs run in a host with Host.Command (any program) or Host.TestCommand
// (this test binary again, running one test function as a helper process).
// For a unit test that only needs multicast on loopback, RunInLoopbackNS
// re-runs the test in a fresh namespace holding only lo.
//
// A test in another package uses it like this (the helper is a test
// function of the same binary that skips itself unless InHost says it runs
// as a helper):
//
//	func TestTwoHosts(t *testing.T) {
//		lan := netlab.New(t) // skips without root; fails under CI=true
//		srv := lan.AddHost("srv", "10.77.0.1/24")
//		cli := lan.AddHost("cli", "10.77.0.2/24")
//		daemon := srv.TestCommand(ctx, "TestHelperProcess", "ROLE=registry")
//		// start daemon, then run the client side in cli the same way,
//		// or any program with cli.Command(ctx, "huddle", "groups").
//	}
//
//	func TestHelperProcess(t *testing.T) {
//		if _, ok := netlab.InHost(); !ok {
//			t.Skip("helper process")
//		}
//		switch os.Getenv("ROLE") { ... }
//	}
//
// Every namespace's name says which process made it (see New), and New
// first removes the namespaces of processes that are gone: a test binary
// killed mid-run (by hand, or by its own -timeout panic) runs no cleanup,
// and its namespaces stayed behind. A namespace whose maker still runs, or
// that still holds processes, is left alone. Programs a host runs
// (Command, TestCommand, started with testbin.Start) are killed if the
// test process dies, so none is left running in a namespace nobody will
// delete.
//
// A link's latency, jitter and reordering come from a Delayer
// (Host.Delayer, LAN.DelayerHere): the kernels the lab runs on have no
// sch_netem, so an iptables NFQUEUE rule in a host's namespace hands the
// packets it receives to this process, which lets each go once its delay
// (a base plus a random share of the jitter) has passed. It needs
// iptables(8) too (RequireDelay).
//
// Everything here needs root and the ip(8) and unshare(1) programs; Require
// skips a test without them, or fails it when the environment has CI=true,
// so CI cannot silently pass by skipping.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// HostEnv is the environment variable TestCommand sets in a helper process
// to the name of the host it runs in. Helper tests use InHost to read it.
const HostEnv = "HUDDLE_NETLAB_HOST"

// Require skips t unless the process is root and ip(8) and unshare(1) are on
// PATH. When the environment variable CI is "true" it fails t instead, so a
// CI run can never pass by skipping the network tests.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces need CAP_SYS_ADMIN)")
	}
	for _, prog := range []string{"ip", "unshare"} {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, prog+" on PATH")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "netlab: test needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}

// InHost reports the host name a helper process started by
// Host.TestCommand runs in, and whether this process is such a helper.
func InHost() (string, bool) {
	h := os.Getenv(HostEnv)
	return h, h != ""
}

// LAN is a set of network namespaces joined by bridges. Create one with New;
// its methods fail the test (t.Fatal) on error, so callers need not check.
// A LAN is safe for use by one goroutine at a time.
type LAN struct {
	t      testing.TB
	prefix string // unique per LAN: every namespace name starts with it
	sw     string // the switch namespace

	mu     sync.Mutex
	nport  int // switch ports made so far, for unique swpN names
	hosts  map[string]*Host
	br0    *Segment
	nbr    int
	nsMade []string
	here   string // the interface AttachHere made, if it did
}

// Segment is one bridge in the switch namespace: hosts attached to it share
// a link (a broadcast and multicast domain).
type Segment struct {
	lan    *LAN
	bridge string
}

// Bridge returns the bridge's interface name inside the switch namespace.
func (s *Segment) Bridge() string { return s.bridge }

// Host is one namespace attached to one or more segments.
type Host struct {
	lan    *LAN
	name   string
	ns     string
	ifaces []string
	addrs  []string
}

// New creates an empty LAN: a switch namespace with one bridge, br0, whose
// names are unique to this call. t.Cleanup deletes every namespace the LAN
// makes (and with them their links). New calls Require first, then removes
// the namespaces left by processes that are gone (removeStale).
//
// A LAN's namespaces are named PREFIX-NAME, where PREFIX is "hl", this
// process's ID, "t", its start time (in clock ticks since boot, as
// /proc/PID/stat gives it: a process ID used again by another process is
// not taken for the one that made the namespace), "r" and random hex.
func New(t testing.TB) *LAN {
	t.Helper()
	Require(t)
	removeStale(t)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("netlab: random prefix: %v", err)
	}
	pid := os.Getpid()
	start, ok := startTime(pid)
	if !ok {
		t.Fatalf("netlab: cannot read this process's start time from /proc/%d/stat", pid)
	}
	l := &LAN{
		t:      t,
		prefix: fmt.Sprintf("hl%dt%dr%s", pid, start, hex.EncodeToString(b[:])),
		hosts:  make(map[string]*Host),
	}
	l.sw = l.prefix + "-switch"
	t.Cleanup(l.cleanup)
	l.addNS(l.sw)
	l.br0 = l.newBridge("br0")
	return l
}

// Prefix returns the prefix shared by every namespace of this LAN, for
// checking that nothing was left behind.
func (l *LAN) Prefix() string { return l.prefix }

// Segment returns the LAN's first bridge, br0, which AddHost attaches to.
func (l *LAN) Segment() *Segment { return l.br0 }

// AddBridge adds another bridge (another LAN segment) to the switch
// namespace. name is for the test's readability; the bridge is named brN.
func (l *LAN) AddBridge(name string) *Segment {
	l.t.Helper()
	l.mu.Lock()
	l.nbr++
	br := fmt.Sprintf("br%d", l.nbr)
	l.mu.Unlock()
	l.t.Logf("netlab: segment %q is bridge %s", name, br)
	return l.newBridge(br)
}

func (l *LAN) newBridge(br string) *Segment {
	l.t.Helper()
	l.ip("-n", l.sw, "link", "add", br, "type", "bridge", "mcast_snooping", "0")
	l.ip("-n", l.sw, "link", "set", br, "up")
	return &Segment{lan: l, bridge: br}
}

// AddHost creates a host namespace joined to br0 by a veth pair, with
// interface eth0 holding addrs (CIDR notation, such as "10.77.0.1/24"; use a
// private range of the test's own). lo is up with multicast on, and
// 224.0.0.0/4 is routed through eth0. Host names must be unique in the LAN
// and short (they become part of a namespace name).
func (l *LAN) AddHost(name string, addrs ...string) *Host {
	l.t.Helper()
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		l.t.Fatalf("netlab: host %q already exists", name)
	}
	h := &Host{lan: l, name: name, ns: l.prefix + "-" + name}
	l.hosts[name] = h
	l.mu.Unlock()

	l.addNS(h.ns)
	l.ip("-n", h.ns, "link", "set", "lo", "up")
	l.ip("-n", h.ns, "link", "set", "lo", "multicast", "on")
	ifc := h.attach(l.br0, addrs...)
	l.ip("-n", h.ns, "route", "add", "224.0.0.0/4", "dev", ifc)
	return h
}

// Attach gives h another interface (eth1, eth2, ...) on seg, holding addrs.
// It returns the new interface's name.
func (h *Host) Attach(seg *Segment, addrs ...string) string {
	h.lan.t.Helper()
	return h.attach(seg, addrs...)
}

func (h *Host) attach(seg *Segment, addrs ...string) string {
	l := h.lan
	l.t.Helper()
	l.mu.Lock()
	l.nport++
	port := fmt.Sprintf("swp%d", l.nport)
	ifc := fmt.Sprintf("eth%d", len(h.ifaces))
	h.ifaces = append(h.ifaces, ifc)
	h.addrs = append(h.addrs, addrs...)
	l.mu.Unlock()

	l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", ifc, "netns", h.ns)
	l.ip("-n", l.sw, "link", "set", port, "master", seg.bridge)
	l.ip("-n", l.sw, "link", "set", port, "up")
	for _, a := range addrs {
		l.ip("-n", h.ns, "addr", "add", a, "dev", ifc)
	}
	l.ip("-n", h.ns, "link", "set", ifc, "up")
	return ifc
}

// AttachHere joins the network namespace this process runs in to br0 by a
// veth pair (interface name, up, holding addrs), so that the test itself
// can speak to the LAN's hosts, through the Go client API say, with no
// helper process. It refuses (t.Fatal) unless the namespace holds nothing
// but lo, as one RunInLoopbackNS made does: the machine's own namespace
// never gets a link to the LAN. The pair goes with the LAN's switch
// namespace. Call it once per process.
func (l *LAN) AttachHere(name string, addrs ...string) {
	l.t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		l.t.Fatalf("netlab: AttachHere: %v", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			l.t.Fatalf("netlab: AttachHere in a namespace with interface %s: only one holding lo alone (RunInLoopbackNS's) may be joined to a LAN", ifc.Name)
		}
	}
	l.mu.Lock()
	l.nport++
	port := fmt.Sprintf("swp%d", l.nport)
	l.here = name
	l.mu.Unlock()
	l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", name, "netns", fmt.Sprint(os.Getpid()))
	l.ip("-n", l.sw, "link", "set", port, "master", l.br0.bridge)
	l.ip("-n", l.sw, "link", "set", port, "up")
	for _, a := range addrs {
		l.ip("addr", "add", a, "dev", name)
	}
	l.ip("link", "set", name, "up")
}

// Name returns the host's name as given to AddHost.
func (h *Host) Name() string { return h.name }

// Namespace returns the name of the host's network namespace (as listed by
// ip netns list).
func (h *Host) Namespace() string { return h.ns }

// IfaceNames returns the host's LAN interfaces in the order they were made
// (eth0 first); lo is not included.
func (h *Host) IfaceNames() []string {
	h.lan.mu.Lock()
	defer h.lan.mu.Unlock()
	return append([]string(nil), h.ifaces...)
}

// Addr returns the host's first address without its prefix length (such as
// "10.77.0.1"), or "" if it has none.
func (h *Host) Addr() string {
	h.lan.mu.Lock()
	defer h.lan.mu.Unlock()
	if len(h.addrs) == 0 {
		return ""
	}
	a, _, _ := strings.Cut(h.addrs[0], "/")
	return a
}

// Command returns a command that runs the program name inside the host's
// namespace (through ip netns exec). The caller starts it with
// testbin.Start (or runs it with testbin.CombinedOutput), so that it dies
// with the test process rather than outlive it in a namespace the test can
// no longer delete (ip netns exec becomes the program, execve, which keeps
// the parent-death signal Start gives it), and waits for it; ctx kills it.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

// TestCommand returns a command that runs this test binary again inside the
// host's namespace, running only the top-level test function named test,
// with HostEnv set to the host's name and env added to the environment.
// The helper test uses InHost to find out that it is the helper (and
// should skip itself otherwise). Output goes to the caller's choice of
// Stdout/Stderr; ctx kills the process.
func (h *Host) TestCommand(ctx context.Context, test string, env ...string) *exec.Cmd {
	cmd := h.Command(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), HostEnv+"="+h.name), env...)
	return cmd
}

// Run runs the program name in the host's namespace and returns its
// combined output, failing the test if it fails.
func (h *Host) Run(ctx context.Context, name string, args ...string) string {
	h.lan.t.Helper()
	out, err := testbin.CombinedOutput(h.Command(ctx, name, args...))
	if err != nil {
		h.lan.t.Fatalf("netlab: %s: %s %s: %v\n%s", h.name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *LAN) addNS(ns string) {
	l.t.Helper()
	l.ip("netns", "add", ns)
	l.mu.Lock()
	l.nsMade = append(l.nsMade, ns)
	l.mu.Unlock()
}

// cleanup deletes the namespaces, hosts first: deleting a namespace
// destroys the veth ends in it, and with them their peers.
func (l *LAN) cleanup() {
	l.mu.Lock()
	made := l.nsMade
	l.nsMade = nil
	l.mu.Unlock()
	for i := len(made) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", made[i]).CombinedOutput(); err != nil {
			l.t.Errorf("netlab: delete namespace %s: %v: %s", made[i], err, bytes.TrimSpace(out))
		}
	}
}

func (l *LAN) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("netlab: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// madeBy matches the name of a namespace New made, capturing the ID and
// the start time of the process that made it.
var madeBy = regexp.MustCompile(`^hl([0-9]+)t([0-9]+)r[0-9a-f]+-`)

// removeStale deletes the namespaces New made in processes that are gone:
// no process has the ID and start time the name gives. One that still
// holds processes (a program a killed test started, before Command killed
// them with it) is left, and said so in t's log. Failures are logged, not
// fatal: another test process may be removing the same namespaces.
func removeStale(t testing.TB) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Logf("netlab: ip netns list: %v", err)
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		m := madeBy.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err1 := strconv.Atoi(m[1])
		start, err2 := strconv.ParseUint(m[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if now, ok := startTime(pid); ok && now == start {
			continue // its maker runs
		}
		if pids, err := exec.Command("ip", "netns", "pids", name).Output(); err != nil || len(bytes.TrimSpace(pids)) > 0 {
			t.Logf("netlab: namespace %s, left by process %d (gone), still holds processes %q (%v): left alone", name, pid, bytes.Fields(pids), err)
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("netlab: delete namespace %s, left by process %d (gone): %v: %s", name, pid, err, bytes.TrimSpace(out))
			continue
		}
		t.Logf("netlab: deleted namespace %s, left by process %d (gone)", name, pid)
	}
}

// startTime returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat), and false if there is no such
// process.
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces
	// and parentheses itself: the fields after it follow the last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	const field = 22 - 3 // fields[0] is field 3, the state
	if len(fields) <= field {
		return 0, false
	}
	start, err := strconv.ParseUint(fields[field], 10, 64)
	return start, err == nil
}

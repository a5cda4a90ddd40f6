//go:build linux

package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testbin"
)

// waitTimeout bounds every condition the tests wait for: how long a bug
// may hang a run, not a claim about speed.
const waitTimeout = 60 * time.Second

// The LAN's addresses: the test process (where the clients run), the
// registry, and the daemons d1, d2, ... from .11 up.
const (
	subnet   = "10.77.20."
	ctlAddr  = subnet + "100"
	regAddr  = subnet + "1:7373"
	daemonIP = 10 // d1 is .11
)

// huddle returns the huddle binary, built once per test process, or
// HUDDLE_JEPSEN_BINARY when set (to put another build through the faults).
func huddle(t *testing.T) string {
	if b := os.Getenv("HUDDLE_JEPSEN_BINARY"); b != "" {
		return b
	}
	return testbin.Huddle(t)
}

// lab is the LAN a run uses: the registry on host "reg", group daemons on
// hosts of their own, the test process joined as "ctl".
type lab struct {
	t     *testing.T
	lan   *netlab.LAN
	hosts map[string]*netlab.Host
	reg   *node
	// delayers holds each host's packet delayer (nil: ctl's), made on
	// first use.
	delayers map[*netlab.Host]*netlab.Delayer
	// deaths are the lab's processes that ended without the test ending
	// them: the waits fail at once on the first, naming it.
	deaths *testbin.Ends
}

// newLab builds the LAN with the registry running and no daemon yet. It
// must run inside netlab.RunInLoopbackNS. It fails without nft(8) (or
// skips, outside CI).
func newLab(t *testing.T) *lab {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		msg := "jepsen: the fault tests need nft(8) (Debian package nftables)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true, so this is a failure, not a skip)")
		}
		t.Skip(msg)
	}
	l := &lab{t: t, lan: netlab.New(t), hosts: make(map[string]*netlab.Host), deaths: testbin.NewEnds()}
	l.lan.AttachHere("ctl0", ctlAddr+"/24")
	host := l.host("reg", strings.TrimSuffix(regAddr, ":7373"))
	l.reg = &node{t: t, name: "registry", host: host, deaths: l.deaths,
		args: []string{"registry", "--no-mdns", "--listen", regAddr, "--lease", "2s", "--state-dir", t.TempDir()}}
	l.reg.start()
	return l
}

func (l *lab) host(name, ip string) *netlab.Host {
	h := l.lan.AddHost(name, ip+"/24")
	l.hosts[name] = h
	return h
}

// daemonAddr returns the listening address of daemon i (from 1).
func daemonAddr(i int) string { return fmt.Sprintf("%s%d:7374", subnet, daemonIP+i) }

// addNode puts a host for daemon i (from 1) on the LAN and returns its node,
// not started; args are its huddle arguments.
func (l *lab) addNode(i int, args ...string) *node {
	name := fmt.Sprint("d", i)
	h := l.host(name, strings.TrimSuffix(daemonAddr(i), ":7374"))
	return &node{t: l.t, name: name, host: h, args: args, deaths: l.deaths}
}

// node is one huddle process on one host, which the nemesis kills and
// starts again with the same arguments.
type node struct {
	t      *testing.T
	name   string
	host   *netlab.Host
	args   []string
	deaths *testbin.Ends // where its process's unseen end is noted

	mu sync.Mutex
	p  *proc
}

var listening = regexp.MustCompile(`listening on (\S+), fingerprint (\S+)`)

// start runs the node's process and waits until it listens.
func (n *node) start() {
	n.t.Helper()
	p := startProc(n.t, n.host, n.deaths, n.args...)
	n.mu.Lock()
	n.p = p
	n.mu.Unlock()
	p.waitLine(n.t, listening)
}

// kill sends sig to the running process and waits for it to exit.
func (n *node) kill(sig syscall.Signal) {
	n.mu.Lock()
	p := n.p
	n.mu.Unlock()
	if p != nil {
		p.kill(sig)
	}
}

// exitCode returns the exit code of the node's last process, which must
// have exited (-1 if a signal ended it).
func (n *node) exitCode() int {
	n.mu.Lock()
	p := n.p
	n.mu.Unlock()
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// pause stops the running process (SIGSTOP) for d, then lets it go on
// (SIGCONT): a daemon frozen by a long GC pause, a swap storm or a VM
// migration, whose sockets stay open.
func (n *node) pause(d time.Duration) {
	n.mu.Lock()
	p := n.p
	n.mu.Unlock()
	p.fate.Sent(syscall.SIGSTOP, false)
	p.cmd.Process.Signal(syscall.SIGSTOP)
	<-time.After(d) // the pause's length
	p.fate.Sent(syscall.SIGCONT, false)
	p.cmd.Process.Signal(syscall.SIGCONT)
}

// proc is a running huddle process in a host's namespace (ip netns exec
// execs huddle in its own place, so the pid is huddle's).
type proc struct {
	cmd  *exec.Cmd
	args []string // huddle's, after the binary
	done chan struct{}
	out  *lines

	// What the test did to the process and how it ended, for the
	// report of a failed test: a member the test counts as running whose
	// process ended on its own (a crash, or a signal the test did not
	// send) leaves a cell that cannot elect, which reads as a liveness
	// defect unless the report says so. An end the test did not cause
	// calls unseen (onUnseenEnd).
	fate   testbin.Fate
	unseen func()
}

// wait waits for the started process to end, notes it, reports an end
// the test did not cause, and closes done (after the report: whoever sees
// the process gone sees it noted).
func (p *proc) wait() {
	p.cmd.Wait()
	if p.fate.Ended(p.cmd.ProcessState) && p.unseen != nil {
		p.unseen()
	}
	close(p.done)
}

// onUnseenEnd arranges, before wait runs, that if the process ends without
// the test having ended it (a crash, an exit of its own, a signal from
// elsewhere: the kernel's OOM killer, a parent-death signal, another
// process), report is called at once with what ended how, and d (if not
// nil) notes it. A member that died unseen was counted up by the test, and
// the run failed a minute later on "no leader" (TestCellFaults, session
// 19): now it fails when it happens, naming the process.
func (p *proc) onUnseenEnd(name string, d *testbin.Ends, report func(format string, args ...any)) {
	p.unseen = func() {
		what := p.fate.Unseen(name, p.cmd, p.args)
		d.Note(what)
		p.out.mu.Lock()
		tail := p.out.all[max(0, len(p.out.all)-20):]
		p.out.mu.Unlock()
		report("%s; its last lines:\n%s", what, strings.Join(tail, "\n"))
	}
}

// lines keeps a process's output, a line at a time, and wakes waiters.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	more    chan struct{}
}

func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	close(l.more)
	l.more = make(chan struct{})
	return len(b), nil
}

// startProc starts huddle with args on host h; its end the test did not
// cause fails t at once, and is noted in d (which may be nil).
func startProc(t *testing.T, h *netlab.Host, d *testbin.Ends, args ...string) *proc {
	t.Helper()
	// Started by testbin.Start: the process dies with the test process,
	// however that ends, rather than outlive it in the host's namespace
	// (and not with whichever thread of it forked the process).
	cmd := h.Command(context.Background(), huddle(t), args...)
	env, err := daemonEnv(os.Environ(), args)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(append(cmd.Env, env...), "HOME="+t.TempDir())
	p := &proc{cmd: cmd, args: args, done: make(chan struct{}), out: &lines{more: make(chan struct{})}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	p.onUnseenEnd(h.Name(), d, t.Errorf)
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	go p.wait()
	t.Cleanup(func() {
		if t.Failed() {
			// Before the cleanup's own kill: whether it still ran.
			state := p.fate.String()
			p.kill(syscall.SIGKILL)
			p.out.mu.Lock()
			tail := p.out.all[max(0, len(p.out.all)-40):]
			t.Logf("%s: huddle %s (at the test's end: %s), last lines:\n%s", h.Name(), strings.Join(args, " "), state, strings.Join(tail, "\n"))
			p.out.mu.Unlock()
			return
		}
		p.kill(syscall.SIGKILL)
	})
	return p
}

// daemonEnv returns the environment a daemon started with args gets from
// the test's, environ: testbin.Env's rule (HUDDLE_<FLAG> passed, one for a
// flag the harness gives an error), the harness's own HUDDLE_JEPSEN_* kept
// out. HUDDLE_CELL_HEARTBEAT is refused pointing to
// HUDDLE_JEPSEN_HEARTBEAT, which sets it.
func daemonEnv(environ, args []string) ([]string, error) {
	env, err := testbin.Env(environ, args, "HUDDLE_JEPSEN_")
	var fg *testbin.FlagGivenError
	if errors.As(err, &fg) && fg.Flag == "--cell-heartbeat" {
		return nil, fmt.Errorf("jepsen: %w (HUDDLE_JEPSEN_HEARTBEAT sets it)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("jepsen: %w", err)
	}
	return env, nil
}

// kill ends the process with sig (SIGKILL, SIGTERM) and waits for it to
// exit: an end the test caused.
func (p *proc) kill(sig syscall.Signal) {
	p.fate.Sent(sig, true)
	p.cmd.Process.Signal(sig)
	<-p.done
}

// waitLine waits for an output line matching re.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	m, err := p.awaitLine(re)
	if err != nil {
		t.Fatalf("huddle %s %v", strings.Join(p.args, " "), err)
	}
	return m
}

// errExited and errNoLine are awaitLine's failures.
var (
	errExited = errors.New("exited before printing a line matching")
	errNoLine = errors.New("printed no line matching")
)

// awaitLine waits, at most waitTimeout, for an output line matching re
// and returns re's submatches in it; else an error that wraps errExited
// or errNoLine. A process's last lines and its exit may come at once,
// and select then picks either: after the exit the lines are looked
// through once more (they are all in p.out by then: cmd.Wait returns once
// the output is copied) before the process is said to have exited first.
func (p *proc) awaitLine(re *regexp.Regexp) ([]string, error) {
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	exited := false
	for i := 0; ; {
		p.out.mu.Lock()
		for ; i < len(p.out.all); i++ {
			if m := re.FindStringSubmatch(p.out.all[i]); m != nil {
				p.out.mu.Unlock()
				return m, nil
			}
		}
		more := p.out.more
		p.out.mu.Unlock()
		if exited {
			return nil, fmt.Errorf("%w %v", errExited, re)
		}
		select {
		case <-more:
		case <-p.done:
			exited = true
		case <-deadline.C:
			return nil, fmt.Errorf("%w %v within %v", errNoLine, re, waitTimeout)
		}
	}
}

// firewall is the nftables state of one host: the addresses it cannot
// reach (a partition), those it cannot hear but can still send to (one
// direction of a partition), the share of packets it drops on input
// (loss), and the share of those it sends to the LAN that it sends twice
// (duplication). Apply replaces the host's whole tables, so faults compose
// and heal exactly.
type firewall struct {
	blocked []string
	// deaf are addresses whose packets the host drops on input only: it
	// still sends to them (a one-way partition).
	deaf    []string
	lossPct int
	// dupPct is the share of the packets the host sends to the LAN that
	// go twice: nft's dup sends a copy of each to the same address (dup
	// has no inet form: it lives in an ip table of its own).
	dupPct int
}

// setFirewall installs fw in the host's namespace (an empty one removes
// the table). host nil means the test's own namespace (ctl).
func (l *lab) setFirewall(h *netlab.Host, fw firewall) {
	l.t.Helper()
	var rules strings.Builder
	rules.WriteString("table inet jepsen\ndelete table inet jepsen\ntable ip jepsendup\ndelete table ip jepsendup\n")
	if fw.dupPct > 0 {
		fmt.Fprintf(&rules, "table ip jepsendup {\n chain out { type filter hook output priority 0; policy accept;\n"+
			"  ip daddr %s0/24 meta l4proto { udp, tcp } numgen random mod 100 < %d dup to ip daddr\n }\n}\n", subnet, fw.dupPct)
	}
	if len(fw.blocked) > 0 || len(fw.deaf) > 0 || fw.lossPct > 0 {
		rules.WriteString("table inet jepsen {\n chain in { type filter hook input priority 0; policy accept;\n")
		for _, a := range append(slices.Clone(fw.blocked), fw.deaf...) {
			fmt.Fprintf(&rules, "  ip saddr %s drop\n", a)
		}
		if fw.lossPct > 0 {
			fmt.Fprintf(&rules, "  meta l4proto { udp, tcp } numgen random mod 100 < %d drop\n", fw.lossPct)
		}
		rules.WriteString(" }\n chain out { type filter hook output priority 0; policy accept;\n")
		for _, a := range fw.blocked {
			fmt.Fprintf(&rules, "  ip daddr %s drop\n", a)
		}
		rules.WriteString(" }\n}\n")
	}
	cmd := exec.Command("nft", "-f", "-")
	if h != nil {
		cmd = h.Command(l.t.Context(), "nft", "-f", "-")
	}
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := testbin.CombinedOutput(cmd); err != nil {
		l.t.Fatalf("nft on %v: %v: %s\n%s", h, err, out, rules.String())
	}
}

// spendingReserves returns fill (a testdisk fill of a disk that holds the
// group logs in logs) made to take the logs' reserves too. Each log keeps
// room of its own on its disk (store/reserve.go, the file reserve in its
// directory: 1 MiB) that it writes into when the disk refuses a record,
// and refuses records only once it is spent: at the workload's rate on a
// loaded machine that took over a minute (the leader of a disk-logs round
// in a fresh-clone CI, session 17), where a full disk fault is one the
// member's writes fail on. So once the disk is full each reserve is
// removed and its room filled too: the log finds it gone at its next
// refused record, and refuses it. (It makes its reserve again once the
// disk has room to spare, after free.)
//
// A log looks at its reserve once a second, and makes it whole again
// where the disk has room to spare: free space of twice what it lacks.
// The reserves were all removed before the room they left was filled, so
// a log could find 2 MiB free (two reserves' room) in between and take
// its reserve back, whole: the fault then left it a reserve to write into
// (session 18). They are now removed one at a time, the disk filled after
// each: no more than one reserve's room is ever free, too little for a
// whole one; and a log whose reserve was cut short (spent in part) may
// top it up from that room meanwhile, so the reserves are looked for
// again after each fill, until one fill finds none left.
func spendingReserves(t *testing.T, fill func() (free func()), logs string) func() (free func()) {
	return func() func() {
		t.Helper()
		frees := []func(){fill()}
		freeAll := func() {
			for i := len(frees) - 1; i >= 0; i-- {
				frees[i]()
			}
		}
		for range 100 {
			reserves, err := filepath.Glob(filepath.Join(logs, "*", "reserve"))
			if err != nil {
				t.Fatal(err)
			}
			removed := false
			for _, r := range reserves {
				if st, err := os.Stat(r); err != nil || st.Size() == 0 {
					continue // gone, or empty: no room to write into
				}
				if err := os.Remove(r); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				frees = append(frees, fill())
				removed = true
			}
			if !removed {
				return freeAll
			}
		}
		freeAll()
		t.Fatalf("the group logs under %s kept making reserves as their room was filled", logs)
		return nil
	}
}

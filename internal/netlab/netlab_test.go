package netlab_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testbin"
	"github.com/huddle-chat/huddle/internal/testlog"
)

// TestMain checks for leaked goroutines (testbin.Main ends the one
// testbin.Start forks from).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testbin.Main{M: m})
}

// TestHelperProcess is not a test: it is the program the other tests run
// inside host namespaces (Host.TestCommand), chosen by ROLE.
func TestHelperProcess(t *testing.T) {
	host, ok := netlab.InHost()
	if !ok {
		t.Skip("helper process for the netlab tests")
	}
	var err error
	switch role := os.Getenv("ROLE"); role {
	case "echo":
		err = helperEcho(os.Getenv("LISTEN"))
	case "udpping":
		err = helperPing(os.Getenv("TARGET"))
	case "registry":
		err = helperRegistry(os.Getenv("FP"))
	case "find":
		err = helperFind(os.Getenv("RUNS"))
	case "diagnose":
		err = helperDiagnose()
	default:
		err = fmt.Errorf("unknown ROLE %q", role)
	}
	if err != nil {
		t.Fatalf("helper on %s: %v", host, err)
	}
}

// helperEcho echoes UDP datagrams until stdin closes.
func helperEcho(listen string) error {
	pc, err := net.ListenPacket("udp4", listen)
	if err != nil {
		return err
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		pc.Close()
	}()
	fmt.Println("READY")
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return nil
		}
		pc.WriteTo(buf[:n], from)
	}
}

// helperPing sends one datagram to target and waits for its echo.
func helperPing(target string) error {
	c, err := net.Dial("udp4", target)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ping" {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}

const registryPort = 7373

// helperRegistry stands in for a registry: a UDP socket on every address
// answering with fp, advertised on every interface, until stdin closes.
func helperRegistry(fp string) error {
	pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", registryPort))
	if err != nil {
		return err
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fp), from)
		}
	}()
	a, err := discovery.NewAdvertiser(discovery.AdvertiserConfig{
		Port: registryPort, Fingerprint: fp,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Println("READY")
	return a.Serve(ctx)
}

// helperFind runs Find and prints one RESULT line per run.
func helperFind(runs string) error {
	n := 1
	fmt.Sscan(runs, &n)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		r, addr, err := discovery.Find(ctx, discovery.BrowseConfig{Verify: verifyFP, Logger: log})
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			return err
		}
		fmt.Printf("RESULT %s %s %s %d\n", r.Iface, addr, r.Fingerprint, elapsed.Microseconds())
	}
	return nil
}

// helperDiagnose prints one ANSWER line per address of every answer seen.
func helperDiagnose() error {
	_, answers, err := discovery.Diagnose(context.Background(), discovery.BrowseConfig{Verify: verifyFP}, 1500*time.Millisecond)
	if err != nil {
		return err
	}
	for _, a := range answers {
		for _, addr := range a.Registry.Addrs {
			fmt.Printf("ANSWER %s %s %v\n", a.Registry.Iface, addr, a.Err)
		}
	}
	return nil
}

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

// startDaemon starts a long-running helper in h and waits for its READY
// line; it is stopped (stdin closed, then waited for) when the test ends,
// and its stderr is logged then.
func startDaemon(t *testing.T, h *netlab.Host, env ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.TestCommand(ctx, "TestHelperProcess", env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testlog.Buffer
	cmd.Stderr = &stderr
	if err := testbin.Start(cmd); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var out testlog.Buffer
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
			}
			fmt.Fprintln(&out, sc.Text())
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s helper: %v", h.Name(), err)
			}
		case <-time.After(5 * time.Second):
			cancel()
			<-done
			t.Errorf("%s helper did not stop", h.Name())
		}
		cancel()
		t.Logf("%s helper output:\n%s%s", h.Name(), out.String(), stderr.String())
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s helper not ready: %s", h.Name(), stderr.String())
	}
}

// runHelper runs a helper to completion and returns its stdout.
func runHelper(t *testing.T, h *netlab.Host, env ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.TestCommand(ctx, "TestHelperProcess", env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := testbin.Run(cmd); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w\n%s%s", h.Name(), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			got = append(got, name)
		}
	}
	return got
}

func TestLANEchoAndCleanup(t *testing.T) {
	netlab.Require(t)
	var prefix string
	t.Run("lan", func(t *testing.T) {
		lan := netlab.New(t)
		prefix = lan.Prefix()
		h1 := lan.AddHost("h1", "10.77.0.1/24")
		h2 := lan.AddHost("h2", "10.77.0.2/24")
		h3 := lan.AddHost("h3", "10.77.0.3/24")
		b := lan.AddBridge("lan-b")
		h1.Attach(b, "10.78.0.1/24")
		h3.Attach(b, "10.78.0.3/24")

		if got, want := fmt.Sprint(h1.IfaceNames()), "[eth0 eth1]"; got != want {
			t.Errorf("h1 interfaces = %s, want %s", got, want)
		}
		if got := h2.Addr(); got != "10.77.0.2" {
			t.Errorf("h2.Addr() = %q", got)
		}
		if got := len(namespaces(t, prefix)); got != 4 {
			t.Errorf("%d namespaces with prefix %s, want 4 (switch and 3 hosts)", got, prefix)
		}

		startDaemon(t, h1, "ROLE=echo", "LISTEN=:9000")
		for _, tc := range []struct {
			from   *netlab.Host
			target string
			ok     bool
		}{
			{h2, "10.77.0.1:9000", true},
			{h3, "10.77.0.1:9000", true},
			{h3, "10.78.0.1:9000", true},
			{h2, "10.78.0.1:9000", false}, // h2 is not on lan-b and has no route there
		} {
			_, err := runHelper(t, tc.from, "ROLE=udpping", "TARGET="+tc.target)
			if (err == nil) != tc.ok {
				t.Errorf("%s -> %s: err = %v, want ok=%v", tc.from.Name(), tc.target, err, tc.ok)
			}
		}
	})
	if left := namespaces(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestDiscoveryAcrossLAN advertises from h1, which sits on two LANs, and
// finds the registry from hosts on either LAN and from a host whose second
// interface leads to a LAN with no registry: each must get the address of
// h1 on its own LAN.
func TestDiscoveryAcrossLAN(t *testing.T) {
	lan := netlab.New(t)
	h1 := lan.AddHost("h1", "10.77.0.1/24")
	h2 := lan.AddHost("h2", "10.77.0.2/24")
	h3 := lan.AddHost("h3", "10.77.0.3/24")
	b := lan.AddBridge("lan-b")
	h1.Attach(b, "10.78.0.1/24")
	h4 := lan.AddHost("h4")
	h4.Attach(b, "10.78.0.4/24")
	h4.Run(context.Background(), "ip", "link", "set", "eth0", "down") // h4 is on lan-b only
	h4.Run(context.Background(), "ip", "route", "add", "224.0.0.0/4", "dev", "eth1")
	empty := lan.AddBridge("empty")
	h3.Attach(empty, "10.79.0.3/24")

	startDaemon(t, h1, "ROLE=registry", "FP=fp-h1")

	for _, tc := range []struct {
		host *netlab.Host
		want string
	}{
		{h2, "10.77.0.1:7373"},
		{h3, "10.77.0.1:7373"},
		{h4, "10.78.0.1:7373"},
	} {
		t.Run(tc.host.Name(), func(t *testing.T) {
			out, err := runHelper(t, tc.host, "ROLE=find", "RUNS=5")
			if err != nil {
				t.Fatal(err)
			}
			var lat []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var iface, addr, fp string
				var us int64
				if _, err := fmt.Sscanf(line, "RESULT %s %s %s %d", &iface, &addr, &fp, &us); err != nil {
					continue
				}
				if addr != tc.want || fp != "fp-h1" {
					t.Errorf("found %s %s on %s, want %s fp-h1", addr, fp, iface, tc.want)
				}
				lat = append(lat, (time.Duration(us) * time.Microsecond).Round(100*time.Microsecond).String())
			}
			if len(lat) != 5 {
				t.Fatalf("want 5 results, got:\n%s", out)
			}
			t.Logf("Find latency from %s (5 runs, first verified answer): %s", tc.host.Name(), strings.Join(lat, " "))
		})
	}

	// Every answer h2 hears, not just the first that verifies, must carry
	// only h1's address on h2's LAN.
	out, err := runHelper(t, h2, "ROLE=diagnose")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "ANSWER ") {
			continue
		}
		n++
		if f := strings.Fields(line); len(f) < 3 || f[2] != "10.77.0.1:7373" {
			t.Errorf("h2 heard an answer with an address not on its LAN: %s", line)
		}
	}
	if n == 0 {
		t.Errorf("Diagnose on h2 saw no answer:\n%s", out)
	}
}

// TestAttachHere joins the test's own (throwaway) namespace to a LAN and
// receives a datagram a host of the LAN sends to it.
func TestAttachHere(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		lan := netlab.New(t)
		lan.AttachHere("ctl0", "10.99.7.100/24")
		h := lan.AddHost("a", "10.99.7.1/24")
		pc, err := net.ListenPacket("udp4", "10.99.7.100:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Run(ctx, "bash", "-c", fmt.Sprintf("echo hello > /dev/udp/10.99.7.100/%d", port))
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("nothing from host a: %v", err)
		}
		if got := string(buf[:n]); got != "hello\n" || from.(*net.UDPAddr).IP.String() != "10.99.7.1" {
			t.Fatalf("got %q from %v, want hello from 10.99.7.1", got, from)
		}
	})
}

// TestNewRemovesStaleNamespaces makes namespaces named as New names them,
// for processes in every state, and checks that New deletes those whose
// maker is gone and leaves the others: a test binary killed mid-run left
// its namespaces behind for good.
func TestNewRemovesStaleNamespaces(t *testing.T) {
	netlab.Require(t)
	// A live maker: a process that waits for its standard input to close.
	live := exec.Command("cat")
	stdin, err := live.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); live.Wait() })
	liveStart := startTimeOf(t, live.Process.Pid)
	// A dead one: a process that has exited and been waited for.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}

	var b [3]byte
	rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	name := func(pid int, start uint64, host string) string {
		return fmt.Sprintf("hl%dt%dr%s-%s", pid, start, tag, host)
	}
	var (
		running  = name(live.Process.Pid, liveStart, "running")
		reused   = name(live.Process.Pid, liveStart+1, "reused") // the ID is another process's now
		gone     = name(dead.Process.Pid, 1, "gone")
		occupied = name(dead.Process.Pid, 1, "occupied") // its maker is gone, a program it ran is not
		oldStyle = "hl" + tag + "ab-old"                 // named before names said who made them
	)
	for _, ns := range []string{running, reused, gone, occupied, oldStyle} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	// A program in occupied, which says so once it runs there.
	inside := exec.Command("ip", "netns", "exec", occupied, "sh", "-c", "echo inside; exec cat")
	insideIn, err := inside.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	insideOut, err := inside.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := inside.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { insideIn.Close(); inside.Wait() })
	if line, err := bufio.NewReader(insideOut).ReadString('\n'); line != "inside\n" {
		t.Fatalf("program in namespace %s: %q, %v", occupied, line, err)
	}

	netlab.New(t)
	left := namespaces(t, "hl")
	for _, tc := range []struct {
		ns   string
		kept bool
	}{{running, true}, {reused, false}, {gone, false}, {occupied, true}, {oldStyle, true}} {
		if got := slices.Contains(left, tc.ns); got != tc.kept {
			t.Errorf("namespace %s kept: %v, want %v", tc.ns, got, tc.kept)
		}
	}
}

// startTimeOf is field 22 of /proc/PID/stat: the process's start time.
func startTimeOf(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return start
}

// TestDelayer holds the packets the test's own namespace receives from a
// host of the LAN: an echo's answer comes back no sooner than the delay;
// with jitter, datagrams sent in order arrive in another, every one of
// them; a Delay From another address holds none of the host's; and once
// the Delayer is closed its rules are gone and packets pass.
func TestDelayer(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		lan := netlab.New(t)
		lan.AttachHere("ctl0", "10.99.8.100/24")
		h := lan.AddHost("a", "10.99.8.1/24")
		startDaemon(t, h, "ROLE=echo", "LISTEN=:9000")
		d := lan.DelayerHere()
		c, err := net.Dial("udp4", "10.99.8.1:9000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// echo sends n numbered datagrams and returns the order their
		// echoes came back in.
		echo := func(n int) []int {
			t.Helper()
			for i := range n {
				if _, err := fmt.Fprintf(c, "%d", i); err != nil {
					t.Fatal(err)
				}
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got []int
			buf := make([]byte, 64)
			for len(got) < n {
				k, err := c.Read(buf)
				if err != nil {
					t.Fatalf("%d of %d echoes back: %v", len(got), n, err)
				}
				i, err := strconv.Atoi(string(buf[:k]))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, i)
			}
			return got
		}

		const delay = 200 * time.Millisecond
		d.Set(netlab.Delay{Base: delay})
		start := time.Now()
		echo(1)
		if took := time.Since(start); took < delay {
			t.Errorf("an echo came back in %v under a delay of %v", took, delay)
		}
		if d.Held() != 1 {
			t.Errorf("held %d packets, want 1", d.Held())
		}

		d.Set(netlab.Delay{Base: delay, From: []string{"10.99.8.2"}})
		echo(1)
		if d.Held() != 1 {
			t.Errorf("held %d packets in all, want still 1: the echo came from another address than From", d.Held())
		}

		d.Set(netlab.Delay{Jitter: 100 * time.Millisecond})
		const n = 200
		got := echo(n)
		inversions := 0
		for i := 1; i < len(got); i++ {
			if got[i] < got[i-1] {
				inversions++
			}
		}
		if inversions == 0 {
			t.Errorf("%d datagrams under 100 ms of jitter came back in the order sent", n)
		}
		if slices.Sort(got); !slices.Equal(got, seq(n)) {
			t.Errorf("echoes back: %v, want 0..%d once each", got, n-1)
		}
		t.Logf("%d datagrams under 100 ms of jitter: %d inversions", n, inversions)

		d.Close()
		d.Close()
		out, err := exec.Command("iptables-save").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v: %s", err, out)
		}
		if bytes.Contains(out, []byte("huddle-delay")) {
			t.Errorf("rules left after Close:\n%s", out)
		}
		echo(1)
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// loopbackOrphanEnv marks the copy of this test binary that
// TestLoopbackCopyDiesWithTest kills; its value is a file where the copy's
// own copy, in the loopback namespace, writes its process ID.
const loopbackOrphanEnv = "HUDDLE_NETLAB_LOOPBACK_ORPHAN"

// TestLoopbackCopyDiesWithTest: RunInLoopbackNS runs its body in a copy of
// the test binary; when the test process is killed (go test's -timeout,
// kill -9), the copy must die with it, not run its test on, orphaned, with
// the daemons it started. This test runs a copy (A) that calls
// RunInLoopbackNS, whose body (in A's copy, B) writes B's process ID and
// waits; A then kills itself with SIGKILL, and B must exit.
func TestLoopbackCopyDiesWithTest(t *testing.T) {
	if file := os.Getenv(loopbackOrphanEnv); file != "" {
		if _, inCopy := os.LookupEnv("HUDDLE_NETLAB_LOOPBACK"); !inCopy {
			go func() { // A: once B is running, die as a killed test does
				deadline := time.Now().Add(time.Minute)
				for time.Now().Before(deadline) {
					if b, err := os.ReadFile(file); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
						testbin.Orphaned("pid " + strings.TrimSpace(string(b)))
					}
					<-time.After(10 * time.Millisecond) // polling for B's ID, with a deadline
				}
			}()
		}
		netlab.RunInLoopbackNS(t, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(fmt.Sprintln(os.Getpid())), 0o600); err != nil {
				t.Fatal(err)
			}
			<-time.After(time.Minute) // B: killed with A, or ends on its own after this
		})
		return
	}
	netlab.Require(t)
	said := testbin.RunKilledCopy(t, "TestLoopbackCopyDiesWithTest", loopbackOrphanEnv+"="+filepath.Join(t.TempDir(), "pid"))
	var pid int
	if _, err := fmt.Sscanf(said, "pid %d", &pid); err != nil {
		t.Fatalf("the killed test said %q: %v", said, err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // if the check below failed
	running, err := testbin.AwaitExit(time.Now().Add(20*time.Second), pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) > 0 {
		t.Fatalf("the test binary's copy in the loopback namespace (pid %d) still runs 20s after the test that started it was killed", pid)
	}
}

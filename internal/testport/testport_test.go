package testport

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestCellPortIsFreeOnBoth: a member can bind the address Cell returns on
// UDP and on TCP, below the ephemeral range.
func TestCellPortIsFreeOnBoth(t *testing.T) {
	addr := Cell(t)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := strconv.Atoi(port); p < 20000 || p >= 32000 {
		t.Fatalf("port %d, want one in 20000-31999", p)
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	tcp.Close()
}

// TestCellNeverRepeats: the ports Cell returns in one process differ,
// though each is free again once returned (drawn at random from 12000, a
// few thousand would repeat hundreds of times).
func TestCellNeverRepeats(t *testing.T) {
	seen := make(map[string]bool)
	for range 3000 {
		addr := Cell(t)
		if seen[addr] {
			t.Fatalf("Cell returned %s twice", addr)
		}
		seen[addr] = true
	}
}

// TestPortsGivenBackUnderCount: under go test -count N a port goes back
// when the test that took it ends, and TestCellNeverRepeats (3000 ports a
// run) passes five runs in one process, 15000 ports of the 12000 there
// are. Each port was kept for the process's life, and its fourth run found
// none free ("no port free on both UDP and TCP...").
func TestPortsGivenBackUnderCount(t *testing.T) {
	out, err := exec.Command(os.Args[0], "-test.run=^TestCellNeverRepeats$", "-test.count=5").CombinedOutput()
	if err != nil {
		t.Fatalf("TestCellNeverRepeats, five runs in one process: %v\n%s", err, out)
	}
}

// TestCellReservedAcrossProcesses: a port Cell returned in this process is
// not returned by Cell in another test process while this one runs (go
// test runs packages at once, each drawing from the same ports).
func TestCellReservedAcrossProcesses(t *testing.T) {
	const n = 300 // each way: without the reservation, about 7 in common
	if os.Getenv("TESTPORT_CHILD") != "" {
		for range n {
			os.Stdout.WriteString(Cell(t) + "\n")
		}
		return
	}
	mine := make(map[string]bool)
	for range n {
		mine[Cell(t)] = true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCellReservedAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TESTPORT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the other process: %v\n%s", err, out)
	}
	theirs, both := 0, 0
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		if addr := sc.Text(); strings.HasPrefix(addr, "127.0.0.1:") {
			theirs++
			if mine[addr] {
				both++
			}
		}
	}
	if theirs != n || both != 0 {
		t.Fatalf("the other process was given %d ports, %d of them given to this one too; want %d, none", theirs, both, n)
	}
}

// TestUDPSkipsPortsReservedElsewhere: UDP never binds a port Cell gave
// another test process, though that port is free (its daemon stopped, to
// be started again there). Drawn at random, 3000 UDP sockets would land on
// about 75 of the other process's 300 ports.
func TestUDPSkipsPortsReservedElsewhere(t *testing.T) {
	const n, udps = 300, 3000
	if os.Getenv("TESTPORT_CHILD") != "" {
		for range n {
			os.Stdout.WriteString(Cell(t) + "\n")
		}
		os.Stdout.WriteString("given\n")
		os.Stdin.Read(make([]byte, 1)) // the ports stay reserved until the parent is done
		return
	}
	_, stdin, stdout := startChild(t, "TestUDPSkipsPortsReservedElsewhere")
	defer stdin.Close()
	theirs := make(map[string]bool)
	for sc := bufio.NewScanner(stdout); sc.Scan() && sc.Text() != "given"; {
		if addr := sc.Text(); strings.HasPrefix(addr, "127.0.0.1:") {
			theirs[addr] = true
		}
	}
	if len(theirs) != n {
		t.Fatalf("the other process was given %d ports, want %d", len(theirs), n)
	}
	both := 0
	for range udps {
		udp := UDP(t, net.IPv4(127, 0, 0, 1))
		if theirs[udp.LocalAddr().String()] {
			both++
		}
		udp.Close()
	}
	if both != 0 {
		t.Fatalf("UDP bound %d of the %d ports another test process was given", both, n)
	}
}

// TestCellSkipsPinned: Cell never returns a port a fixture pins. For the
// test, all ports but 1000 of those not given yet are pinned: five draws
// land in those 1000 (drawing from all, most would not).
func TestCellSkipsPinned(t *testing.T) {
	saved := pinned
	t.Cleanup(func() { pinned = saved })
	pins := make(map[int]bool)
	given.Lock()
	free := 0
	for p := 20000; p < 32000; p++ {
		if !given.ports[p] && free < 1000 {
			free++
			continue
		}
		pins[p] = true
	}
	given.Unlock()
	pinned = pins
	for range 5 {
		addr := Cell(t)
		_, port, _ := net.SplitHostPort(addr)
		if p, _ := strconv.Atoi(port); pinned[p] {
			t.Fatalf("Cell returned %s, a pinned port", addr)
		}
	}
}

// TestPinnedAcrossProcesses: a pinned port another test process holds
// through Pinned is not this one's until that process lets go; Pinned
// waits for it then.
func TestPinnedAcrossProcesses(t *testing.T) {
	const port = 27391
	if os.Getenv("TESTPORT_CHILD") != "" {
		Pinned(t, port)
		os.Stdout.WriteString("pinned\n")
		os.Stdin.Read(make([]byte, 1)) // held until the parent says
		return
	}
	cmd, stdin, stdout := startChild(t, "TestPinnedAcrossProcesses")
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "pinned\n" {
		t.Fatalf("the other process: %q, %v", line, err)
	}
	if f, ok := lock(port); ok {
		f.Close()
		t.Fatalf("port %d, held by another process through Pinned, was locked here too", port)
	}
	stdin.Close()
	Pinned(t, port) // returns once the other process has ended
	Pinned(t, port) // and again: this process holds it
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the other process: %v", err)
	}
}

// startChild runs this test binary again for test alone, as the other
// process (TESTPORT_CHILD set), with pipes to its standard input and
// output; it is waited for when t ends.
func startChild(t *testing.T, test string) (*exec.Cmd, io.WriteCloser, io.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TESTPORT_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return cmd, stdin, stdout
}

// Package testport picks ports for tests that start cell members, and
// daemons a test stops and starts again at their address. A member
// listens on UDP (QUIC) and, for raft, on TCP at the same port number, so
// its port must be free on both. The ports are below Linux's ephemeral
// range (32768 up), where outgoing TCP connections take theirs: a UDP port
// the kernel chose could be held on TCP by a connection (or its TIME_WAIT)
// of this or another process, and is any process's next socket bound to
// port 0 once its daemon is killed.
package testport

import (
	"flag"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// UDP returns a UDP socket on ip at a port whose TCP twin is free too,
// and one that neither Cell nor UDP has returned before in this process,
// nor in another test process running on this host (reserve). A test
// that stops a daemon and starts it again at its address (Cell's) leaves
// the port free in between, and UDP drew its ports from the same range
// without asking: cell's transport tests, running beside internal/faults
// under go test -p 3, could bind the port TestGracefulStop's group daemon
// was about to take back.
func UDP(t testing.TB, ip net.IP) *net.UDPConn {
	t.Helper()
	given.Lock()
	defer given.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if given.ports[port] || pinned[port] {
			continue
		}
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
		if err != nil {
			continue
		}
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
		if err != nil {
			udp.Close()
			continue
		}
		ln.Close()
		if !reserve(port) {
			udp.Close()
			continue
		}
		given.ports[port] = true
		if givenBack() {
			t.Cleanup(func() { giveBack(port) })
		}
		return udp
	}
	t.Fatal("no port free on both UDP and TCP that no test process has been given")
	return nil
}

// Cell returns a 127.0.0.1 address for a cell member started as a
// process, at a port free on both UDP and TCP when it returns, and one
// that Cell and UDP have not returned before in this process, nor in
// another test process running on this host (reserve).
func Cell(t testing.TB) string {
	t.Helper()
	udp := UDP(t, net.IPv4(127, 0, 0, 1))
	defer udp.Close()
	return udp.LocalAddr().String()
}

// given holds the ports UDP and Cell have returned. A test that plans a
// cell takes a port for each member before any of them binds it, and a
// port drawn twice, free each time, made the members' list name one
// address twice (groupd's TestCloseNamesNextLeader, "address
// 127.0.0.1:26002 listed twice": about one three-member cell in 4000).
var given = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// givenBack reports whether a port UDP or Cell returned is given back when
// the test that took it ends: only when the tests run more than once (go
// test -count N): each repetition took ports of its own, and the 12000 ran
// out in a few runs (TestCellNeverRepeats takes 3000, and failed in its
// fourth run of five). A port is then free for a later test of this process
// or another, its test's daemons stopped (their cleanups, registered after
// the port's, ran first). A run of -count 1, as CI's, keeps every port for
// the process's life, as before.
var givenBack = sync.OnceValue(func() bool {
	f := flag.Lookup("test.count")
	if f == nil {
		return false
	}
	n, _ := strconv.Atoi(f.Value.String())
	return n > 1
})

// giveBack gives port back, to UDP and Cell in this process and to the
// other test processes (its reservation's lock).
func giveBack(port int) {
	given.Lock()
	defer given.Unlock()
	delete(given.ports, port)
	unreserve(port)
}

// pinned are the ports that fixtures pin, which UDP and Cell never
// return: the compat cell fixtures (testdata/compat/cell-*) ran their
// members at 127.0.0.21-23:27391, and their raft configurations (in raft's
// log and snapshots, as the old huddle wrote them) record those addresses,
// so today's members must listen there.
var pinned = map[int]bool{27391: true}

// pinnedWait bounds Pinned's wait for another test process to let go of
// a pinned port: how long a hung test elsewhere may hold this one up.
const pinnedWait = 5 * time.Minute

// Pinned takes port, one that fixtures pin, for t: no other test process
// on this host holds it (through Pinned) until t ends, and no test is
// given it by UDP or Cell. Tests of this process share it (a cell's
// members at one port on several addresses, a cell started again); another
// process holding it (the same test of another run, outside network
// namespaces of their own) is waited for. A port not pinned fails t.
func Pinned(t testing.TB, port int) {
	t.Helper()
	if !pinned[port] {
		t.Fatalf("testport: port %d is not one a fixture pins (testport.pinned)", port)
	}
	deadline := time.Now().Add(pinnedWait)
	for !pin(port) {
		if time.Now().After(deadline) {
			t.Fatalf("testport: port %d, which a fixture pins, held by another test process for %v", port, pinnedWait)
		}
		<-time.After(100 * time.Millisecond) // polling another process's lock, with a deadline
	}
	t.Cleanup(func() { unpin(port) })
}

// pins are the pinned ports this process holds, and how many tests hold
// each.
var pins = struct {
	sync.Mutex
	held map[int]*held
}{held: make(map[int]*held)}

type held struct {
	f     *os.File // its lock among test processes (nil: none to be had)
	tests int
}

// pin takes port for one more test of this process, and reports false if
// another process holds it.
func pin(port int) bool {
	pins.Lock()
	defer pins.Unlock()
	if h := pins.held[port]; h != nil {
		h.tests++
		return true
	}
	f, ok := lock(port)
	if ok {
		pins.held[port] = &held{f: f, tests: 1}
	}
	return ok
}

// unpin lets go of port for one test; with the last, its lock.
func unpin(port int) {
	pins.Lock()
	defer pins.Unlock()
	h := pins.held[port]
	if h.tests--; h.tests == 0 {
		if h.f != nil {
			h.f.Close()
		}
		delete(pins.held, port)
	}
}

package testport

import (
	"net"
	"strconv"
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

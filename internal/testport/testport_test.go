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

//go:build linux

package cell

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestConnRTT: the kernel's round trip of a TCP connection that carried
// data is read (a loopback's: above zero, far below a millisecond's
// hundreds); one that received nothing within the window does not count.
func TestConnRTT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, ok := <-accepted
	if !ok {
		t.Fatal("no connection accepted")
	}
	defer s.Close()
	// A few requests and answers, as raft's RPCs: each side's data is
	// acknowledged, and each side receives data.
	buf := make([]byte, 64)
	for range 10 {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range []net.Conn{c, s} {
		rtt, ok := connRTT(conn, time.Minute)
		if !ok || rtt <= 0 || rtt > 100*time.Millisecond {
			t.Fatalf("the round trip of a loopback connection that carried data: %v, %v", rtt, ok)
		}
		if rtt, ok := connRTT(conn, -1); ok {
			t.Fatalf("a connection that received nothing within the window counted: %v", rtt)
		}
	}
	if _, ok := connRTT(struct{ net.Conn }{c}, time.Minute); ok {
		t.Fatal("a connection that is no socket counted")
	}
}

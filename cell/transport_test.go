package cell

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
)

func newTransport(t testing.TB, id *identity.Identity, peers []Peer, listen bool) (*Transport, string) {
	t.Helper()
	return newTransportOn(t, testport.UDP(t, net.IPv4(127, 0, 0, 1)), id, peers, listen)
}

// newTransportOn is newTransport on the UDP socket udp, which it closes at
// the test's end; listen opens raft's TCP listener and the QUIC listener.
func newTransportOn(t testing.TB, udp *net.UDPConn, id *identity.Identity, peers []Peer, listen bool) (*Transport, string) {
	t.Helper()
	var err error
	qt := &quic.Transport{Conn: udp}
	addr := udp.LocalAddr().String()
	tr, err := NewTransport(TransportConfig{Identity: id, QUIC: qt, Advertise: addr, Peers: peers, Logger: testLogger(t, addr)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var ln *quic.Listener
	if listen {
		if err := tr.Listen(); err != nil {
			t.Fatal(err)
		}
		ln, err = qt.Listen(tr.ServerTLS(), &quic.Config{MaxIdleTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				tr.Handle(c)
			}
		}()
	} else {
		close(done)
	}
	t.Cleanup(func() {
		tr.Close()
		if ln != nil {
			ln.Close()
		}
		<-done
		qt.Close()
		udp.Close()
	})
	return tr, addr
}

func mustIdentity(t testing.TB) *identity.Identity {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTransportCarriesRaft: a raft connection dialed from one member is
// accepted by the other, and carries bytes both ways.
func TestTransportCarriesRaft(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	// b must know a's key; a's address does not matter to b.
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	c, err := a.Dial("127.0.0.1:1", time.Second) // not a member's address
	if !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("dial an unknown address: %v, %v", c, err)
	}
	pingPong(t, a, b, bAddr)
}

// pingPong dials a raft connection from a to b (at bAddr), and checks that
// b accepts it and that it carries bytes both ways.
func pingPong(t *testing.T, a, b *Transport, bAddr string) {
	t.Helper()
	c, err := a.Dial(toAddr(bAddr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	s := accept(t, b)
	defer s.Close()
	buf := make([]byte, 4)
	s.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := readFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	s.Write([]byte("pong"))
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := readFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// accept returns the next raft connection tr accepts.
func accept(t *testing.T, tr *Transport) net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := tr.Accept()
		if err == nil {
			accepted <- s
		}
		close(accepted)
	}()
	var s net.Conn
	select {
	case s = <-accepted:
	case <-time.After(waitTimeout):
		t.Fatal("no connection accepted")
	}
	if s == nil {
		t.Fatal("accept failed")
	}
	return s
}

// TestTransportIPv6: raft's listener and dials work on an IPv6 address.
func TestTransportIPv6(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback: %v", err)
		}
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	probe.Close()
	udp := testport.UDP(t, net.IPv6loopback)
	aID, bID := mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransportOn(t, udp, bID, []Peer{{Addr: "[::1]:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	pingPong(t, a, b, bAddr)
}

// TestTransportPortTaken: a TCP port held by another process makes Listen
// fail, and say which port.
func TestTransportPortTaken(t *testing.T) {
	var udp *net.UDPConn
	var held net.Listener
	for range 20 { // a UDP port whose TCP twin is free to take, first
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ln.Addr().(*net.TCPAddr).Port})
		if err == nil {
			held = ln
			break
		}
		ln.Close()
	}
	if held == nil {
		t.Fatal("no port free on both TCP and UDP")
	}
	defer held.Close()
	defer udp.Close()
	port := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
	tr, err := NewTransport(TransportConfig{Identity: mustIdentity(t), QUIC: &quic.Transport{Conn: udp}, Advertise: udp.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	err = tr.Listen()
	if err == nil || !strings.Contains(err.Error(), "TCP port "+port) {
		t.Fatalf("Listen on a TCP port taken: %v, want an error naming port %s", err, port)
	}
}

// TestTransportHandshakeBounds: an accepted connection that says nothing
// is closed once its handshake's time is up, and connections beyond
// maxHandshakes whose handshakes are under way are closed at once.
func TestTransportHandshakeBounds(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	setHandshakeTimeout := func(d time.Duration) {
		b.mu.Lock()
		b.handshakeTimeout = d
		b.mu.Unlock()
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}

	setHandshakeTimeout(10 * time.Millisecond)
	silent, err := net.Dial("tcp", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closed(silent) {
		t.Fatal("a silent connection outlived its handshake's time")
	}

	setHandshakeTimeout(time.Hour)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxHandshakes {
		c, err := net.Dial("tcp", bAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	extra, err := net.Dial("tcp", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closed(extra) {
		t.Fatalf("a connection beyond %d unauthenticated ones was kept", maxHandshakes)
	}
}

// TestTransportRefusesStrangers: a key that is not a member's is refused
// by the listener, and nothing it sends reaches raft; a connection that
// does not choose RaftALPN is refused too; a member's address answered by
// another key is refused by the dialer.
func TestTransportRefusesStrangers(t *testing.T) {
	aID, bID, strangerID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	refused := func(c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(waitTimeout))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("b kept a refused connection open: read %v", err)
		}
		c.Close()
	}

	// A stranger dials b: b refuses its certificate. (Under TLS 1.3 the
	// client finishes its handshake first; the refusal then closes the
	// connection, and the stream fails.)
	stranger, _ := newTransport(t, strangerID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	if c, err := stranger.Dial(toAddr(bAddr), 5*time.Second); err == nil {
		// A raft frame, which must not reach b's raft.
		frame, _ := appendRequest(nil, &raft.TimeoutNowRequest{})
		c.Write(frame)
		refused(c)
	}
	// A member's key, but another protocol (none, and the cell's QUIC
	// ALPN): refused.
	for _, protos := range [][]string{nil, {ALPN}} {
		tc := aID.ClientTLS(bID.Fingerprint(), nil)
		tc.NextProtos = protos
		if c, err := tls.Dial("tcp", bAddr, tc); err == nil {
			refused(c)
		}
	}
	// The first connection b hands to raft is a member's, dialed last.
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	pingPong(t, a, b, bAddr)

	// a believes another key is at b's address: its dial fails too.
	a, _ = newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: strangerID.Fingerprint()}}, false)
	_, err := a.Dial(toAddr(bAddr), 5*time.Second)
	var mismatch *identity.MismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("dial a member's address answered by another key: %v, want a MismatchError", err)
	}
}

func readFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func toAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }

// TestTransportRefusesRaftStreams: raft's QUIC streams of earlier versions
// ('r', 'R') are refused: raft rides TCP now.
func TestTransportRefusesRaftStreams(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	_, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	for _, kind := range []byte{'r', 'R'} {
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		str, _, err := a.open(ctx, bAddr, []byte{kind})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		str.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err = str.Read(make([]byte, 1))
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != streamBadKind {
			t.Fatalf("a stream of kind %q: read %v, want the stream refused", kind, err)
		}
		str.CancelWrite(streamClosed)
	}
}

// TestTransportDropsRemovedMembers: once a member is removed from the
// cell, the raft connections it dialed are closed, and those dialed to it
// are closed after leaveGrace (as the QUIC connection to it is).
func TestTransportDropsRemovedMembers(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	ended := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}

	c, err := a.Dial(toAddr(bAddr), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := accept(t, b)
	defer s.Close()
	b.SetPeers(nil) // a removed, in b's view
	if !ended(c) {
		t.Fatal("a removed member's raft connection was kept open")
	}

	b.SetPeers([]Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}})
	c, err = a.Dial(toAddr(bAddr), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s = accept(t, b)
	defer s.Close()
	a.SetPeers(nil) // b removed, in a's view
	if !ended(s) {
		t.Fatal("the raft connection to a removed member was kept open")
	}
}

// writeCounter counts the writes that reach the connection under it.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

// TestRaftConnGathersRecords: a frame longer than one TLS record (an
// AppendEntries of a loaded cell) reaches the TCP connection in one write,
// not one per record; a short one in one write too; a frame longer than
// gatherPiece in one write per piece; and the bytes arrive whole and in
// order.
func TestRaftConnGathersRecords(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	c, err := a.Dial(toAddr(bAddr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := accept(t, b)
	defer s.Close()
	tc := c.(*tcpConn)
	counter := &writeCounter{Conn: tc.g.Conn}
	tc.g.Conn = counter // the handshake is over: no write in flight

	for _, tt := range []struct {
		n      int
		writes int32
	}{
		{100, 1},
		{3*maxRecordPlaintext + 1000, 1},
		{2*gatherPiece + 5000, 3},
	} {
		frame := make([]byte, tt.n)
		for i := range frame {
			frame[i] = byte(i * 7)
		}
		counter.writes.Store(0)
		read := make(chan error, 1)
		got := make([]byte, tt.n)
		go func() { // the peer reads as the frame is written: a piece may not fit TCP's buffers
			s.SetDeadline(time.Now().Add(waitTimeout))
			_, err := readFull(s, got)
			read <- err
		}()
		c.SetDeadline(time.Now().Add(waitTimeout))
		if k, err := c.Write(frame); err != nil || k != tt.n {
			t.Fatalf("write %d bytes: %d, %v", tt.n, k, err)
		}
		if err := <-read; err != nil || !bytes.Equal(got, frame) {
			t.Fatalf("read a frame of %d bytes: %v (equal %v)", tt.n, err, bytes.Equal(got, frame))
		}
		if got := counter.writes.Load(); got != tt.writes {
			t.Errorf("a frame of %d bytes took %d writes to TCP, want %d", tt.n, got, tt.writes)
		}
	}
}

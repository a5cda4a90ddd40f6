package cell

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
)

// transportPair is two transports on 127.0.0.1, b listening with the cell
// ALPN alone.
type transportPair struct {
	a, b     *Transport
	aID, bID *identity.Identity
	bAddr    string
}

func newTransport(t testing.TB, id *identity.Identity, peers []Peer, listen bool) (*Transport, string) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: udp}
	addr := udp.LocalAddr().String()
	tr, err := NewTransport(TransportConfig{Identity: id, QUIC: qt, Advertise: addr, Peers: peers, Logger: testLogger(t, addr)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var ln *quic.Listener
	if listen {
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

// TestTransportCarriesStreams: a raft connection dialed from one member is
// accepted by the other, and carries bytes both ways.
func TestTransportCarriesStreams(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	// b must know a's key; a's address does not matter to b.
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	c, err := a.Dial("127.0.0.1:1", time.Second) // not a member's address
	if !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("dial an unknown address: %v, %v", c, err)
	}
	c, err = a.Dial(toAddr(bAddr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := b.Accept()
		if err == nil {
			accepted <- s
		}
		close(accepted)
	}()
	var s net.Conn
	select {
	case s = <-accepted:
	case <-time.After(waitTimeout):
		t.Fatal("no stream accepted")
	}
	if s == nil {
		t.Fatal("accept failed")
	}
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

// TestTransportRefusesStrangers: a key that is not a member's is refused
// by the listener, and a member's address answered by another key is
// refused by the dialer.
func TestTransportRefusesStrangers(t *testing.T) {
	aID, bID, strangerID := mustIdentity(t), mustIdentity(t), mustIdentity(t)
	_, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)

	// A stranger dials b: b refuses its certificate. (Under TLS 1.3 the
	// client finishes its handshake first; the refusal then closes the
	// connection, and the stream fails.)
	stranger, _ := newTransport(t, strangerID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
	if c, err := stranger.Dial(toAddr(bAddr), 5*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(waitTimeout))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("b kept a stranger's connection open: read %v", err)
		}
		c.Close()
	}
	// a believes another key is at b's address: its dial fails too.
	a, _ := newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: strangerID.Fingerprint()}}, false)
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

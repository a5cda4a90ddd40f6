package cell

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/internal/testport"
)

// loopbackOnly is a net.PacketConn that sends only to loopback and
// unspecified addresses (the machine itself, on Linux), and keeps (unsent)
// every packet written to any other: a test whose daemon would dial a
// multicast address sees it try, and nothing leaves the machine. It is no
// *net.UDPConn, so quic-go writes through WriteTo.
type loopbackOnly struct {
	net.PacketConn
	mu        sync.Mutex
	elsewhere []string // where packets not sent were addressed
}

func (c *loopbackOnly) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); !ok || !ua.IP.IsLoopback() && !ua.IP.IsUnspecified() {
		c.mu.Lock()
		c.elsewhere = append(c.elsewhere, addr.String())
		c.mu.Unlock()
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// SetReadBuffer and SetWriteBuffer are the socket's: quic-go sizes them
// (and says so on stderr when it cannot).
func (c *loopbackOnly) SetReadBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (c *loopbackOnly) SetWriteBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

func (c *loopbackOnly) dropped() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.elsewhere...)
}

// TestTransportRefusesGroupAddrs: a cell's configuration may name a member
// at a multicast or broadcast address (raft took any until session 20, the
// cell any host:port until session 22). The transport dials it neither for
// raft (TCP) nor for its QUIC streams (a catch-up, a probe, a question):
// each dial fails at once with ErrGroupAddr, no packet is addressed to
// it, and the refusal is logged once per address, not per dial. A member
// at an unspecified address is dialed as before: a one-machine cell
// configured at 0.0.0.0 reaches its members so.
func TestTransportRefusesGroupAddrs(t *testing.T) {
	groups := []string{"224.0.0.251:5353", "239.255.0.1:7001", "255.255.255.255:7001", "[ff02::fb]:5353", "[::ffff:224.0.0.251]:5353"}
	aID, bID := mustIdentity(t), mustIdentity(t)
	b, bAddr := newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
	_, port, _ := net.SplitHostPort(bAddr)
	zero := "0.0.0.0:" + port
	peers := []Peer{{Addr: zero, Fingerprint: bID.Fingerprint()}}
	for _, g := range groups {
		peers = append(peers, Peer{Addr: g, Fingerprint: mustIdentity(t).Fingerprint()})
	}

	udp := testport.UDP(t, net.IPv4(127, 0, 0, 1))
	pc := &loopbackOnly{PacketConn: udp}
	qt := &quic.Transport{Conn: pc}
	rec := newRecorder(testLogger(t, "a").Handler())
	a, err := NewTransport(TransportConfig{Identity: aID, QUIC: qt, Advertise: udp.LocalAddr().String(), Peers: peers, Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		qt.Close()
		udp.Close()
	})

	for _, g := range groups {
		for range 2 {
			c, err := a.Dial(toAddr(g), 5*time.Second)
			if !errors.Is(err, ErrGroupAddr) {
				if c != nil {
					c.Close()
				}
				t.Errorf("raft's dial to a member at %s: %v, want ErrGroupAddr", g, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // refused at once; a dial would wait out its handshake
			str, _, err := a.open(ctx, g, question(kindProbe))
			cancel()
			if !errors.Is(err, ErrGroupAddr) {
				if str != nil {
					str.CancelRead(streamClosed)
					str.Close()
				}
				t.Errorf("a QUIC stream to a member at %s: %v, want ErrGroupAddr", g, err)
			}
		}
	}
	if d := pc.dropped(); len(d) > 0 {
		t.Fatalf("packets addressed to %v (not sent: the test's socket sends only to loopback)", d)
	}
	recs, _ := rec.since(0)
	for _, g := range groups {
		said := 0
		for _, r := range recs {
			if strings.Contains(r, "multicast or broadcast") && strings.Contains(r, "addr="+g+" ") {
				said++
			}
		}
		if said != 1 {
			t.Errorf("the refusal of %s logged %d times over 4 dials, want once; the log:\n%s", g, said, strings.Join(recs, "\n"))
		}
	}

	// The member at 0.0.0.0 is dialed, on both carriers.
	pingPong(t, a, b, zero)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	str, _, err := a.open(ctx, zero, question(kindProbe))
	if err != nil {
		t.Fatalf("a QUIC stream to the member at %s: %v", zero, err)
	}
	str.CancelRead(streamClosed)
	str.Close()
}

package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/internal/netlab"
)

// TestDirectAnswersPaced: a responder answers a query sent from a port
// other than 5353 to the querier directly, at the query's source address,
// which anyone on the link can forge. Until session 23 it answered every
// such query, so that a neighbour could have a registry send an address of
// its choosing answers several times its queries' size as fast as it sent
// them. Now each address gets at most a burst of 16 answers (then 8 a
// second) and all together 128 (then 64 a second); the responder's clock
// stands still here, so no bucket refills: 40 queries from one address
// get 16 answers, and 16 from each of eight more get 112 in all, the
// rest of the 128. Queries from this host on lo (127.0.0.1), unpaced, are
// answered throughout: each is the marker that the queries sent before it
// were handled. Everything runs in a network namespace of lo alone
// (netlab.RunInLoopbackNS), the "neighbours" addresses of lo's subnet
// 10.77.0.0/24.
func TestDirectAnswersPaced(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		const neighbours = 9
		for i := 1; i <= neighbours+1; i++ {
			if out, err := exec.Command("ip", "addr", "add", fmt.Sprintf("10.77.0.%d/24", i), "dev", "lo").CombinedOutput(); err != nil {
				t.Fatalf("ip addr add: %v: %s", err, out)
			}
		}
		log, w := watchLog(t)
		frozen := time.Now()
		advertise(t, discovery.AdvertiserConfig{Instance: "paced", Port: 7373, Fingerprint: "fp-paced", Logger: log,
			Now: func() time.Time { return frozen }})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		w.wait(ctx, t, 1, "discovery: advertising registry", "iface", "lo")

		query, err := (&dns.Msg{Question: []dns.Question{{Name: discovery.Service + ".local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}}}).Pack()
		if err != nil {
			t.Fatal(err)
		}
		group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
		querier := func(ip string) *net.UDPConn {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		ask := func(c *net.UDPConn, n int) {
			for range n {
				if _, err := c.WriteToUDP(query, group); err != nil {
					t.Fatalf("query from %s: %v", c.LocalAddr(), err)
				}
			}
		}
		// answered waits for one answer on c (a query sent before it
		// was handled) until the test's deadline.
		answered := func(c *net.UDPConn) {
			t.Helper()
			dl, _ := ctx.Deadline()
			c.SetReadDeadline(dl)
			buf := make([]byte, 9000)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no answer to %s: %v", c.LocalAddr(), err)
			}
			var m dns.Msg
			if err := m.Unpack(buf[:n]); err != nil || !m.Response || len(m.Answer) == 0 {
				t.Fatalf("to %s: not an answer (%v): %v", c.LocalAddr(), err, &m)
			}
		}
		// drain counts the answers c holds: the responder has handled
		// every query sent before the marker it answered last, and on lo
		// its answers reach the socket as they are sent.
		drain := func(c *net.UDPConn) int {
			buf := make([]byte, 9000)
			n := 0
			for {
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(buf); err != nil {
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Timeout() {
						t.Fatalf("read %s: %v", c.LocalAddr(), err)
					}
					return n
				}
				n++
			}
		}
		local := querier("127.0.0.1")
		mark := func() {
			t.Helper()
			ask(local, 1)
			answered(local)
		}

		// One neighbour: a first query answered, then 39 more in two
		// rounds (few at a time, so that none is lost to a full socket
		// buffer and the count below is the responder's).
		first := querier("10.77.0.2")
		ask(first, 1)
		answered(first)
		ask(first, 20)
		mark()
		ask(first, 19)
		mark()
		if got := 1 + drain(first); got > 16 {
			t.Errorf("40 queries from one address got %d answers, want at most its burst of 16", got)
		} else {
			t.Logf("40 queries from one address: %d answers", got)
		}

		// Eight more, 16 queries each: within each one's burst, but 16 +
		// 8*16 = 144 is past the 128 all may have.
		total := 0
		for i := 3; i <= neighbours+1; i++ {
			c := querier(fmt.Sprintf("10.77.0.%d", i))
			ask(c, 16)
			mark()
			got := drain(c)
			if got > 16 {
				t.Errorf("16 queries from %s got %d answers, want at most 16", c.LocalAddr(), got)
			}
			total += got
		}
		if total > 128-16 {
			t.Errorf("eight more addresses, 16 queries each, got %d answers in all, want at most 112 (128 in all, 16 of them to the first)", total)
		} else {
			t.Logf("eight more addresses, 16 queries each: %d answers in all", total)
		}
	})
}

package cell

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/internal/testport"
)

// TestProbeOnceMore: a member's key that dials this daemon while the probe
// of the connection back to it is in flight (askProbe) gets one more probe
// once that one ends, of the connection back as it is then. Here a "restarts"
// while b probes its old connection: the old probe ends with that
// connection, and the one more, held (probed) until b has dialed a's new
// listener, opens its stream there. Without it, a's new connection would
// go unchecked until a dialed again (session 17 left the path untested).
func TestProbeOnceMore(t *testing.T) {
	aID, bID := mustIdentity(t), mustIdentity(t)
	a, _ := newTransport(t, aID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: bID.Fingerprint()}}, false)
	udp := testport.UDP(t, net.IPv4(127, 0, 0, 1))
	qt := &quic.Transport{Conn: udp}
	t.Cleanup(func() {
		qt.Close()
		udp.Close()
	})
	addr := udp.LocalAddr().String()

	// a's key first at a listener that grants no streams: the probe of
	// b's connection to it waits.
	old, err := qt.Listen(a.ServerTLS(), &quic.Config{MaxIncomingStreams: -1, MaxIdleTimeout: waitTimeout})
	if err != nil {
		t.Fatal(err)
	}
	firstConn := make(chan *quic.Conn, 1)
	go func() {
		if c, err := old.Accept(context.Background()); err == nil {
			firstConn <- c
		}
	}()

	b, bAddr := newTransport(t, bID, []Peer{{Addr: addr, Fingerprint: aID.Fingerprint()}}, true)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before b's close: its probes goroutine may wait on it
	ended := make(chan struct{}, 8)
	b.mu.Lock()
	b.probeTimeout = waitTimeout // the first probe ends with its connection, not before
	b.probed = func() {
		ended <- struct{}{}
		<-release
	}
	b.mu.Unlock()
	handled := make(chan struct{}, 8)
	b.onDialedIn(func() { handled <- struct{}{} })

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	d, _, err := b.conn(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	var first *quic.Conn
	select {
	case first = <-firstConn:
	case <-ctx.Done():
		t.Fatal("b's connection to a not accepted")
	}
	t.Cleanup(func() { first.CloseWithError(0, "") })
	dialIn := func() {
		t.Helper()
		c, err := quic.DialAddr(ctx, bAddr, a.clientTLS(bID.Fingerprint()), &quic.Config{MaxIdleTimeout: waitTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseWithError(0, "") })
		select {
		case <-handled:
		case <-ctx.Done():
			t.Fatal("a's connection to b not handled")
		}
	}
	dialIn() // the probe of d starts, and waits for a stream
	dialIn() // asked again while it is in flight
	b.mu.Lock()
	again, inFlight := b.probing[aID.Fingerprint()]
	b.mu.Unlock()
	if !inFlight || !again {
		t.Fatalf("after a second connection from a's key: probe in flight %v, asked again %v; want both", inFlight, again)
	}

	// a restarts: its listener at the address grants streams now, and its
	// old connection ends.
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := qt.Listen(a.ServerTLS(), &quic.Config{MaxIdleTimeout: waitTimeout})
	if err != nil {
		t.Fatal(err)
	}
	probed := make(chan struct{}, 8)
	lnCtx, lnCancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		lnCancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept(lnCtx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.CloseWithError(0, "")
				for {
					str, err := c.AcceptStream(lnCtx)
					if err != nil {
						return
					}
					var kind [1]byte
					str.SetReadDeadline(time.Now().Add(waitTimeout))
					if _, err := str.Read(kind[:]); err == nil && kind[0] == kindProbe {
						probed <- struct{}{}
					}
					str.CancelRead(0)
				}
			})
		}
	})
	first.CloseWithError(0, "restarting")
	select {
	case <-ended: // the first probe, with its connection
	case <-ctx.Done():
		t.Fatal("the probe of b's old connection to a did not end with it")
	}
	waitUntil(t, "b to dial a's new listener", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		nd, _, err := b.conn(ctx, addr)
		return err == nil && nd.conn != d.conn
	})
	releaseOnce()
	select {
	case <-probed:
	case <-time.After(waitTimeout):
		t.Fatal("no probe of b's new connection to a: the probe asked for meanwhile did not run")
	}
}

// TestReadBeforeLossNotReachedAgain: an answer a member sent before it
// stopped, read after a dial to it was refused, does not make its link
// reached again: it logged the member lost, reached, lost and reached
// across one restart (TestPeerRestartQuiet at load ~30, session 21). A read
// on a connection dialed before the loss is checked by a dial, which finds
// a member that stopped still down, and one that answers back: here b
// answers on a's old connection while its link is lost (one RPC's
// timeout), and a's dial finds it.
func TestReadBeforeLossNotReachedAgain(t *testing.T) {
	// Each part on transports of its own: a's dial that checks the link
	// is one more connection b accepts.
	pair := func() (a, b *Transport, bAddr string, c, s net.Conn) {
		aID, bID := mustIdentity(t), mustIdentity(t)
		b, bAddr = newTransport(t, bID, []Peer{{Addr: "127.0.0.1:1", Fingerprint: aID.Fingerprint()}}, true)
		a, _ = newTransport(t, aID, []Peer{{Addr: bAddr, Fingerprint: bID.Fingerprint()}}, false)
		c, err := a.Dial(toAddr(bAddr), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s = accept(t, b)
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		s.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := readFull(s, buf); err != nil {
			t.Fatal(err)
		}
		return a, b, bAddr, c, s
	}
	readPong := func(c net.Conn) {
		t.Helper()
		buf := make([]byte, 4)
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := readFull(c, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("read %q, %v", buf, err)
		}
	}

	// b alive: an answer on the old connection, while the link is lost.
	a, _, bAddr, c, s := pair()
	l := a.link(bAddr)
	a.linkDown(bAddr, errors.New("test: no answer within raft's RPC timeout"))
	down, changed := l.state()
	if !down {
		t.Fatal("the link is not down")
	}
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	readPong(c)
	select {
	case <-changed:
	case <-time.After(waitTimeout):
		t.Fatal("a member answering on a connection older than the loss is not found reached again")
	}
	if down, _ := l.state(); down {
		t.Fatal("the link is down after the member answered")
	}

	// b stops once it answered: a's dial is refused, then it reads the
	// answer.
	a, b, bAddr, c, s := pair()
	l = a.link(bAddr)
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	b.Close() // its listener, then its connections
	if d, err := a.Dial(toAddr(bAddr), 5*time.Second); err == nil {
		d.Close()
		t.Fatal("a dial to the member stopped succeeded")
	}
	if down, _ := l.state(); !down {
		t.Fatal("the link is not down after a refused dial")
	}
	readPong(c)
	waitUntil(t, "a's check of the link to end", func() bool { return !l.checking.Load() })
	if down, _ := l.state(); !down {
		t.Fatal("the link is reached again by an answer sent before the member stopped")
	}
}

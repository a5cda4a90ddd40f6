package cell

import (
	"context"
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

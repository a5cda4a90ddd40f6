// Package udpproxy is a UDP relay on loopback that tests put between a QUIC
// client and a server, so they can cut the path (drop every packet) and
// restore it, as a network failure would, or make it long (hold every
// packet a while), as a far link would, without touching either end.
package udpproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy relays datagrams between clients that send to Addr and one target.
// Each client address gets its own upstream socket, so the target sees one
// peer per client. Close stops it and waits for its goroutines.
type Proxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	cut    atomic.Bool
	delay  atomic.Int64 // how long each datagram is held, in ns
	later  chan held    // datagrams held, in the order they came
	done   chan struct{}

	mu       sync.Mutex
	upstream map[string]*net.UDPConn
	closed   bool
	wg       sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 relaying to target.
func New(target string) (*Proxy, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: ta, upstream: make(map[string]*net.UDPConn), later: make(chan held, 4096), done: make(chan struct{})}
	p.wg.Add(2)
	go p.fromClients()
	go p.relayLater()
	return p, nil
}

// held is a datagram to relay at a time: to the target on up, or to the
// client to (when up is nil).
type held struct {
	at  time.Time
	up  *net.UDPConn
	to  *net.UDPAddr
	buf []byte
}

// Delay holds every datagram d (0: none) before relaying it, in both
// directions, keeping their order: a path d long each way. A datagram
// that finds 4096 held already is dropped, as a full link would drop it.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// relay sends b to the target on up, or to the client to, now or, under
// a delay, later.
func (p *Proxy) relay(up *net.UDPConn, to *net.UDPAddr, b []byte) {
	d := time.Duration(p.delay.Load())
	if d <= 0 {
		if up != nil {
			up.Write(b)
		} else {
			p.ln.WriteToUDP(b, to)
		}
		return
	}
	select {
	case p.later <- held{at: time.Now().Add(d), up: up, to: to, buf: append([]byte(nil), b...)}:
	default:
	}
}

// relayLater relays the held datagrams as they fall due, until Close.
func (p *Proxy) relayLater() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var h held
		select {
		case h = <-p.later:
		case <-p.done:
			return
		}
		timer.Reset(time.Until(h.at))
		select {
		case <-timer.C:
		case <-p.done:
			return
		}
		if h.up != nil {
			h.up.Write(h.buf)
		} else {
			p.ln.WriteToUDP(h.buf, h.to)
		}
	}
}

// Addr is where clients send to reach the target.
func (p *Proxy) Addr() string { return p.ln.LocalAddr().String() }

// Cut drops every packet in both directions until Restore.
func (p *Proxy) Cut() { p.cut.Store(true) }

// Restore relays packets again.
func (p *Proxy) Restore() { p.cut.Store(false) }

// Close stops relaying and waits for the proxy's goroutines. It is safe to
// call twice.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.ln.Close()
	for _, up := range p.upstream {
		up.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) fromClients() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if p.cut.Load() {
			continue
		}
		up, err := p.upstreamFor(from)
		if err != nil {
			continue
		}
		p.relay(up, nil, buf[:n])
	}
}

// upstreamFor returns the socket relaying for client, making it (and its
// reader) on first use.
func (p *Proxy) upstreamFor(client *net.UDPAddr) (*net.UDPConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("closed")
	}
	if up, ok := p.upstream[client.String()]; ok {
		return up, nil
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, err
	}
	p.upstream[client.String()] = up
	p.wg.Add(1)
	go p.fromTarget(up, client)
	return up, nil
}

func (p *Proxy) fromTarget(up *net.UDPConn, client *net.UDPAddr) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if p.cut.Load() {
			continue
		}
		p.relay(nil, client, buf[:n])
	}
}

// Package udpproxy is a UDP relay on loopback that tests put between a QUIC
// client and a server, so they can cut the path (drop every packet) and
// restore it, as a network failure would, without touching either end.
package udpproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy relays datagrams between clients that send to Addr and one target.
// Each client address gets its own upstream socket, so the target sees one
// peer per client. Close stops it and waits for its goroutines.
type Proxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	cut    atomic.Bool

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
	p := &Proxy{ln: ln, target: ta, upstream: make(map[string]*net.UDPConn)}
	p.wg.Add(1)
	go p.fromClients()
	return p, nil
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
		up.Write(buf[:n])
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
		p.ln.WriteToUDP(buf[:n], client)
	}
}

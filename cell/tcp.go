package cell

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// RaftALPN is the TLS application protocol of raft's connections between
// a cell's members, which ride TCP rather than QUIC: each member listens
// on TCP at the IP address and port number of its UDP socket (TCP's ports
// and UDP's are apart), and a member dials another at the address the
// cell knows it by. The keys and their checks are the cell ALPN's: mutual
// TLS 1.3, only the keys of the cell's members accepted, each address
// answered by its member's key. A connection carries raftNet's frames
// (raftwire.go) from its first byte, one RPC and its response after
// another.
//
// Why TCP: an AppendEntries of 10-40 KB went out as 8-30 QUIC packets of
// at most 1452 bytes, each sealed, sent, received, opened and acknowledged
// in user space (quic-go was half of a loaded leader's CPU, its raft
// traffic much of it); over TCP the kernel carries it in a few large
// segments (64 KiB on loopback; TSO and GRO do the cutting on a LAN) and
// TLS seals it in 16 KiB records. BENCHMARKS.md has the figures.
const RaftALPN = "huddle-raft/1"

// handshakeTimeout bounds an accepted connection's TLS handshake: a peer
// that says nothing cannot hold a goroutine longer.
const handshakeTimeout = 5 * time.Second

// maxHandshakes bounds the accepted connections whose handshake is under
// way, so that strangers cannot make a member hold more unauthenticated
// connections than this; those beyond it are closed at once, or take the
// place of another address's (handshakes).
const maxHandshakes = 64

// maxConnsPerKey bounds the raft connections a member keeps from one
// member's key (those it accepted): raftNet opens a handful to each
// member (maxIdleConns idle, a pipeline, a snapshot, the RPCs under way),
// and those of a member that restarted end with its process. Beyond it
// the oldest is closed, so that a member that comes back is never turned
// away by connections of its past that linger (a host that vanished is
// found out by keepAlive only). Each held costs a goroutine, a read
// buffer (readBuffer) and, inside a frame, at most frameAllocStep beyond
// the bytes that arrived: about 1.1 MiB, 36 MiB a key.
const maxConnsPerKey = 32

// keepAlive is the TCP keep-alive of raft's connections: one whose peer
// vanished (its host died, or was cut off) while it was idle ends after
// about 20 s, as the cell's QUIC connections do after their 15 s idle
// timeout, rather than after Linux's 2 hours or Go's 2.5 minutes. An
// RPC's own I/O is bounded by raftNet's timeout.
func keepAlive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}
}

// Listen opens the TCP listener raft's connections arrive on, at the IP
// address and port number of the QUIC transport's UDP socket, and accepts
// them until Close. Its error names the port (another process holds it,
// most likely). It returns ErrTransportClosed after Close.
func (t *Transport) Listen() error {
	udp := t.cfg.QUIC.Conn.LocalAddr()
	host, port, err := net.SplitHostPort(udp.String())
	if err != nil {
		return fmt.Errorf("cell: raft's TCP listener: UDP address %s: %w", udp, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return ErrTransportClosed
	case t.tcp != nil:
		return nil
	}
	lc := net.ListenConfig{KeepAliveConfig: keepAlive()}
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("cell: raft listens on TCP port %s, the number of the daemon's UDP port: %w", port, err)
	}
	t.tcp = ln
	t.wg.Add(1)
	go t.acceptTCP(ln)
	return nil
}

// acceptTCP accepts raft's connections on ln until it closes, and hands
// each to Accept once its peer presented a member's key.
func (t *Transport) acceptTCP(ln net.Listener) {
	defer t.wg.Done()
	var hs handshakes
	for backoff := time.Duration(0); ; {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: wait, as net/http
			// does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-t.done:
				return
			}
		}
		backoff = 0
		h := hs.admit(raw)
		if h == nil {
			raw.Close()
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			c := t.handshake(raw, func() { hs.done(h) })
			if c == nil {
				return
			}
			select {
			case t.accepted <- c:
			case <-t.done:
				c.Close()
			}
		}()
	}
}

// handshakes are the accepted connections whose handshake is under way, by
// source address (an IPv4 address, an IPv6 /64). At most maxHandshakes are
// held; with every place taken, a connection from an address that holds
// fewer than another takes the place of that address's oldest, which is
// closed (its handshake fails). So a stranger holding every place with
// silent connections (each renewed as its handshake time runs out) cannot
// keep a member from connecting, unless it holds places from more
// addresses than the cell has members.
type handshakes struct {
	mu     sync.Mutex
	n      int
	byAddr map[netip.Prefix][]*pendingHandshake // oldest first
}

// pendingHandshake is one accepted connection in handshakes.
type pendingHandshake struct {
	raw  net.Conn
	from netip.Prefix
	gone bool // its place was taken: done does not count it again
}

// admit returns raw's place among the handshakes, or nil if it gets none.
func (hs *handshakes) admit(raw net.Conn) *pendingHandshake {
	h := &pendingHandshake{raw: raw, from: sourcePrefix(raw.RemoteAddr())}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.byAddr == nil {
		hs.byAddr = make(map[netip.Prefix][]*pendingHandshake)
	}
	if hs.n >= maxHandshakes {
		var most netip.Prefix
		for from, held := range hs.byAddr {
			if len(held) > len(hs.byAddr[most]) {
				most = from
			}
		}
		if len(hs.byAddr[h.from])+1 >= len(hs.byAddr[most]) {
			return nil // no address holds more than this one would
		}
		oldest := hs.byAddr[most][0]
		hs.remove(oldest)
		oldest.gone = true
		oldest.raw.Close()
	}
	hs.byAddr[h.from] = append(hs.byAddr[h.from], h)
	hs.n++
	return h
}

// done gives h's place back, unless another took it.
func (hs *handshakes) done(h *pendingHandshake) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !h.gone {
		hs.remove(h)
	}
}

// remove takes h out of hs (hs.mu held).
func (hs *handshakes) remove(h *pendingHandshake) {
	held := hs.byAddr[h.from]
	for i, o := range held {
		if o == h {
			held = slices.Delete(held, i, i+1)
			break
		}
	}
	if len(held) == 0 {
		delete(hs.byAddr, h.from)
	} else {
		hs.byAddr[h.from] = held
	}
	hs.n--
}

// sourcePrefix is the source a connection's handshakes are counted by: its
// IPv4 address, or the /64 of its IPv6 address (one host is given a whole
// /64 and can pick any address in it).
func sourcePrefix(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// handshake runs an accepted connection's TLS handshake, within
// handshakeTimeout, and calls done as it ends: before a connection that
// failed is closed, so that a peer that sees it closed finds its place
// among the handshakes free. It returns nil, having closed raw, unless the
// peer presented a member's key and chose RaftALPN.
func (t *Transport) handshake(raw net.Conn, done func()) *tcpConn {
	t.mu.Lock()
	timeout := cmp.Or(t.handshakeTimeout, handshakeTimeout)
	t.mu.Unlock()
	raw.SetDeadline(time.Now().Add(timeout))
	g := &gatherConn{Conn: raw}
	c := tls.Server(g, t.raftServerTLS())
	err := c.HandshakeContext(t.ctx)
	done() // before a failed one is closed: once its peer sees the close, its place is free
	if err != nil || c.ConnectionState().NegotiatedProtocol != RaftALPN {
		raw.Close()
		return nil
	}
	raw.SetDeadline(time.Time{})
	fp, _ := identity.PeerFingerprint(c.ConnectionState()) // VerifyPeer found it
	tc := &tcpConn{Conn: c, raw: raw, g: g, t: t, peer: fp}
	if !t.track(tc) {
		return nil
	}
	return tc
}

// dialTCP dials a raft connection to the member at addr. A failure is
// recorded as the link's (dialFailed) if report is set.
func (t *Transport) dialTCP(ctx context.Context, addr string, report bool) (*tcpConn, error) {
	t.mu.Lock()
	closed := t.closed
	want, ok := t.peers[addr]
	fault := t.dialFault
	t.mu.Unlock()
	switch {
	case closed:
		return nil, ErrTransportClosed
	case !ok:
		return nil, fmt.Errorf("cell: dial %s: %w", addr, ErrUnknownPeer)
	}
	failed := func(err error) error {
		if !report {
			return fmt.Errorf("cell: dial %s: %w", addr, err)
		}
		return t.dialFailed(ctx, addr, err)
	}
	if fault != nil {
		if err := fault(); err != nil {
			return nil, failed(err)
		}
	}
	l := t.link(addr)
	losses := l.losses.Load() // before the dial: what it reaches may predate a loss during it
	d := net.Dialer{KeepAliveConfig: keepAlive(), ControlContext: func(_ context.Context, _, ip string, _ syscall.RawConn) error {
		// Each address addr resolved to, before its connect.
		ap, err := netip.ParseAddrPort(ip)
		if err != nil {
			return nil
		}
		return t.refuseGroup(addr, ap.Addr())
	}}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, failed(err)
	}
	g := &gatherConn{Conn: raw}
	c := tls.Client(g, t.raftClientTLS(want))
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, failed(err)
	}
	tc := &tcpConn{Conn: c, raw: raw, g: g, t: t, peer: want, addr: addr, l: l, losses: losses}
	if !t.track(tc) {
		return nil, ErrTransportClosed
	}
	return tc, nil
}

// dialFailed records that a dial to addr failed for err, unless the
// transport is closing, and returns the dial's error.
func (t *Transport) dialFailed(ctx context.Context, addr string, err error) error {
	err = fmt.Errorf("cell: dial %s: %w", addr, err)
	if ctx.Err() == nil || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.linkDown(addr, err)
	}
	return err
}

// raftServerTLS is the TLS configuration of raft's listener: a member's
// key, checked by VerifyPeer, and RaftALPN alone.
func (t *Transport) raftServerTLS() *tls.Config {
	c := t.cfg.Identity.ServerTLS()
	c.NextProtos = []string{RaftALPN}
	c.VerifyConnection = t.VerifyPeer
	// Full records from the first byte: the connection lasts, and is
	// not a browser's waiting on its first paint.
	c.DynamicRecordSizingDisabled = true
	return c
}

// raftClientTLS is the TLS configuration for dialing the raft listener of
// the member whose key is want.
func (t *Transport) raftClientTLS(want wire.Fingerprint) *tls.Config {
	c := t.cfg.Identity.ClientTLS(want, nil)
	c.NextProtos = []string{RaftALPN}
	c.DynamicRecordSizingDisabled = true
	return c
}

// track records c among the connections Close closes; of an accepted
// one, it closes the oldest its key holds beyond maxConnsPerKey. It
// returns false, having closed c, if the transport is closed, or if c was
// dialed and the node stopped its outgoing connections (stopOutgoing).
func (t *Transport) track(c *tcpConn) bool {
	t.mu.Lock()
	if t.closed || c.addr != "" && t.ctx.Err() != nil {
		t.mu.Unlock()
		c.raw.Close()
		return false
	}
	if t.tcpConns == nil {
		t.tcpConns = make(map[*tcpConn]struct{})
	}
	t.tcpSeq++
	c.seq = t.tcpSeq
	t.tcpConns[c] = struct{}{}
	var oldest *tcpConn
	if c.addr == "" {
		held := 0
		for o := range t.tcpConns {
			if o.addr == "" && o.peer == c.peer {
				held++
				if oldest == nil || o.seq < oldest.seq {
					oldest = o
				}
			}
		}
		if held <= maxConnsPerKey {
			oldest = nil
		} else {
			// Out of the count now: another connection tracked before
			// it is closed must not pick it again.
			delete(t.tcpConns, oldest)
		}
	}
	t.mu.Unlock()
	if oldest != nil {
		oldest.Close()
	}
	return true
}

// dropTCP closes the raft connections of members no longer in the cell,
// whose members are now byAddr and keys (t.mu held): those a removed
// member dialed at once, those dialed to it a moment later (raft's last
// replication to it, the entry that removes it, may be in flight on one),
// as SetPeers does with QUIC connections.
func (t *Transport) dropTCP(byAddr map[string]wire.Fingerprint, keys map[wire.Fingerprint]bool) {
	var now, later []*tcpConn
	for c := range t.tcpConns {
		fp, listed := byAddr[c.addr]
		switch {
		case c.addr == "":
			if !keys[c.peer] {
				now = append(now, c)
			}
		case !listed:
			later = append(later, c)
		case fp != c.peer: // another key at that address now
			now = append(now, c)
		}
	}
	if len(now)+len(later) == 0 {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for _, c := range now {
			c.Close()
		}
		if len(later) > 0 {
			select {
			case <-time.After(leaveGrace):
			case <-t.done:
			}
			for _, c := range later {
				c.Close()
			}
		}
	}()
}

// tcpConn is one raft connection: TLS over TCP.
type tcpConn struct {
	*tls.Conn
	raw  net.Conn    // under Conn
	g    *gatherConn // between the two
	t    *Transport
	peer wire.Fingerprint // its key
	seq  uint64           // its order among the connections tracked
	once sync.Once

	// Of a connection this member dialed: the member's address, and the
	// link it reports to (links.go).
	addr   string
	l      *link
	losses uint64 // l's losses before it was dialed
}

// Read and Write return a failure of the link as a *linkError. Read
// returns the end of a connection the peer closed as io.EOF on an accepted
// connection (raft's server side tells a connection's end by it); on a
// dialed one, the peer stopping is the link's failure too.
func (c *tcpConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil {
		if c.l != nil && n > 0 && c.l.down.Load() {
			if c.losses == c.l.losses.Load() {
				c.t.linkUp(c.addr)
			} else {
				c.t.checkLink(c.addr) // perhaps bytes from before the loss
			}
		}
		return n, nil
	}
	if c.l == nil {
		return n, asLinkError(err)
	}
	c.t.noteIO(c.addr, err)
	return n, &linkError{err}
}

// Write hands the TCP connection what p becomes in TLS in one write
// (gatherConn).
func (c *tcpConn) Write(p []byte) (int, error) {
	n, err := c.write(p)
	if err != nil {
		if c.l != nil {
			c.t.noteIO(c.addr, err)
		}
		return n, &linkError{err}
	}
	return n, nil
}

// write writes p through TLS: a p longer than one TLS record is gathered
// and written to the TCP connection at once, gatherPiece bytes at a time
// (so that a long frame is not held twice in memory).
func (c *tcpConn) write(p []byte) (int, error) {
	if len(p) <= maxRecordPlaintext {
		return c.Conn.Write(p)
	}
	n := 0
	for len(p) > 0 {
		piece := p[:min(len(p), gatherPiece)]
		c.g.gather()
		_, err := c.Conn.Write(piece)
		if ferr := c.g.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return n, err
		}
		n += len(piece)
		p = p[len(piece):]
	}
	return n, nil
}

// gatherPiece is the most of a frame gathered into one write: a multiple
// of maxRecordPlaintext, so that the records are those TLS would cut.
const gatherPiece = 256 << 10

// maxRecordPlaintext is the most a TLS record carries (RFC 8446 5.1).
const maxRecordPlaintext = 16 << 10

// gatherConn is the TCP connection under a raft connection's TLS. Between
// gather and flush it keeps what TLS writes, and flush writes it in one
// call; otherwise it writes through (the handshake, short frames).
//
// Why: crypto/tls writes each record of at most 16 KiB with a write of its
// own, so a loaded cell's AppendEntries of 20-40 KB cost its leader 2-3
// system calls, and the follower could be woken by its first record to
// find the frame not whole. On this project's 2-core VMs (pti, no PCID)
// every entry into the kernel is dear: BENCHMARKS.md has the figures.
type gatherConn struct {
	net.Conn
	// mu orders the writes: TLS's (under its own lock, which covers one
	// record at a time: an alert the reading side sends may come between
	// two of a frame's records) and flush's.
	mu        sync.Mutex
	gathering bool
	buf       []byte
}

// maxGathered bounds the buffer a gatherConn keeps from one write to the
// next: a piece and its records' overhead fit.
const maxGathered = 2 * gatherPiece

func (g *gatherConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gathering {
		g.buf = append(g.buf, p...)
		return len(p), nil
	}
	return g.Conn.Write(p)
}

func (g *gatherConn) gather() {
	g.mu.Lock()
	g.gathering = true
	g.mu.Unlock()
}

// flush writes what was gathered and stops gathering.
func (g *gatherConn) flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gathering = false
	var err error
	if len(g.buf) > 0 {
		_, err = g.Conn.Write(g.buf)
	}
	if cap(g.buf) > maxGathered {
		g.buf = nil
	}
	g.buf = g.buf[:0]
	return err
}

// Close closes the TCP connection without TLS's close_notify alert, whose
// write would wait up to 5 s on a peer that reads nothing: the peer reads
// the end of the connection as io.EOF all the same.
func (c *tcpConn) Close() error {
	c.once.Do(func() {
		c.raw.Close()
		c.t.mu.Lock()
		delete(c.t.tcpConns, c)
		c.t.mu.Unlock()
	})
	return nil
}

package cell

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// ALPN is the TLS application protocol of the traffic between a cell's
// daemons over QUIC: all of it but raft's RPCs, which ride TCP (RaftALPN).
// It shares the daemon's UDP port with huddle/1: the daemon's QUIC
// listener offers both, and hands connections that chose this one to
// Transport.Handle.
const ALPN = "huddle-cell/1"

// Stream kinds. A daemon that opens a stream to a peer first writes one
// byte saying what the stream carries. Raft's RPCs are not among them:
// they ride TCP (tcp.go). ('r' and 'R' were raft's streams of earlier
// versions, which are refused: a cell's members run the same version.)
const (
	// kindCatchUp: one catch-up request and its reply (catchup.go).
	kindCatchUp byte = 'c'
	// kindProbe: nothing; the stream is closed at once. Opened on a
	// connection that may be dead, to find out (links.go).
	kindProbe byte = 'p'
	// kindProgress: how far a member got: its applied and last raft
	// index (members.go). The leader asks a member catching up.
	kindProgress byte = 'i'
	// kindMembers: the members of the answering member's configuration
	// (learn.go). A member that knows of no leader asks.
	kindMembers byte = 'm'
)

// questionSize is how long the first write of a probe, a progress and a
// members stream is: the kind, then zeros, which the member asked reads
// none of (daemons before session 15 wrote the kind alone). So the packet
// that carries it is longer than 42 bytes, and a member restarted in place
// answers it with a stateless reset at once: quic-go answers a packet of a
// connection it does not know so only then (MinStatelessResetSize), and
// the kind alone, 35 bytes with QUIC's framing, went unanswered until the
// connection's idle timeout. (A catch-up's request, 40 bytes, follows its
// kind at once.)
const questionSize = 32

// question returns the first write of a stream of kind kindProbe,
// kindProgress or kindMembers.
func question(kind byte) []byte {
	q := make([]byte, questionSize)
	q[0] = kind
	return q
}

// Connection close codes of the cell ALPN.
const (
	connRefused   quic.ApplicationErrorCode = 1 // the peer's key is not a member of the cell
	connShutdown  quic.ApplicationErrorCode = 2 // the daemon is stopping
	connTooMany   quic.ApplicationErrorCode = 3 // the key holds maxQUICConnsPerKey newer connections
	streamBadKind quic.StreamErrorCode      = 1
	streamClosed  quic.StreamErrorCode      = 2
	streamBusy    quic.StreamErrorCode      = 3 // the peer serves as many streams of that kind to this key as it will
)

// leaveGrace is how long the connection to a member removed from the cell
// stays open after the removal is applied, for raft's last replication to
// it.
const leaveGrace = 2 * time.Second

// kindTimeout bounds the wait for an accepted stream's kind byte.
const kindTimeout = 10 * time.Second

// Errors of the transport.
var (
	// ErrUnknownPeer: an address or key that is not a member of the cell.
	ErrUnknownPeer = errors.New("cell: not a member of the cell")
	// ErrTransportClosed: the transport was closed.
	ErrTransportClosed = errors.New("cell: transport closed")
	// ErrGroupAddr: a member's address names a multicast or broadcast
	// address, which the transport does not dial (groupAddr).
	ErrGroupAddr = errors.New("cell: a multicast or broadcast address, not one member's")
)

// TransportConfig configures a Transport.
type TransportConfig struct {
	// Identity is the daemon's key: it is presented to peers, and peers know
	// the daemon by its fingerprint. Required.
	Identity *identity.Identity
	// QUIC is the QUIC transport raft connections are dialed from: the
	// daemon's own, so that peers see its packets come from the address
	// they know it by, and one UDP socket carries everything. Required.
	QUIC *quic.Transport
	// Advertise is this daemon's address as the cell knows it ("host:port",
	// its entry in the cell's peers). Required.
	Advertise string
	// Peers are the cell's members as configured, this daemon included:
	// only their keys are accepted, and each address is dialed only if it
	// presents its key. SetPeers replaces them as the cell's membership
	// changes.
	Peers []Peer
	// Logger receives refused connections. Default: discard.
	Logger *slog.Logger
}

// Transport carries a cell's traffic between its members: raft's RPCs on
// TLS over TCP (raftNet's connections, dialed and accepted by Dial and
// Accept; tcp.go), the rest over QUIC under ALPN, on the daemon's UDP
// socket (the catch-up streams of replicas brought up to date,
// catchup.go, and a member's progress, members.go). Both ends present
// their keys (mutual TLS), and only keys of the cell's members are
// accepted, on either carrier.
//
// Its methods are safe for concurrent use. Listen opens raft's TCP
// listener. Close closes it and every connection, dialed or handled, and
// waits for the goroutines it started.
type Transport struct {
	cfg   TransportConfig
	local net.Addr
	quic  *quic.Config
	log   *slog.Logger

	accepted chan net.Conn // raft's connections, for Accept
	done     chan struct{} // closed by Close

	mu       sync.Mutex
	handlers map[byte]func(ctx context.Context, peer wire.Fingerprint, s *quic.Stream) // by stream kind
	peers    map[string]wire.Fingerprint                                               // by address
	keys     map[wire.Fingerprint]bool
	out      map[string]*dialed    // by address
	in       map[*quic.Conn]inConn // connections members dialed
	inSeq    uint64                // the last inConn.seq given
	closed   bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
	refusals refusals

	linksMu sync.Mutex
	links   map[string]*link // by address (links.go)

	groupAddrs map[string]bool // members' addresses refused as groupAddr, logged (t.mu)

	tcp      net.Listener          // raft's (tcp.go); nil until Listen
	tcpConns map[*tcpConn]struct{} // raft's connections, dialed and accepted
	tcpSeq   uint64                // the last tcpConn.seq given

	peersSet func() // called after SetPeers (onPeers)
	dialedIn func() // called as a member's QUIC connection is accepted (onDialedIn)

	probing map[wire.Fingerprint]bool // keys whose probe is in flight: true if asked again meanwhile (links.go)

	handshakeTimeout time.Duration // of raft's accepted connections; 0: handshakeTimeout (tests)
	probeTimeout     time.Duration // of each probe; 0: probeTimeout (tests)
	probed           func()        // tests: called after each probe, on its goroutine (probes)
	dialFault        func() error  // tests: called before each raft dial; its error fails the dial
}

// dialed is the QUIC connection to one peer, or the dial in progress.
type dialed struct {
	ready chan struct{} // closed once conn or err is set
	conn  *quic.Conn
	err   error
}

// NewTransport returns a transport for cfg. It does no I/O.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	switch {
	case cfg.Identity == nil:
		return nil, fmt.Errorf("%w: transport needs the daemon's identity", ErrInvalidConfig)
	case cfg.QUIC == nil:
		return nil, fmt.Errorf("%w: transport needs a QUIC transport to dial from", ErrInvalidConfig)
	}
	local, err := net.ResolveUDPAddr("udp", cfg.Advertise)
	if err != nil {
		return nil, fmt.Errorf("%w: advertised address %q: %v", ErrInvalidConfig, cfg.Advertise, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:      cfg,
		local:    local,
		quic:     dialConfig(),
		log:      logger(cfg.Logger),
		accepted: make(chan net.Conn),
		done:     make(chan struct{}),
		out:      make(map[string]*dialed),
		in:       make(map[*quic.Conn]inConn),
		links:    make(map[string]*link),
		probing:  make(map[wire.Fingerprint]bool),
		ctx:      ctx,
		cancel:   cancel,
	}
	t.SetPeers(cfg.Peers)
	return t, nil
}

// dialConfig is the QUIC configuration of the connections a daemon dials
// to its peers. The peer opens no streams on them.
func dialConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  5 * time.Second,
		MaxIdleTimeout:        15 * time.Second,
		KeepAlivePeriod:       2 * time.Second,
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
		// Raft ships batches of entries: let a stream and the connection
		// open their windows wide enough for a few batches in flight.
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         8 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     16 << 20,
		Tracer:                         qlog.DefaultConnectionTracer,
	}
}

// SetPeers makes peers the cell's members: the keys accepted, and the key
// each address must present. Connections to addresses no longer listed,
// or whose key changed, are closed, as are those from keys no longer
// listed (Node.accepted says which members a node gives).
func (t *Transport) SetPeers(peers []Peer) {
	defer t.notePeers() // after the unlock
	t.mu.Lock()
	defer t.mu.Unlock()
	byAddr := make(map[string]wire.Fingerprint, len(peers))
	keys := make(map[wire.Fingerprint]bool, len(peers))
	for _, p := range peers {
		byAddr[p.Addr] = p.Fingerprint
		keys[p.Fingerprint] = true
	}
	for addr, d := range t.out {
		fp, ok := byAddr[addr]
		switch {
		case ok && fp == t.peers[addr]:
		case ok || t.closed:
			delete(t.out, addr) // another key at that address now
			go d.close(connRefused, "no longer a member of the cell")
		default:
			// A member removed: raft's last replication to it (the entry
			// that removes it, so that it learns it was removed) may still
			// be in flight on this connection. Close it a moment later.
			delete(t.out, addr)
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				select {
				case <-time.After(leaveGrace):
				case <-t.done:
				}
				d.close(connRefused, "no longer a member of the cell")
			}()
		}
	}
	// The QUIC connections a removed member dialed end at once: the
	// streams it would open on them (a catch-up, a member's progress,
	// the members) are not served to a key the cell no longer lists.
	var gone []*quic.Conn
	for c, in := range t.in {
		if !keys[in.peer] {
			gone = append(gone, c)
			delete(t.in, c)
		}
	}
	for _, c := range gone {
		c.CloseWithError(connRefused, "no longer a member of the cell")
	}
	t.dropTCP(byAddr, keys)
	t.peers, t.keys = byAddr, keys
	for addr := range t.groupAddrs {
		if _, ok := byAddr[addr]; !ok {
			delete(t.groupAddrs, addr) // said again if it comes back
		}
	}
}

// onPeers sets the function called each time SetPeers has set the
// members (raftNet's keepReady), on SetPeers' goroutine.
func (t *Transport) onPeers(fn func()) {
	t.mu.Lock()
	t.peersSet = fn
	t.mu.Unlock()
}

// onDialedIn sets the function called each time Handle accepts a
// member's connection (a member that starts dials every other: the node's
// catch-up at start asks again), on Handle's goroutine.
func (t *Transport) onDialedIn(fn func()) {
	t.mu.Lock()
	t.dialedIn = fn
	t.mu.Unlock()
}

// notePeers calls the function onPeers set, if any.
func (t *Transport) notePeers() {
	t.mu.Lock()
	fn := t.peersSet
	t.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// addrOf returns the address of the member whose key is fp.
func (t *Transport) addrOf(fp wire.Fingerprint) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, key := range t.peers {
		if key == fp {
			return addr, true
		}
	}
	return "", false
}

// peerList returns the cell's members as the transport knows them.
func (t *Transport) peerList() []Peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	peers := make([]Peer, 0, len(t.peers))
	for addr, fp := range t.peers {
		peers = append(peers, Peer{Addr: addr, Fingerprint: fp})
	}
	return peers
}

// Member reports whether fp is the key of one of the cell's members.
func (t *Transport) Member(fp wire.Fingerprint) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys[fp]
}

// VerifyPeer is the TLS check of a connection under ALPN, for the daemon's
// listener: the peer must present a member's key. It returns an error
// wrapping ErrUnknownPeer otherwise.
func (t *Transport) VerifyPeer(cs tls.ConnectionState) error {
	fp, err := identity.PeerFingerprint(cs)
	if err != nil {
		return err
	}
	if !t.Member(fp) {
		t.refusals.note(t.log, fp, "key not a member of the cell (a daemon waiting to be added with huddle cell add, a removed member, or a member this daemon's --cell-peers named with another key when the cell was created)")
		return fmt.Errorf("key %s: %w", fp.Short(), ErrUnknownPeer)
	}
	return nil
}

// ServerTLS returns the TLS configuration of a listener that serves the
// cell's ALPN alone. (The daemon's listener offers huddle/1 too, and checks
// the keys of connections under ALPN with VerifyPeer.)
func (t *Transport) ServerTLS() *tls.Config {
	c := t.cfg.Identity.ServerTLS()
	c.NextProtos = []string{ALPN}
	c.VerifyConnection = t.VerifyPeer
	return c
}

// clientTLS returns the TLS configuration for dialing the member whose key
// is want.
func (t *Transport) clientTLS(want wire.Fingerprint) *tls.Config {
	c := t.cfg.Identity.ClientTLS(want, nil)
	c.NextProtos = []string{ALPN}
	return c
}

// Handle serves conn, a connection the daemon's listener accepted under
// ALPN: it accepts the peer's streams until the connection or the
// transport ends. It returns at once; the transport owns the goroutine.
// A peer whose key is not a member's is refused.
func (t *Transport) Handle(conn *quic.Conn) {
	fp, err := identity.PeerFingerprint(conn.ConnectionState().TLS)
	if err != nil || !t.Member(fp) {
		conn.CloseWithError(connRefused, "not a member of the cell")
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		conn.CloseWithError(connShutdown, "shutting down")
		return
	}
	t.inSeq++
	t.in[conn] = inConn{peer: fp, seq: t.inSeq}
	oldest := t.oldestBeyond(fp)
	dialedIn := t.dialedIn
	probe := t.askProbe(fp)
	t.wg.Add(1)
	if probe {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if oldest != nil {
		oldest.CloseWithError(connTooMany, "a newer connection from this key")
	}
	if probe {
		go t.probes(fp)
	}
	go func() {
		defer t.wg.Done()
		defer func() {
			t.mu.Lock()
			delete(t.in, conn)
			t.mu.Unlock()
			if t.ctx.Err() != nil {
				// Accepting stopped with the transport's context
				// (stopOutgoing, Close): the connection is no longer
				// the transport's to close, so close it now, ending the
				// streams raft serves on it.
				conn.CloseWithError(connShutdown, "shutting down")
			}
		}()
		t.serve(conn, fp)
	}()
	// Last, once the connection's goroutines are started (the tests count
	// them then).
	if dialedIn != nil {
		dialedIn()
	}
}

// inConn is a QUIC connection a member dialed: its key, and its order
// among them.
type inConn struct {
	peer wire.Fingerprint
	seq  uint64
}

// maxQUICConnsPerKey bounds the QUIC connections a member keeps from one
// member's key: a member dials one to each other member, and dials again
// when it finds one dead (or after a restart, while the old one waits out
// its idle timeout). Beyond it the oldest is closed, for the reasons of
// maxConnsPerKey (tcp.go): the server's own limits (connections per
// address and in all) do not count the cell's connections.
const maxQUICConnsPerKey = 8

// oldestBeyond returns the oldest connection from fp, taken out of t.in,
// if fp holds more than maxQUICConnsPerKey (t.mu held), else nil.
func (t *Transport) oldestBeyond(fp wire.Fingerprint) *quic.Conn {
	held := 0
	var oldest *quic.Conn
	var seq uint64
	for c, in := range t.in {
		if in.peer != fp {
			continue
		}
		held++
		if oldest == nil || in.seq < seq {
			oldest, seq = c, in.seq
		}
	}
	if held <= maxQUICConnsPerKey {
		return nil
	}
	// Out of the count now, not once its goroutine ends: the next
	// connection must not pick it again.
	delete(t.in, oldest)
	return oldest
}

func (t *Transport) serve(conn *quic.Conn, peer wire.Fingerprint) {
	for {
		str, err := conn.AcceptStream(t.ctx)
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.dispatch(peer, str)
		}()
	}
}

// dispatch reads an accepted stream's kind and hands it on.
func (t *Transport) dispatch(peer wire.Fingerprint, str *quic.Stream) {
	var kind [1]byte
	str.SetReadDeadline(time.Now().Add(kindTimeout))
	if _, err := io.ReadFull(str, kind[:]); err != nil {
		str.CancelRead(streamBadKind)
		str.CancelWrite(streamBadKind)
		str.ReleaseStreamCredit()
		return
	}
	str.SetReadDeadline(time.Time{})
	switch kind[0] {
	case kindProbe:
		str.CancelRead(streamClosed)
		str.Close()
		str.ReleaseStreamCredit()
	case kindCatchUp, kindProgress, kindMembers:
		t.mu.Lock()
		serve := t.handlers[kind[0]]
		member := t.keys[peer] // the connection may outlive its key's membership by a moment
		t.mu.Unlock()
		if serve == nil || !member {
			str.CancelRead(streamBadKind)
			str.CancelWrite(streamBadKind)
			str.ReleaseStreamCredit()
			return
		}
		serve(t.ctx, peer, str)
		str.CancelRead(streamClosed)
		str.Close()
		str.ReleaseStreamCredit()
	default:
		str.CancelRead(streamBadKind)
		str.CancelWrite(streamBadKind)
		str.ReleaseStreamCredit()
	}
}

// handle sets the handler of the streams of kind (kindCatchUp,
// kindProgress). It runs on a goroutine of the transport; the transport
// closes the stream after it.
func (t *Transport) handle(kind byte, h func(ctx context.Context, peer wire.Fingerprint, s *quic.Stream)) {
	t.mu.Lock()
	if t.handlers == nil {
		t.handlers = make(map[byte]func(ctx context.Context, peer wire.Fingerprint, s *quic.Stream))
	}
	t.handlers[kind] = h
	t.mu.Unlock()
}

// Accept returns the next raft connection a member opened (for raftNet):
// one whose TLS handshake presented a member's key.
func (t *Transport) Accept() (net.Conn, error) {
	select {
	case c := <-t.accepted:
		return c, nil
	case <-t.done:
		return nil, ErrTransportClosed
	}
}

// Addr returns this daemon's address as the cell knows it (net.Listener):
// raft takes it for the local server's address.
func (t *Transport) Addr() net.Addr { return t.local }

// Dial opens a raft connection to the member at address (for raftNet): a
// TCP connection to it, and its TLS handshake, within timeout. It returns
// an error wrapping ErrUnknownPeer for an address that is not a member's,
// and *identity.MismatchError if the daemon there presents another key
// than the member's.
func (t *Transport) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return t.dialRaft(address, timeout, true)
}

// dialRaft dials as Dial does. A failure is recorded as the link's (a
// member unreachable, logged) only if report is set: a ready connection's
// dial (raftNet.warm) is not raft's, which retries and reports its own.
func (t *Transport) dialRaft(address raft.ServerAddress, timeout time.Duration, report bool) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	c, err := t.dialTCP(ctx, string(address), report)
	if err != nil {
		return nil, asLinkError(err)
	}
	return c, nil
}

// open opens a stream to the member at addr and writes first, which
// starts with the stream's kind (one byte, or a question). A stream that
// cannot be opened on a connection dialed earlier (it has died: the peer
// restarted, or was unreachable for longer than the idle timeout) is tried
// once more on a new connection.
func (t *Transport) open(ctx context.Context, addr string, first []byte) (*quic.Stream, *quic.Conn, error) {
	for attempt := 0; ; attempt++ {
		d, fresh, err := t.conn(ctx, addr)
		if err != nil {
			return nil, nil, err
		}
		str, err := d.conn.OpenStreamSync(ctx)
		if err == nil {
			if _, err = str.Write(first); err == nil {
				return str, d.conn, nil
			}
			str.CancelWrite(streamClosed)
			str.CancelRead(streamClosed)
		}
		t.forget(addr, d)
		if fresh || attempt > 0 || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("cell: open a stream to %s: %w", addr, err)
		}
	}
}

// conn returns the QUIC connection to addr, dialing it if there is none
// (or it has ended); fresh says it was dialed by this call. Callers that
// find a dial in progress wait for it rather than dial too.
func (t *Transport) conn(ctx context.Context, addr string) (d *dialed, fresh bool, err error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, false, ErrTransportClosed
		}
		want, ok := t.peers[addr]
		if !ok {
			t.mu.Unlock()
			return nil, false, fmt.Errorf("cell: dial %s: %w", addr, ErrUnknownPeer)
		}
		d = t.out[addr]
		if d == nil {
			d = &dialed{ready: make(chan struct{})}
			t.out[addr] = d
			t.mu.Unlock()
			return d, true, t.dialInto(ctx, addr, want, d)
		}
		t.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("cell: dial %s: %w", addr, context.Cause(ctx))
		}
		if d.err != nil {
			return nil, false, d.err // that dial just failed: so would ours
		}
		if d.conn.Context().Err() == nil {
			return d, false, nil
		}
		t.forget(addr, d) // it has ended: dial again
	}
}

// dialInto dials addr for d, which conn has made the connection to it.
func (t *Transport) dialInto(ctx context.Context, addr string, want wire.Fingerprint, d *dialed) error {
	d.conn, d.err = t.dial(ctx, addr, want)
	close(d.ready)
	if d.err != nil {
		t.forget(addr, d)
		t.log.Debug("cell: QUIC dial to member failed", append(t.peerAttrs(addr), "reason", d.err)...)
		return d.err
	}
	t.mu.Lock()
	gone := t.closed || t.out[addr] != d // closed, or the peer left the cell, while we dialed
	if !gone {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if gone {
		d.conn.CloseWithError(connShutdown, "shutting down")
		return fmt.Errorf("cell: dial %s: %w", addr, ErrTransportClosed)
	}
	go t.watch(addr, d)
	return nil
}

func (t *Transport) dial(ctx context.Context, addr string, want wire.Fingerprint) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("cell: dial %s: %w", addr, err)
	}
	ip, _ := netip.AddrFromSlice(ua.IP)
	if err := t.refuseGroup(addr, ip); err != nil {
		return nil, err
	}
	conn, err := t.cfg.QUIC.Dial(ctx, ua, t.clientTLS(want), t.quic)
	if err != nil {
		return nil, fmt.Errorf("cell: dial %s: %w", addr, err)
	}
	return conn, nil
}

// groupAddr reports whether ip is a multicast address or the IPv4
// broadcast address: one that names no one member. A cell's configuration
// may name a member at one (raft took any address until session 20, and
// its members any host:port until f2e99fa, session 22): dialed, it had
// the leader send QUIC Initials (and a catch-up's, probes', questions') to
// everyone on the link listening to that group, mDNS's 224.0.0.251
// included. Unspecified addresses are dialed: a one-machine cell
// configured at 0.0.0.0 reaches its members so (Linux dials the machine
// itself). A subnet's broadcast address is not known here: the kernel
// refuses to send to it from a socket without SO_BROADCAST, which neither
// the daemon's UDP socket nor raft's TCP one sets.
func groupAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// groupHost reports whether addr's host is an IP address that is a
// groupAddr. A host name is judged as it resolves, at the dial.
func groupHost(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && groupAddr(ap.Addr())
}

// refuseGroup returns an error wrapping ErrGroupAddr if ip, which the
// member's address addr resolved to, is a groupAddr, and logs the refusal
// the first time for addr (raft dials a member it cannot reach again and
// again, with backoff). Nil otherwise.
func (t *Transport) refuseGroup(addr string, ip netip.Addr) error {
	if !groupAddr(ip) {
		return nil
	}
	t.mu.Lock()
	said := t.groupAddrs[addr]
	if _, member := t.peers[addr]; member {
		if t.groupAddrs == nil {
			t.groupAddrs = make(map[string]bool)
		}
		t.groupAddrs[addr] = true
	}
	fp := t.peers[addr]
	t.mu.Unlock()
	if !said {
		t.log.Warn("cell: a member is configured at a multicast or broadcast address; this daemon does not dial it",
			"peer", fp.Short(), "addr", addr, "ip", ip.String(),
			"move", fmt.Sprintf("on a member's host: huddle cell add --server MEMBER %s@HOST:PORT", fp))
	}
	return fmt.Errorf("cell: dial %s (%s): %w", addr, ip, ErrGroupAddr)
}

// forget drops d as the connection to addr, if it still is, and closes it.
func (t *Transport) forget(addr string, d *dialed) {
	t.mu.Lock()
	if t.out[addr] == d {
		delete(t.out, addr)
	}
	t.mu.Unlock()
	d.close(connShutdown, "connection replaced")
}

// unanswered drops conn, kept to addr, if err (of reading a question's
// answer on it) says the member answered nothing by the question's
// deadline: it is taken to have restarted, or its path to have changed,
// with no stateless reset reaching this daemon (one whose reset key
// changed, or that crashed before the connection's handshake was
// confirmed: a packet with a long header draws no reset). The next
// question dials anew; on the connection kept, each would go unanswered
// until its idle timeout, 15 s. A live member answers within a round trip
// and its scheduling. Progress and members questions (not the probe,
// which waits for no answer, nor a catch-up, whose reads wait longer than
// the idle timeout).
func (t *Transport) unanswered(addr string, conn *quic.Conn, err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.drop(addr, conn)
	}
}

// drop closes conn, if it is still the connection kept to addr, so that
// the next open dials addr anew.
func (t *Transport) drop(addr string, conn *quic.Conn) {
	t.mu.Lock()
	d := t.out[addr]
	t.mu.Unlock()
	if d == nil {
		return
	}
	select {
	case <-d.ready: // conn is set
	default:
		return // a dial in progress: not conn's
	}
	if d.conn == conn {
		t.forget(addr, d)
	}
}

func (d *dialed) close(code quic.ApplicationErrorCode, why string) {
	<-d.ready
	if d.conn != nil {
		d.conn.CloseWithError(code, why)
	}
}

// stopOutgoing makes dials in progress, and any after, fail at once, and
// ends the raft connections this member dialed: a closing node's raft
// must wait out neither a dial to a member that is down nor an RPC on a
// connection to one that went silent (cut off, frozen), which only the
// RPC timeout bounds. Raft's shutdown waits for its replication, heartbeat
// and vote goroutines, and a member cut off from the others took 4.5-9.3 s
// to stop on SIGTERM, one RPC timeout after another (internal/jepsen's
// restart-partitioned, session 16). The connections members dialed to
// this one stay: raft answers on them until it shuts down.
func (t *Transport) stopOutgoing() {
	t.mu.Lock()
	t.cancel() // under t.mu: a dial tracked after it is refused (track)
	var dialed []*tcpConn
	for c := range t.tcpConns {
		if c.addr != "" {
			dialed = append(dialed, c)
		}
	}
	t.mu.Unlock()
	for _, c := range dialed {
		c.Close()
	}
}

// Close closes every connection, ends Accept, and waits for the
// goroutines the transport started. It is safe to call more than once.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	close(t.done)
	t.cancel()
	out := t.out
	t.out = make(map[string]*dialed)
	in := make([]*quic.Conn, 0, len(t.in))
	for c := range t.in {
		in = append(in, c)
	}
	ln := t.tcp
	tcpConns := t.tcpConns
	t.tcpConns = nil
	t.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for c := range tcpConns {
		c.raw.Close()
	}
	for _, d := range out {
		select {
		case <-d.ready:
			if d.conn != nil {
				d.conn.CloseWithError(connShutdown, "shutting down")
			}
		default: // its dialer sees t.closed and closes it
		}
	}
	for _, c := range in {
		c.CloseWithError(connShutdown, "shutting down")
	}
	t.wg.Wait()
	return nil
}

// refusals logs refused peers at most once a minute, with a count of those
// not logged.
type refusals struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusals) note(log *slog.Logger, fp wire.Fingerprint, why string) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < time.Minute {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	log.Warn("cell connection refused", "peer", fp.Short(), "reason", why, "refused_since_last_logged", n)
}

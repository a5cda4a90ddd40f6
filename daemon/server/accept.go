package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Listening and accepting: the UDP socket and QUIC listener, handshakes
// (and Retry under a flood of them), connections per source address, and
// each connection's accept loop.

// Bind binds the UDP socket, which Listen then serves: a daemon binds
// before it writes its state, so that a port in use leaves nothing behind.
// It is a no-op if the socket is bound; after Close it returns ErrClosed.
func (s *Server) Bind() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bindLocked()
}

func (s *Server) bindLocked() error {
	if s.closed {
		return ErrClosed
	}
	if s.udp != nil {
		return nil
	}
	ua, err := net.ResolveUDPAddr("udp", s.setup.Listen)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.setup.Listen, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.setup.Listen, err)
	}
	s.udp = udp
	return nil
}

// Listen binds the UDP socket (if Bind did not) and starts QUIC on it,
// under the key id. It is a no-op if the server already listens; after
// Close it returns ErrClosed.
func (s *Server) Listen(id *identity.Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	if err := s.bindLocked(); err != nil {
		return err
	}
	udp := s.udp
	key, err := statelessResetKey(id)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.setup.Listen, err)
	}
	tr := &quic.Transport{
		Conn:                udp,
		StatelessResetKey:   key,
		ConnContext:         s.connContext,
		VerifySourceAddress: s.verifySourceAddress,
	}
	ln, err := tr.Listen(s.tlsConfig(id), quicConfig(s.cfg))
	if err != nil {
		tr.Close()
		udp.Close()
		s.udp = nil
		return fmt.Errorf("listen on %q: %w", s.setup.Listen, err)
	}
	s.tr, s.ln = tr, ln
	close(s.ready)
	return nil
}

// tlsConfig is the listener's TLS configuration: huddle/1, and for a
// member of a cell the cell's ALPN too, whose peers must present a
// member's key.
func (s *Server) tlsConfig(id *identity.Identity) *tls.Config {
	c := id.ServerTLS()
	if s.setup.Cell == nil {
		return c
	}
	c.NextProtos = append(c.NextProtos, cell.ALPN)
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol == cell.ALPN {
			return s.setup.Cell.Verify(cs)
		}
		return verify(cs)
	}
	return c
}

// Transport returns the server's QUIC transport (nil before Listen): a
// cell's node dials its peers from it.
func (s *Server) Transport() *quic.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tr
}

// statelessResetKey derives the key of the QUIC stateless resets the
// server sends for connections it no longer knows, from the server's own
// private key: a server restarted with its state directory sends resets
// its clients' old connections recognise, so they redial at once instead
// of waiting out their idle timeout. The derivation is one-way; the key
// reveals nothing of the private key.
func statelessResetKey(id *identity.Identity) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(id.Certificate().PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("huddle/1 QUIC stateless reset key\x00"))
	h.Write(der)
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key, nil
}

// retryAboveHandshakes is how many handshakes may be in progress at once
// before the server asks new connection attempts to prove their source
// address with a QUIC Retry. A flood of Initial packets from spoofed
// addresses then costs the server one stateless Retry packet each, not a
// connection's state and a TLS handshake; an honest client pays one round
// trip more, and only while the server is under such a load.
const retryAboveHandshakes = 128

// handshake is a connection attempt counted in Server.handshakes until its
// handshake ends, one way or the other.
type handshake struct {
	s    *Server
	once sync.Once
}

func (h *handshake) done() { h.once.Do(func() { h.s.handshakes.Add(-1) }) }

type handshakeKey struct{}

// connContext counts a new connection attempt as a handshake in progress;
// acceptLoop ends the count when the handshake completes, and the
// connection's context ending (a failed handshake) ends it otherwise.
func (s *Server) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	h := &handshake{s: s}
	s.handshakes.Add(1)
	context.AfterFunc(ctx, h.done)
	return context.WithValue(ctx, handshakeKey{}, h), nil
}

// verifySourceAddress asks for a Retry when too many handshakes are in
// progress (quic-go calls it only for attempts whose address is not yet
// validated).
func (s *Server) verifySourceAddress(net.Addr) bool {
	if s.handshakes.Load() < s.setup.retryAbove {
		return false
	}
	s.retries.Add(1)
	return true
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// Start starts accepting connections; Listen must have succeeded. It
// returns ErrClosed after Close, and ErrServing if already started.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrServing
	case s.ln == nil:
		return errors.New("server: serve before listen")
	}
	s.started = true
	s.connWG.Add(2)
	go s.acceptLoop()
	go s.reclaimLoop()
	return nil
}

func (s *Server) acceptLoop() {
	defer s.connWG.Done()
	for {
		conn, err := s.ln.Accept(s.acceptCtx)
		if err != nil {
			return // closed or shutting down
		}
		if h, ok := conn.Context().Value(handshakeKey{}).(*handshake); ok {
			h.done()
		}
		peer, err := identity.PeerFingerprint(conn.ConnectionState().TLS)
		if err != nil { // ServerTLS requires a certificate; this is defence in depth
			conn.CloseWithError(wire.ConnProtocolViolation, "client certificate required")
			continue
		}
		if s.setup.Cell != nil && conn.ConnectionState().TLS.NegotiatedProtocol == cell.ALPN {
			// A member of the cell: its transport owns the connection.
			s.setup.Cell.Handle(conn)
			continue
		}
		key := Source(conn.RemoteAddr())
		s.mu.Lock()
		if s.closed {
			// Shutting down: say so at once, rather than leave the client
			// to time out on a server that will not serve it.
			s.mu.Unlock()
			conn.CloseWithError(wire.ConnShutdown, "server shutting down")
			continue
		}
		var refused string
		switch {
		case s.perAddr[key] >= s.cfg.MaxConnsPerAddr:
			refused = fmt.Sprintf("too many connections from your address (limit %d)", s.cfg.MaxConnsPerAddr)
		case len(s.conns) >= s.cfg.MaxConns:
			refused = fmt.Sprintf("the server holds its limit of %d connections", s.cfg.MaxConns)
		}
		if refused != "" {
			s.mu.Unlock()
			s.refusals.note(s.setup.Logger, s.setup.Now(), key, peer, refused)
			conn.CloseWithError(wire.ConnRefused, refused)
			continue
		}
		s.conns[conn] = struct{}{}
		s.peakConns = max(s.peakConns, len(s.conns))
		s.perAddr[key]++
		s.connWG.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn, peer, key)
	}
}

// addrKey is the unit the per-address connection limit counts: an IPv4
// address, or the /64 prefix of an IPv6 address, since one host is given a
// whole /64 and can pick any address in it.
func Source(a net.Addr) netip.Prefix {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ua.AddrPort().Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// refusalLog logs refused connections at most once a second, with a count
// of those not logged, so a flood of refusals does not flood the log.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusalLog) note(log *slog.Logger, now time.Time, from netip.Prefix, peer wire.Fingerprint, why string) {
	r.mu.Lock()
	if d := now.Sub(r.last); d >= 0 && d < time.Second { // a clock that stepped back logs
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	log.Warn("connection refused", "from", from, "peer", peer.Short(), "reason", why, "refused_since_last_logged", n)
}

// serveConn accepts the streams of one connection until it ends or
// shutdown begins. On shutdown it leaves the connection for close to close.
func (s *Server) serveConn(conn *quic.Conn, peer wire.Fingerprint, key netip.Prefix) {
	defer s.connWG.Done()
	cs := s.shares.attach(key, peer)
	defer cs.detach()
	credits := newStreamCredits(s.cfg.MaxIncomingStreams)
	defer credits.close()
	workers := s.newStreamWorkers(func(str *quic.Stream) { s.serveStream(conn, peer, str, cs, credits) })
	defer workers.close()
	for {
		str, err := conn.AcceptStream(s.acceptCtx)
		if err != nil {
			break
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.refuseStream(str, *s.shuttingDown.Load())
			credits.hold(str) // given back by credits.close, below
			continue
		}
		s.streamWG.Add(1)
		s.mu.Unlock()
		workers.run(str)
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		delete(s.conns, conn)
	}
	if s.perAddr[key]--; s.perAddr[key] <= 0 {
		delete(s.perAddr, key)
	}
	s.mu.Unlock()
	if !closed {
		conn.CloseWithError(wire.ConnNoError, "")
	}
}

package groupd

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/wire"
)

// Tests of what PROTOCOL.md promises a second implementation, where the
// contract was silent or said otherwise (issue 16, items 18-25).

// certOf makes a certificate for key from tmpl, signed by signer (the key
// itself for a proper self-signed certificate).
func certOf(t *testing.T, tmpl *x509.Certificate, key, signer crypto.Signer) tls.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(1)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), signer)
	must(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dialWith dials addr with TLS configuration tc and returns the connection
// or the handshake's error.
func dialWith(t *testing.T, addr string, tc *tls.Config) (*quic.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, addr, tc, &quic.Config{})
	if err == nil {
		t.Cleanup(func() { c.CloseWithError(0, "") })
	}
	return c, err
}

// TestClientCertificatesCarryOnlyAKey: a certificate is only how a peer's
// key travels (§2). Servers check neither its dates, nor its self-signature,
// nor its names, and accept any key type TLS 1.3 signs with; the member is
// the key's fingerprint, whatever the certificate around it.
func TestClientCertificatesCarryOnlyAKey(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	long := time.Now().Add(-24 * time.Hour)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		cert tls.Certificate
	}{
		{"expired", edKey, certOf(t, &x509.Certificate{NotBefore: long.Add(-time.Hour), NotAfter: long}, edKey, edKey)},
		{"not yet valid", edKey, certOf(t, &x509.Certificate{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}, edKey, edKey)},
		{"signed by another key", edKey, certOf(t, &x509.Certificate{NotAfter: time.Now().Add(time.Hour), Subject: pkix.Name{CommonName: "someone else"}}, edKey, otherKey)},
		{"ECDSA P-256", ecKey, certOf(t, &x509.Certificate{NotAfter: time.Now().Add(time.Hour)}, ecKey, ecKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := x509.ParseCertificate(tc.cert.Certificate[0])
			must(t, err)
			tlsConf := newKey(t).ClientTLS(d.Fingerprint(), nil)
			tlsConf.Certificates = []tls.Certificate{tc.cert}
			conn, err := dialWith(t, d.Addr().String(), tlsConf)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			p := &peer{t: t, conn: conn}
			must(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: "cert"}, nil))
			var ml wire.MemberList
			must(t, p.call(wire.OpMembers, wire.GroupRef{Group: gid(d)}, &ml))
			want := wire.FingerprintOf(leaf)
			if len(ml.Members) != 1 || ml.Members[0].Fingerprint != want {
				t.Fatalf("members %+v, want the certificate key's fingerprint %s", ml.Members, want)
			}
			must(t, p.call(wire.OpLeave, wire.GroupRef{Group: gid(d)}, nil))
		})
	}
}

// TestServerNameIsNotChecked: a server answers whatever SNI a client sends,
// or none; clients send "huddle" (§2).
func TestServerNameIsNotChecked(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	for _, sni := range []string{"", "huddle", "example.org"} {
		tc := newKey(t).ClientTLS(d.Fingerprint(), nil)
		tc.ServerName = sni
		conn, err := dialWith(t, d.Addr().String(), tc)
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		p := &peer{t: t, conn: conn}
		p.info(gid(d))
	}
}

// TestServersPresentEd25519: the reference daemons present Ed25519
// certificates, so a client stack must verify Ed25519 signatures (§2).
func TestServersPresentEd25519(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	r := startRegistry(t, registry.Config{})
	for _, addr := range []string{d.Addr().String(), r.Addr().String()} {
		conn, err := dialWith(t, addr, newKey(t).ClientTLS(wire.Fingerprint{}, nil))
		must(t, err)
		certs := conn.ConnectionState().TLS.PeerCertificates
		if len(certs) != 1 || certs[0].PublicKeyAlgorithm != x509.Ed25519 {
			t.Fatalf("%s presented %d certificates, the first of key type %v; want one Ed25519", addr, len(certs), certs[0].PublicKeyAlgorithm)
		}
	}
}

// TestNoClientCertificate: a client without a certificate fails the TLS
// handshake with alert 116 (certificate_required), which QUIC carries as the
// transport error 0x174 (CRYPTO_ERROR 0x100 + 116), not as an application
// close code (§3). TLS 1.3 lets the client finish first, so it may see the
// error only on its first stream.
func TestNoClientCertificate(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	tc := newKey(t).ClientTLS(d.Fingerprint(), nil)
	tc.Certificates = nil
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	conn, err := dialWith(t, d.Addr().String(), tc)
	if err == nil {
		select {
		case <-conn.Context().Done():
			err = context.Cause(conn.Context())
		case <-testCtx(t).Done():
			t.Fatal("the connection of a client without a certificate stayed open")
		}
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.TransportErrorCode(0x100+116) || !te.Remote {
		t.Fatalf("got %v, want the server's transport error 0x174 (TLS alert 116)", err)
	}
}

// TestALPNNegotiation: a client may offer protocols besides huddle/1 (a
// newer one first, §11); the server selects huddle/1. Offering none it
// speaks fails the handshake with TLS alert 120, transport error 0x178.
func TestALPNNegotiation(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	tc := newKey(t).ClientTLS(d.Fingerprint(), nil)
	tc.NextProtos = []string{"huddle/2", wire.ALPN}
	conn, err := dialWith(t, d.Addr().String(), tc)
	must(t, err)
	if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != wire.ALPN {
		t.Fatalf("negotiated %q, want %q", got, wire.ALPN)
	}
	(&peer{t: t, conn: conn}).info(gid(d))

	for _, protos := range [][]string{{"huddle/2"}, nil} {
		tc := newKey(t).ClientTLS(d.Fingerprint(), nil)
		tc.NextProtos = protos
		_, err := dialWith(t, d.Addr().String(), tc)
		var te *quic.TransportError
		if !errors.As(err, &te) || te.ErrorCode != quic.TransportErrorCode(0x100+120) {
			t.Errorf("offering %q: %v, want transport error 0x178 (TLS alert 120)", protos, err)
		}
	}
}

// TestNoUnidirectionalStreams: servers grant no unidirectional streams
// (initial_max_streams_uni 0), so a client cannot open one at all (§3).
func TestNoUnidirectionalStreams(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	str, err := p.conn.OpenUniStream()
	var limit *quic.StreamLimitReachedError
	if err == nil || !errors.As(err, &limit) {
		if str != nil {
			str.CancelWrite(0)
		}
		t.Fatalf("OpenUniStream: %v, want the stream limit reached (no credit granted)", err)
	}
	p.info(gid(d))
}

// TestEnvelopeRules: what a server answers for envelopes §4 and §5
// describe: an empty frame and an envelope without an op are bad_request,
// args of null are absent, a map key of a type no field could have (a
// byte string) is bad_request with a message in the protocol's words.
func TestEnvelopeRules(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	p := dial(t, r.Addr(), r.Fingerprint(), nil)
	for _, tc := range []struct {
		name string
		raw  []byte
		want wire.Code // 0: a Result
	}{
		{"N = 0", header(0), wire.CodeBadRequest},
		{"{}", frameOf([]byte{0xa0}), wire.CodeBadRequest},
		{"args without an op", frameOf([]byte{0xa1, 0x01, 0xa0}), wire.CodeBadRequest},
		{"null op", frameOf([]byte{0xa2, 0x00, 0xf6, 0x01, 0xa0}), wire.CodeBadRequest},
		{"op 0", frameOf([]byte{0xa1, 0x00, 0x00}), wire.CodeUnsupported},
		{"list with null args", frameOf([]byte{0xa2, 0x00, 0x04, 0x01, 0xf6}), 0},
		{"list with undefined args", frameOf([]byte{0xa2, 0x00, 0x04, 0x01, 0xf7}), 0},
		{"list with a byte-string key", frameOf([]byte{0xa2, 0x00, 0x04, 0x01, 0xa1, 0x41, 0x01, 0x00}), wire.CodeBadRequest},
		// Text and negative keys are never fields of huddle/1, but are
		// keys a receiver does not know, and ignored as such (§5).
		{"list with a text key", frameOf([]byte{0xa2, 0x00, 0x04, 0x01, 0xa1, 0x61, 0x61, 0x00}), 0},
		{"list with a negative key", frameOf([]byte{0xa2, 0x00, 0x04, 0x01, 0xa1, 0x20, 0x00}), 0},
	} {
		fs := p.frames(p.open(tc.raw))
		if len(fs) != 1 {
			t.Fatalf("%s: %d frames, want 1", tc.name, len(fs))
		}
		switch f := fs[0]; {
		case tc.want == 0 && f.kind != wire.KindResult:
			t.Errorf("%s: got %v (%v), want a Result", tc.name, f.kind, f.err)
		case tc.want != 0 && (f.kind != wire.KindError || f.err.Code != tc.want):
			t.Errorf("%s: got %v (%v), want %v", tc.name, f.kind, f.err, tc.want)
		case f.err != nil && (strings.Contains(f.err.Message, "cbor") || strings.Contains(f.err.Message, "Go ")):
			t.Errorf("%s: message %q speaks of the implementation, not the protocol", tc.name, f.err.Message)
		}
	}
}

// TestRegisterLengthLimits: an address over 64 bytes is too_large, as a
// name over 64 bytes is (§7.1); an empty one is bad_request.
func TestRegisterLengthLimits(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	p := dial(t, r.Addr(), r.Fingerprint(), nil)
	for _, tc := range []struct {
		reg  wire.Register
		want wire.Code
	}{
		{wire.Register{Name: "x", Addrs: []string{strings.Repeat("a", wire.MaxAddrBytes+1)}}, wire.CodeTooLarge},
		{wire.Register{Name: strings.Repeat("n", wire.MaxNameBytes+1), Port: 1}, wire.CodeTooLarge},
		{wire.Register{Name: "x", Addrs: []string{""}}, wire.CodeBadRequest},
	} {
		tc.reg.Group = uuid.New()
		wantCode(t, p.call(wire.OpRegister, tc.reg, nil), tc.want)
	}
	must(t, p.call(wire.OpRegister, wire.Register{Group: uuid.New(), Name: "x", Addrs: []string{strings.Repeat("a", wire.MaxAddrBytes-2) + ":1"}}, nil))
}

// TestSendBurstReported: info's send_burst is at least max_batch when the
// daemon limits the send rate, and 0 with send_rate_milli when it does not
// (§8.1: no rate, no bucket).
func TestSendBurstReported(t *testing.T) {
	for _, tc := range []struct {
		cfg        Config
		rate       uint64
		burstLeast uint64
	}{
		{Config{}, uint64(DefaultSendRate * 1000), DefaultMaxBatch},
		{Config{MaxBatch: 8, SendBurst: 8, SendRate: 2}, 2000, 8},
		{Config{SendRate: -1}, 0, 0},
	} {
		d, _ := startGroupDaemon(t, tc.cfg)
		l := dial(t, d.Addr(), d.Fingerprint(), nil).info(gid(d)).Limits
		if l.SendRateMilli != tc.rate || l.SendBurst < tc.burstLeast || l.SendBurst < l.MaxBatch && tc.rate != 0 || tc.rate == 0 && l.SendBurst != 0 {
			t.Errorf("config %+v: send_rate_milli %d, send_burst %d, max_batch %d; want rate %d and a burst of at least max_batch (0 when unlimited)",
				tc.cfg, l.SendRateMilli, l.SendBurst, l.MaxBatch, tc.rate)
		}
	}
}

// TestShuttingDown: what §3 says of a graceful shutdown: a watch ends with
// the Error unavailable, then the connection closes with code 0x2; no
// single-reply operation answers unavailable for it.
func TestShuttingDown(t *testing.T) {
	d, stop := startGroupDaemon(t, Config{})
	p := joined(t, d, "watcher")
	str := p.open(request(t, wire.OpWatch, wire.Watch{Group: gid(d)}))
	if f, err := readFrame(str); err != nil || f.kind != wire.KindStart {
		t.Fatalf("watch: %+v, %v; want Start", f, err)
	}
	closed := make(chan struct{})
	go func() { stop(); close(closed) }()
	var last frame
	for {
		f, err := readFrame(str)
		if err != nil {
			t.Fatalf("watch during shutdown: %v after %+v, want an Error frame", err, last)
		}
		if f.kind == wire.KindError {
			if f.err.Code != wire.CodeUnavailable {
				t.Fatalf("watch ended with %v, want unavailable", f.err)
			}
			break
		}
		last = f
	}
	select {
	case <-p.conn.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the connection stayed open after shutdown")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(p.conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != wire.ConnShutdown || !ae.Remote {
		t.Fatalf("connection ended with %v, want the server's close code 0x2", err)
	}
	<-closed
}

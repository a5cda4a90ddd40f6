package conformance

// The client: QUIC from golang.org/x/net/quic, TLS from crypto/tls, by
// PROTOCOL.md §2 (identity and pinning), §3 (one stream per operation) and
// §4 (frames).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/quic"
	"golang.org/x/net/quic/qlog"
)

const (
	alpn         = "huddle/1"
	maxFrameSize = 1 << 20 // §4
)

// fingerprint is a key's identity: SHA-256 of its certificate's
// SubjectPublicKeyInfo (§2).
type fingerprint [32]byte

var fpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// String is the text form of §2: lowercase base32, 13 groups of 4.
func (f fingerprint) String() string {
	s := strings.ToLower(fpEncoding.EncodeToString(f[:]))
	var groups []string
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:i+4])
	}
	return strings.Join(groups, "-")
}

// parseFingerprint reads the text form, upper case and missing dashes
// accepted, anything else refused (§2).
func parseFingerprint(s string) (fingerprint, error) {
	var f fingerprint
	letters := strings.ToUpper(strings.ReplaceAll(s, "-", ""))
	if len(letters) != 52 {
		return f, fmt.Errorf("fingerprint %q: %d letters, want 52", s, len(letters))
	}
	b, err := fpEncoding.DecodeString(letters)
	if err != nil || len(b) != 32 {
		return f, fmt.Errorf("fingerprint %q: %v", s, err)
	}
	copy(f[:], b)
	if f.String() != strings.ToLower(insertDashes(letters)) {
		return f, fmt.Errorf("fingerprint %q: not canonical", s)
	}
	return f, nil
}

func insertDashes(s string) string {
	var groups []string
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:min(i+4, len(s))])
	}
	return strings.Join(groups, "-")
}

// peer is one user: an Ed25519 key with its certificate, and a QUIC
// endpoint of its own on 127.0.0.1.
type peer struct {
	cert tls.Certificate
	fp   fingerprint
	ep   *quic.Endpoint
}

// newPeer makes a user with a fresh key. Its certificate is self-signed
// and its dates are whatever: §2 says no one checks them.
func newPeer(t testing.TB) *peer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return peerOf(t, priv)
}

// peerOfKeyFile makes a user of the Ed25519 key in a PEM file (PKCS #8),
// as `huddle id` writes it: a daemon's key, to ask what only its key may.
func peerOfKeyFile(t testing.TB, path string) *peer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		t.Fatalf("%s holds a %T, want an Ed25519 key", path, key)
	}
	return peerOf(t, priv)
}

// peerOf makes a user of key priv.
func peerOf(t testing.TB, priv ed25519.PrivateKey) *peer {
	t.Helper()
	pub := priv.Public()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(0, 0), NotAfter: time.Unix(0, 0).AddDate(200, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := quic.Listen("udp", "127.0.0.1:0", nil) // nil: it accepts no connections
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ep.Close(ctx)
	})
	return &peer{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: cert},
		fp:   sha256.Sum256(cert.RawSubjectPublicKeyInfo),
		ep:   ep,
	}
}

// errPinMismatch: the server presented another key than the one pinned.
var errPinMismatch = errors.New("server key does not match the pinned fingerprint")

// tlsConfig is §2's: our certificate, the ALPNs offered, no chain or name
// checks, and the server's key checked against pin after the handshake.
func (p *peer) tlsConfig(pin fingerprint, protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{p.cert},
		NextProtos:         protos,
		ServerName:         "huddle",
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server presented no certificate")
			}
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if sha256.Sum256(c.RawSubjectPublicKeyInfo) != pin {
				return errPinMismatch
			}
			return nil
		},
	}
}

// conn is a connection to one server, whose key was pinned.
type conn struct {
	q    *quic.Conn
	addr string
	// ended is cancelled, with the reason as its cause, when the
	// connection ends. Every stream's context ends with it: an x/net/quic
	// stream opened after the peer closed the connection (its
	// CONNECTION_CLOSE arrived while the connection drains) is never told,
	// and a read on it would wait for its own deadline.
	ended   context.Context
	end     context.CancelCauseFunc
	watcher sync.WaitGroup
}

var errClosedHere = errors.New("connection closed by this client")

// dial connects to addr and checks that its key is pin.
func (p *peer) dial(ctx context.Context, addr string, pin fingerprint) (*conn, error) {
	return p.dialWith(ctx, addr, p.tlsConfig(pin, alpn))
}

func (p *peer) dialWith(ctx context.Context, addr string, tc *tls.Config) (*conn, error) {
	q, err := p.ep.Dial(ctx, "udp", addr, &quic.Config{
		TLSConfig: tc,
		// §3: clients that keep a connection open send PINGs more often
		// than the server's idle timeout (30 s by default).
		KeepAlivePeriod: 5 * time.Second,
		// Servers never open streams (§3).
		MaxBidiRemoteStreams: -1,
		MaxUniRemoteStreams:  -1,
		QLogLogger:           qlogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if got := q.ConnectionState().NegotiatedProtocol; got != alpn {
		q.Abort(nil)
		return nil, fmt.Errorf("dial %s: ALPN %q, want %q", addr, got, alpn)
	}
	c := &conn{q: q, addr: addr}
	c.ended, c.end = context.WithCancelCause(context.Background())
	c.watcher.Add(1)
	go func() {
		defer c.watcher.Done()
		err := q.Wait(c.ended)
		if err == nil {
			err = errors.New("the server closed the connection (no error)")
		}
		c.end(fmt.Errorf("connection to %s ended: %w", addr, err))
	}()
	return c, nil
}

// mustDial dials and closes the connection when the test ends.
func (p *peer) mustDial(t testing.TB, addr string, pin fingerprint) *conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.dial(ctx, addr, pin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// close closes the connection and waits for its watcher.
func (c *conn) close() {
	c.q.Abort(nil)
	c.end(errClosedHere)
	c.watcher.Wait()
}

// frame prefixes an item with its length (§4).
func frame(item []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(item))), item...)
}

// request encodes a request envelope {0: op, 1: args} (§5).
func request(op uint64, args cmap) []byte {
	return frame(encodeItem(cmap{0: op, 1: args}))
}

// stream is one operation's stream.
type stream struct {
	s   *quic.Stream
	c   *conn
	ctx context.Context // the operation's, ended with the connection too
	// release lets go of ctx once the stream is done with.
	release func()
}

func (s *stream) done() { s.release() }

// open opens a stream, writes raw (normally one request frame) and ends
// the sending side. A write refused by the server's STOP_SENDING is not
// the outcome (§3 "Refused before the end"): the reply is still read, and
// the write's error is returned beside the stream for tests to check.
func (c *conn) open(ctx context.Context, raw []byte) (*stream, error, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(c.ended, func() { cancel(context.Cause(c.ended)) })
	release := func() { unhook(); cancel(nil) }
	s, err := c.q.NewStream(ctx)
	if err != nil {
		err = c.why(ctx, err)
		release()
		return nil, nil, fmt.Errorf("open stream: %w", err)
	}
	s.SetReadContext(ctx)
	s.SetWriteContext(ctx)
	_, werr := s.Write(raw)
	if werr == nil {
		werr = s.CloseWrite() // FIN, after what was written
	}
	return &stream{s: s, c: c, ctx: ctx, release: release}, werr, nil
}

// why adds to a stream's err why the stream's context or the connection
// ended, if one did: the connection's end (a CRYPTO_ERROR, a close code)
// says more than "connection closed" or "context canceled". x/net/quic
// may fail a stream before the connection's watcher has heard why the
// connection ended: that is waited for, a moment at most.
func (c *conn) why(ctx context.Context, err error) error {
	var se quic.StreamError
	if errors.As(err, &se) {
		return err // the peer's reset: the stream's own outcome
	}
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		select {
		case <-c.ended.Done():
		case <-time.After(time.Second):
		}
		cause = context.Cause(c.ended)
	}
	if cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// reply is one response frame {0: kind, 1: body}.
type reply struct {
	kind uint64
	body cmap
}

// Response kinds (§5).
const (
	kindResult    = 1
	kindError     = 2
	kindMessages  = 3
	kindEnd       = 4
	kindHeartbeat = 5
	kindGap       = 6
	kindStart     = 7
)

// next reads the next response frame; io.EOF when the server ended the
// stream between frames.
func (s *stream) next() (reply, error) {
	rep, err := s.read()
	if err != nil {
		if err != io.EOF {
			err = s.c.why(s.ctx, err)
		}
		s.done()
	}
	return rep, err
}

func (s *stream) read() (reply, error) {
	var hdr [4]byte
	n, err := io.ReadFull(s.s, hdr[:])
	if n == 0 && err == io.EOF {
		return reply{}, io.EOF
	}
	if err != nil {
		return reply{}, fmt.Errorf("frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size == 0 || size > maxFrameSize { // checked before allocating (§4)
		return reply{}, fmt.Errorf("frame of %d bytes", size)
	}
	item := make([]byte, size)
	if _, err := io.ReadFull(s.s, item); err != nil {
		return reply{}, fmt.Errorf("frame of %d bytes: %w", size, err)
	}
	v, err := decodeItem(item)
	if err != nil {
		return reply{}, err
	}
	env, ok := v.(cmap)
	if !ok {
		return reply{}, fmt.Errorf("reply is a %T, want a map", v)
	}
	if _, ok := env[0]; !ok {
		return reply{}, errors.New("reply without a kind (key 0)")
	}
	r := reader{m: env}
	rep := reply{kind: r.uint(0), body: r.cmap(1)}
	return rep, r.err
}

// cancel gives up on the operation: both directions, code 0x1 (§3).
func (s *stream) cancel() {
	s.s.StopSending(1)
	s.s.Reset(1)
	s.done()
}

// protoError is an Error frame's body (§9).
type protoError struct {
	code       uint64
	message    string
	retryAfter uint64
	epoch      uint64
	leader     *replica
	replicas   []replica // key 6: the members that serve the group (§13)
	unchanged  bool      // key 7: the server did nothing of the request
}

// Error codes (§9).
const (
	codeInternal      = 1
	codeBadRequest    = 2
	codeUnauthorized  = 3
	codeNotMember     = 4
	codeNotFound      = 5
	codeTooLarge      = 6
	codeRateLimited   = 7
	codeUnavailable   = 8
	codeUnsupported   = 9
	codeEpochMismatch = 10
)

func (e *protoError) Error() string {
	s := fmt.Sprintf("error %d: %s", e.code, e.message)
	if e.leader != nil {
		s += fmt.Sprintf(" (leader %s at %s)", e.leader.fp, e.leader.addr)
	}
	return s
}

func decodeError(body cmap) (*protoError, error) {
	r := reader{m: body}
	e := &protoError{code: r.uint(1), message: r.text(2), retryAfter: r.uint(3), epoch: r.uint(4), unchanged: r.bool(7)}
	if _, ok := body[5]; ok {
		rep, err := decodeReplica(r.cmap(5))
		r.keep(err)
		e.leader = &rep
	}
	for _, m := range r.maps(6) {
		rep, err := decodeReplica(m)
		r.keep(err)
		e.replicas = append(e.replicas, rep)
	}
	if r.err == nil && (e.code == 0 || e.code > 65535) {
		r.err = fmt.Errorf("error code %d", e.code)
	}
	return e, r.err
}

// replica is a cell's member (§13).
type replica struct {
	addr       string
	fp         fingerprint
	leader     bool
	catchingUp bool
}

func decodeReplica(m cmap) (replica, error) {
	r := reader{m: m}
	rep := replica{addr: r.text(1), leader: r.bool(3), catchingUp: r.bool(4)}
	copy(rep.fp[:], r.bytes(2, 32))
	return rep, r.err
}

// roundTrip runs a single-reply operation: one Result, or one Error
// returned as *protoError; either must be the last frame.
func (c *conn) roundTrip(ctx context.Context, raw []byte) (cmap, error) {
	s, _, err := c.open(ctx, raw)
	if err != nil {
		return nil, err
	}
	rep, err := s.next()
	if err != nil {
		s.cancel()
		return nil, err
	}
	if _, err := s.next(); err != io.EOF {
		s.cancel()
		return nil, fmt.Errorf("a frame (or %v) after the reply, want the end of the stream", err)
	}
	switch rep.kind {
	case kindResult:
		return rep.body, nil
	case kindError:
		e, err := decodeError(rep.body)
		if err != nil {
			return nil, err
		}
		return nil, e
	default:
		return nil, fmt.Errorf("reply of kind %d to a single-reply operation", rep.kind)
	}
}

// call runs op with args as one request.
func (c *conn) call(ctx context.Context, op uint64, args cmap) (cmap, error) {
	return c.roundTrip(ctx, request(op, args))
}

// newID makes a message ID: a UUIDv7 (RFC 9562 §5.7), as §6 asks.
func newID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	id[6] = 0x70 | id[6]&0x0f
	id[8] = 0x80 | id[8]&0x3f
	return id
}

// newUUID makes a random (v4) UUID: a group no daemon hosts.
func newUUID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	id[6] = 0x40 | id[6]&0x0f
	id[8] = 0x80 | id[8]&0x3f
	return id
}

// qlogger is the connections' qlog, when HUDDLE_CONFORMANCE_QLOG names a
// directory for it (doc.go).
func qlogger() *slog.Logger {
	if d := os.Getenv("HUDDLE_CONFORMANCE_QLOG"); d != "" {
		return slog.New(qlog.NewJSONHandler(qlog.HandlerOptions{Dir: d, Level: quic.QLogLevelFrame}))
	}
	return nil
}

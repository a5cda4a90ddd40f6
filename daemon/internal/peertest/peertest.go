// Package peertest is a raw protocol client for the tests of the daemons
// and their server: QUIC connections, each with a key of its own, that
// speak huddle's frames directly (PROTOCOL.md), and the few helpers around
// them. Only tests import it.
package peertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// Timeout bounds each network step of a test, so a bug fails the test
// instead of hanging it. It is not a timing assertion.
const Timeout = 20 * time.Second

// Logger logs to the test's output, at debug level; once the test has
// ended (a daemon's goroutine left running past its Close, logging late),
// to the process's standard error (testlog.Output).
func Logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Output(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Ctx is the test's context, ending after Timeout.
func Ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Frame is one response frame as a test peer read it.
type Frame struct {
	Kind wire.Kind
	Raw  wire.Raw
	Err  *wire.Error // for KindError
}

// Decode decodes the frame's body into v, failing the test if it cannot.
func (f Frame) Decode(t *testing.T, v any) {
	t.Helper()
	if err := f.Raw.Decode(v); err != nil {
		t.Fatalf("decode %v frame: %v", f.Kind, err)
	}
}

// Peer is a raw protocol client: one QUIC connection with its own key,
// speaking frames directly.
type Peer struct {
	T    *testing.T
	ID   *identity.Identity
	Conn *quic.Conn
}

// NewKey returns a new key.
func NewKey(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// KeepAlive is how often a test peer PINGs a server it has heard nothing
// from (quic-go PINGs at half the connection's idle timeout if that is
// sooner): a quarter of the shortest idle timeout the tests give a server
// (2 s, groupd's hostile suite). A test peer is often left idle between
// its steps, for as long as its test's other work takes; under load that
// was 2 s and more, and a server dropped the peer for its silence (the
// hostile suite's empty-streams attack, session 22), failing the test's
// next step with a stateless reset or "no recent network activity". A
// test that wants a connection to idle out dials its own (quic.DialAddr,
// or DialFromWith with no KeepAlivePeriod).
const KeepAlive = 500 * time.Millisecond

// config is a test peer's QUIC configuration: PINGs every KeepAlive, and
// an idle timeout of its own longer than any server's in the tests.
func config() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: KeepAlive}
}

// Dial connects to addr with key id (a new one if nil), pinning pin. The
// connection is kept alive (KeepAlive).
func Dial(t *testing.T, addr net.Addr, pin wire.Fingerprint, id *identity.Identity) *Peer {
	t.Helper()
	if id == nil {
		id = NewKey(t)
	}
	conn, err := quic.DialAddr(Ctx(t), addr.String(), id.ClientTLS(pin, nil), config())
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return &Peer{T: t, ID: id, Conn: conn}
}

// DialFrom connects to addr from the local address local (another
// loopback address: another source address to the server), with a new
// key, kept alive as Dial's.
func DialFrom(t *testing.T, local string, addr net.Addr, pin wire.Fingerprint) *Peer {
	t.Helper()
	return DialFromWith(t, local, addr, pin, config())
}

// DialFromWith is DialFrom with the connection's QUIC configuration.
func DialFromWith(t *testing.T, local string, addr net.Addr, pin wire.Fingerprint, cfg *quic.Config) *Peer {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)})
	Must(t, err)
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	id := NewKey(t)
	conn, err := tr.Dial(Ctx(t), addr, id.ClientTLS(pin, nil), cfg)
	Must(t, err)
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return &Peer{T: t, ID: id, Conn: conn}
}

// Open opens a stream and writes raw as the request bytes, then ends the
// stream's send side.
func (p *Peer) Open(raw []byte) *quic.Stream {
	p.T.Helper()
	str, err := p.Conn.OpenStreamSync(Ctx(p.T))
	if err != nil {
		p.T.Fatalf("open stream: %v", err)
	}
	if _, err := str.Write(raw); err != nil {
		p.T.Fatalf("write request: %v", err)
	}
	str.Close()
	return str
}

// Request encodes a request frame.
func Request(t *testing.T, op wire.Op, args any) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, uint64(op), args)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ReadFrame reads the next response frame; io.EOF at the stream's end.
func ReadFrame(str *quic.Stream) (Frame, error) {
	str.SetReadDeadline(time.Now().Add(Timeout))
	kind, raw, err := wire.ReadResponse(str, nil)
	var we *wire.Error
	if errors.As(err, &we) {
		return Frame{Kind: wire.KindError, Raw: raw, Err: we}, nil
	}
	return Frame{Kind: kind, Raw: raw}, err
}

// Frames reads every frame of a stream until its end.
func (p *Peer) Frames(str *quic.Stream) []Frame {
	p.T.Helper()
	var fs []Frame
	for {
		f, err := ReadFrame(str)
		if err == io.EOF {
			return fs
		}
		if err != nil {
			p.T.Fatalf("read reply: %v (after %d frames)", err, len(fs))
		}
		fs = append(fs, f)
	}
}

// Do performs one operation and returns every reply frame.
func (p *Peer) Do(op wire.Op, args any) []Frame {
	p.T.Helper()
	return p.Frames(p.Open(Request(p.T, op, args)))
}

// Call performs a single-reply operation: it decodes the Result into out
// (if not nil) or returns the Error frame's error.
func (p *Peer) Call(op wire.Op, args any, out any) error {
	p.T.Helper()
	fs := p.Do(op, args)
	if len(fs) != 1 {
		p.T.Fatalf("%v: got %d frames, want 1", op, len(fs))
	}
	switch f := fs[0]; f.Kind {
	case wire.KindError:
		return f.Err
	case wire.KindResult:
		if out != nil {
			f.Decode(p.T, out)
		}
		return nil
	default:
		p.T.Fatalf("%v: got a frame of kind %d, want a result", op, f.Kind)
		return nil
	}
}

// Must fails the test if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// WantCode fails the test unless err is a *wire.Error with code want.
func WantCode(t *testing.T, err error, want wire.Code) *wire.Error {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != want {
		t.Fatalf("got error %v, want code %v", err, want)
	}
	return we
}

// Eventually polls cond until it holds, failing the test after Timeout.
func Eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// OnHungDisk runs f (a daemon's Close, or a wait for its Serve) while a
// disk it uses does not answer, and returns its error; if f still waits a
// minute, it lets the disk go (release), so that what waits on it ends, and
// fails the test: f waited for the disk, which the daemons' stops must not.
func OnHungDisk(t testing.TB, what string, f func() error, release func()) error {
	t.Helper()
	returned := make(chan error, 1)
	go func() { returned <- f() }()
	select {
	case err := <-returned:
		return err
	case <-time.After(time.Minute):
		release()
		t.Fatalf("%s still waits a minute on a disk that does not answer", what)
		return nil
	}
}

// Hook is a log handler that runs do, once, as the first record match
// takes is logged (before passing it on to next), and counts the records
// match takes: a test holds a daemon's goroutine where it logs (do waits),
// or acts there. The handlers derived from it (WithAttrs, WithGroup) share
// the once and the count.
type Hook struct {
	next    slog.Handler
	match   func(slog.Record) bool
	do      func()
	once    *sync.Once
	matched *atomic.Int32
}

// NewHook returns a Hook over next.
func NewHook(next slog.Handler, match func(slog.Record) bool, do func()) *Hook {
	return &Hook{next: next, match: match, do: do, once: new(sync.Once), matched: new(atomic.Int32)}
}

// Message matches the records whose message is msg.
func Message(msg string) func(slog.Record) bool {
	return func(rec slog.Record) bool { return rec.Message == msg }
}

// Matched is how many records match has taken.
func (h *Hook) Matched() int { return int(h.matched.Load()) }

func (h *Hook) Enabled(context.Context, slog.Level) bool { return true }

func (h *Hook) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *Hook) WithGroup(g string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(g)
	return &c
}

func (h *Hook) Handle(ctx context.Context, rec slog.Record) error {
	if h.match(rec) {
		h.matched.Add(1)
		h.once.Do(h.do)
	}
	return h.next.Handle(ctx, rec)
}

package groupd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// The group daemon's tests speak to it through a raw protocol peer of
// their own (peer, below, with the operations' helpers in the tests beside
// it), built on the daemons' shared one (daemon/internal/peertest).

// testTimeout bounds each network step of a test, so a bug fails the test
// instead of hanging it. It is not a timing assertion.
const testTimeout = peertest.Timeout

func testLogger(t *testing.T) *slog.Logger { return peertest.Logger(t) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	return peertest.Ctx(t)
}

// frame is one response frame as a test peer read it.
type frame struct {
	kind wire.Kind
	raw  wire.Raw
	err  *wire.Error // for KindError
}

// decode decodes the frame's body into v, failing the test if it cannot.
func (f frame) decode(t *testing.T, v any) {
	t.Helper()
	if err := f.raw.Decode(v); err != nil {
		t.Fatalf("decode %v frame: %v", f.kind, err)
	}
}

// peer is a raw protocol client: one QUIC connection with its own key,
// speaking frames directly.
type peer struct {
	t    *testing.T
	id   *identity.Identity
	conn *quic.Conn
}

func newKey(t *testing.T) *identity.Identity {
	t.Helper()
	return peertest.NewKey(t)
}

// dial connects to addr with key id (a new one if nil), pinning pin.
func dial(t *testing.T, addr net.Addr, pin wire.Fingerprint, id *identity.Identity) *peer {
	t.Helper()
	p := peertest.Dial(t, addr, pin, id)
	return &peer{t: t, id: p.ID, conn: p.Conn}
}

// open opens a stream and writes raw as the request bytes, then ends the
// stream's send side.
func (p *peer) open(raw []byte) *quic.Stream {
	p.t.Helper()
	str, err := p.conn.OpenStreamSync(testCtx(p.t))
	if err != nil {
		p.t.Fatalf("open stream: %v", err)
	}
	if _, err := str.Write(raw); err != nil {
		p.t.Fatalf("write request: %v", err)
	}
	str.Close()
	return str
}

func request(t *testing.T, op wire.Op, args any) []byte {
	t.Helper()
	return peertest.Request(t, op, args)
}

// readFrame reads the next response frame; io.EOF at the stream's end.
func readFrame(str *quic.Stream) (frame, error) {
	f, err := peertest.ReadFrame(str)
	return frame{kind: f.Kind, raw: f.Raw, err: f.Err}, err
}

// nextFrame reads str's next frame in the background, a read error as the
// frame's err: a test reads so the frame a daemon writes as it stops,
// which is lost if read once the connection is closed.
func nextFrame(str *quic.Stream) <-chan frame {
	ended := make(chan frame, 1)
	go func() {
		f, err := readFrame(str)
		if err != nil {
			f.err = wire.ToError(err)
		}
		ended <- f
	}()
	return ended
}

// frames reads every frame of a stream until its end.
func (p *peer) frames(str *quic.Stream) []frame {
	p.t.Helper()
	var fs []frame
	for {
		f, err := readFrame(str)
		if err == io.EOF {
			return fs
		}
		if err != nil {
			p.t.Fatalf("read reply: %v (after %d frames)", err, len(fs))
		}
		fs = append(fs, f)
	}
}

// do performs one operation and returns every reply frame.
func (p *peer) do(op wire.Op, args any) []frame {
	p.t.Helper()
	return p.frames(p.open(request(p.t, op, args)))
}

// call performs a single-reply operation: it decodes the Result into out
// (if not nil) or returns the Error frame's error.
func (p *peer) call(op wire.Op, args any, out any) error {
	p.t.Helper()
	fs := p.do(op, args)
	if len(fs) != 1 {
		p.t.Fatalf("%v: got %d frames, want 1", op, len(fs))
	}
	switch f := fs[0]; f.kind {
	case wire.KindError:
		return f.err
	case wire.KindResult:
		if out != nil {
			f.decode(p.t, out)
		}
		return nil
	default:
		p.t.Fatalf("%v: got a frame of kind %d, want a result", op, f.kind)
		return nil
	}
}

// must fails the test if err is not nil.
func must(t testing.TB, err error) {
	t.Helper()
	peertest.Must(t, err)
}

// wantCode fails the test unless err is a *wire.Error with code want.
func wantCode(t *testing.T, err error, want wire.Code) *wire.Error {
	t.Helper()
	return peertest.WantCode(t, err, want)
}

// eventually polls cond until it holds, failing the test after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	peertest.Eventually(t, what, cond)
}

// size returns how many buckets r keeps.
func (r *rateLimiter) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

// startRegistry starts a registry on 127.0.0.1 port 0, serving until the
// test ends. Zero fields of cfg get test values (StateDir: a new directory).
func startRegistry(t *testing.T, cfg registry.Config) *registry.Daemon {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	r, err := registry.New(cfg)
	must(t, err)
	must(t, r.Listen())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, r.Close())
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// dialFrom connects to addr from the local address local (another
// loopback address: another source address to the daemon).
func dialFrom(t *testing.T, local string, addr net.Addr, pin wire.Fingerprint) *peer {
	t.Helper()
	p := peertest.DialFrom(t, local, addr, pin)
	return &peer{t: t, id: p.ID, conn: p.Conn}
}

func listGroups(t *testing.T, p *peer) wire.Groups {
	t.Helper()
	var g wire.Groups
	must(t, p.call(wire.OpList, wire.List{}, &g))
	return g
}

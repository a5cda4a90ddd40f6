package groupd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// The fuzz targets feed arbitrary bytes to a running server as one
// stream's request, on a connection whose key is a member of the group (so
// that every operation's handler is reached, not only its membership
// check). The server must answer with frames a client can read, never with
// an internal error, and must end the stream; and it must still answer an
// honest request on the same connection afterwards.

// fuzzPeer is a connection to a server under fuzzing.
type fuzzPeer struct {
	conn *quic.Conn
}

func fuzzDial(f *testing.F, addr net.Addr, pin wire.Fingerprint) *fuzzPeer {
	id, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	return fuzzDialAs(f, addr, pin, id)
}

func fuzzDialAs(f *testing.F, addr net.Addr, pin wire.Fingerprint, id *identity.Identity) *fuzzPeer {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr.String(), id.ClientTLS(pin, nil), &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 10 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.CloseWithError(0, "") })
	return &fuzzPeer{conn: conn}
}

// exchange writes raw as a request and reads the reply. It fails t if the
// server answers with an internal error or a frame no client could read,
// or does not end the stream. A watch is cancelled after its Start frame,
// as a client that has seen enough does.
func (p *fuzzPeer) exchange(t *testing.T, raw []byte) (frames []wire.Kind, werr *wire.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	str, err := p.conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if _, err := str.Write(raw); err == nil {
		str.Close()
	}
	str.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		kind, _, err := wire.ReadResponse(str, nil)
		var we *wire.Error
		var se *quic.StreamError
		switch {
		case errors.As(err, &we):
			if we.Code == wire.CodeInternal {
				t.Fatalf("request %x: internal error %q", raw, we.Message)
			}
			return append(frames, wire.KindError), we
		case err == io.EOF:
			return frames, nil
		case errors.As(err, &se) && se.Remote && (se.ErrorCode == wire.StreamTimeout || se.ErrorCode == wire.StreamProtocolViolation):
			return frames, nil // a request that could not be read at all
		case err != nil:
			t.Fatalf("request %x: reading the reply: %v", raw, err)
		}
		frames = append(frames, kind)
		if kind == wire.KindStart {
			str.CancelRead(wire.StreamCancelled)
			str.CancelWrite(wire.StreamCancelled)
			return frames, nil
		}
	}
}

// fuzzSeeds adds valid requests of every operation and the malformed ones
// of the wire package's test data.
func fuzzSeeds(f *testing.F, g wire.UUID) {
	seeds := []struct {
		op  wire.Op
		arg any
	}{
		{wire.OpInfo, wire.GroupRef{Group: g}},
		{wire.OpJoin, wire.Join{Group: g, Name: "fuzz"}},
		{wire.OpJoin, wire.Join{Group: g, Name: "fuzz", Secret: []byte("s")}},
		{wire.OpLeave, wire.GroupRef{Group: g}},
		{wire.OpMembers, wire.GroupRef{Group: g}},
		{wire.OpSend, wire.Send{Group: g, Messages: []wire.Outgoing{{ID: wire.ID{1}, Body: []byte("hi")}, {ID: wire.ID{2}}}}},
		{wire.OpFetch, wire.Fetch{Group: g, After: u64(1), Limit: 2}},
		{wire.OpFetch, wire.Fetch{Group: g, Since: i64(0), Epoch: 7}},
		{wire.OpWatch, wire.Watch{Group: g, After: u64(0)}},
		{wire.OpRegister, wire.Register{Group: g, Name: "fuzz", Addrs: []string{"127.0.0.1:1"}, Members: 1}},
		{wire.OpRenew, wire.Renew{Group: g, Epoch: 1}},
		{wire.OpDeregister, wire.Deregister{Group: g}},
		{wire.OpList, wire.List{}},
	}
	for _, s := range seeds {
		raw, err := wire.AppendFrame(nil, uint64(s.op), s.arg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	files, _ := filepath.Glob(filepath.Join("..", "..", "wire", "testdata", "malformed", "*.hex"))
	for _, path := range files {
		if !strings.HasPrefix(filepath.Base(path), "resp-") {
			f.Add(parseHex(f, path))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 0xa0})
}

// FuzzGroupRequest drives the group daemon's request handling with
// arbitrary request bytes.
func FuzzGroupRequest(f *testing.F) {
	d, err := New(Config{
		Listen:    "127.0.0.1:0",
		StateDir:  f.TempDir(),
		Groups:    []Spec{{Name: "fuzz"}},
		Retention: store.Config{MaxMessages: 1000},
		SendRate:  -1,
		Server:    server.Config{RequestTimeout: time.Second, MaxConnsPerAddr: 4},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	serveForFuzz(f, d.Listen, d.Serve, d.Close)
	g := d.Groups()[0].ID
	id, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	p := fuzzDialAs(f, d.Addr(), d.Fingerprint(), id)
	join, _ := wire.AppendFrame(nil, uint64(wire.OpJoin), wire.Join{Group: g, Name: "fuzzer"})
	info, _ := wire.AppendFrame(nil, uint64(wire.OpInfo), wire.GroupRef{Group: g})
	fuzzSeeds(f, g)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !d.groups[g].isMember(id.Fingerprint()) { // the last input left
			if _, we := p.exchange(t, join); we != nil {
				t.Fatalf("join: %v", we)
			}
		}
		p.exchange(t, raw)
		if kinds, we := p.exchange(t, info); we != nil || len(kinds) != 1 || kinds[0] != wire.KindResult {
			t.Fatalf("after request %x, info got %v %v", raw, kinds, we)
		}
	})
}

// FuzzRegistryRequest drives the registry's request handling with
// arbitrary request bytes.
func FuzzRegistryRequest(f *testing.F) {
	r, err := registry.New(registry.Config{
		Listen:   "127.0.0.1:0",
		StateDir: f.TempDir(),
		Server:   server.Config{RequestTimeout: time.Second},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	serveForFuzz(f, r.Listen, r.Serve, r.Close)
	p := fuzzDial(f, r.Addr(), r.Fingerprint())
	list, _ := wire.AppendFrame(nil, uint64(wire.OpList), wire.List{})
	fuzzSeeds(f, uuid.New())
	f.Fuzz(func(t *testing.T, raw []byte) {
		p.exchange(t, raw)
		if kinds, we := p.exchange(t, list); we != nil || len(kinds) != 1 || kinds[0] != wire.KindResult {
			t.Fatalf("after request %x, list got %v %v", raw, kinds, we)
		}
	})
}

// serveForFuzz listens, serves until the fuzz target ends, then closes.
func serveForFuzz(f *testing.F, listen func() error, serve func(context.Context) error, closeFn func() error) {
	if err := listen(); err != nil {
		f.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(context.Background()) }()
	f.Cleanup(func() {
		closeFn()
		if err := <-errc; err != nil && !errors.Is(err, ErrClosed) {
			f.Errorf("Serve: %v", err)
		}
	})
}

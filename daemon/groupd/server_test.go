package groupd

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	must(t, err)
	return b
}

func header(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// TestMalformedRequests sends requests that break the protocol in each way
// a peer can, on one connection whose stream limit is small: each gets its
// Error frame, the stream's credit comes back, and the daemon goes on
// serving.
func TestMalformedRequests(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{MaxIncomingStreams: 2}})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	g := gid(d)
	info := request(t, wire.OpInfo, wire.GroupRef{Group: g})
	item := func(hexItem string) []byte {
		b := hexBytes(t, hexItem)
		return append(header(uint32(len(b))), b...)
	}
	// Frames larger than a call's first read (1 KiB), one within the
	// pooled request buffer (8 KiB) and one beyond it (daemon/server's
	// requestHeadBytes and pooledRequestBytes).
	send := func(size int) []byte {
		return request(t, wire.OpSend, wire.Send{Group: g, Messages: []wire.Outgoing{{ID: wire.NewID(), Body: make([]byte, size)}}})
	}
	large, huge := send(2<<10), send(16<<10)
	tests := []struct {
		name string
		raw  []byte
		want wire.Code // 0: no frame at all
	}{
		{"nothing", nil, 0}, // no request: no answer (PROTOCOL.md §3)
		{"short header", []byte{0, 0}, wire.CodeBadRequest},
		{"empty frame", header(0), wire.CodeBadRequest},
		{"frame over the limit", header(wire.MaxFrameSize + 1), wire.CodeTooLarge},
		{"truncated frame", append(header(10), 1, 2, 3), wire.CodeBadRequest},
		{"not CBOR", item("ff"), wire.CodeBadRequest},
		{"not a map", item("8110"), wire.CodeBadRequest},                               // [16]
		{"args not a map", item("a200100105"), wire.CodeBadRequest},                    // {0: 16, 1: 5}
		{"duplicate key", item("a200100010"), wire.CodeBadRequest},                     // {0: 16, 0: 16}
		{"group of the wrong type", item("a2001001a10163616263"), wire.CodeBadRequest}, // {0:16, 1:{1:"abc"}}
		{"trailing bytes", append(append([]byte(nil), info...), 'x'), wire.CodeBadRequest},
		{"two frames", append(append([]byte(nil), info...), info...), wire.CodeBadRequest},
		{"large frame from a stranger", large, wire.CodeNotMember},
		{"large frame, trailing bytes", append(append([]byte(nil), large...), 'x'), wire.CodeBadRequest},
		{"large frame, truncated", large[:len(large)-1], wire.CodeBadRequest},
		{"huge frame from a stranger", huge, wire.CodeNotMember},
		{"huge frame, trailing bytes", append(append([]byte(nil), huge...), 'x'), wire.CodeBadRequest},
		{"huge frame, truncated", huge[:len(huge)-1], wire.CodeBadRequest},
		{"unknown op", request(t, 99, wire.GroupRef{Group: g}), wire.CodeUnsupported},
		{"registry op at a group daemon", request(t, wire.OpList, wire.List{}), wire.CodeUnsupported},
		{"op beyond uint16", item("a1001a00010010"), wire.CodeUnsupported}, // {0: 0x10010}: not info (16)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // more than the stream limit: credit must come back
				fs := p.frames(p.open(tt.raw))
				if tt.want == 0 {
					if len(fs) != 0 {
						t.Fatalf("got %+v, want the end of the stream and no frame", fs)
					}
					continue
				}
				if len(fs) != 1 || fs[0].kind != wire.KindError {
					t.Fatalf("got %+v, want one Error frame", fs)
				}
				if fs[0].err.Code != tt.want {
					t.Fatalf("got %v (%v), want %v", fs[0].err.Code, fs[0].err, tt.want)
				}
			}
			p.info(g) // still serving
		})
	}
}

// TestRequestTimeout checks that a stream whose request never ends is
// cancelled with code 0x2 in both directions, and that its credit returns.
func TestRequestTimeout(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{RequestTimeout: 50 * time.Millisecond, MaxIncomingStreams: 1}})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	for range 3 {
		str, err := p.conn.OpenStreamSync(testCtx(t))
		must(t, err)
		_, err = str.Write(request(t, wire.OpInfo, wire.GroupRef{Group: gid(d)})) // no end of stream
		must(t, err)
		_, err = readFrame(str)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != wire.StreamTimeout || !se.Remote {
			t.Fatalf("got %v, want the daemon to reset the stream with code 0x2", err)
		}
		str.CancelWrite(0)
	}
	p.info(gid(d))
}

// TestHeldStreamCreditComesBack checks that the credit a connection holds
// for its finished streams (credit.go) comes back with no reply to carry
// it: streams the peer abandons before their request end without one.
func TestHeldStreamCreditComesBack(t *testing.T) {
	const maxStreams = 8 // credits are held two at a time at most
	d, _ := startGroupDaemon(t, Config{Server: server.Config{MaxIncomingStreams: maxStreams}})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	// Under the request timeout (10 s), which would end waiting streams
	// with a reply and so give held credit back anyway; 5 s, not 2 s:
	// held credit comes back 25 ms after the server has seen the streams
	// end, which a loaded CI machine can hold up for a second or more.
	open := func() *quic.Stream {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		str, err := p.conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatalf("open stream: %v (held credit not given back)", err)
		}
		return str
	}
	abandon := func(str *quic.Stream) {
		str.CancelWrite(0)
		str.CancelRead(0)
	}
	// More abandoned streams than the limit, one after another.
	for range 3 * maxStreams {
		abandon(open())
	}
	// One abandoned stream's credit is held, below the hold limit; then
	// every stream the limit allows is opened and left waiting, so the last
	// of them needs that credit.
	abandon(open())
	waiting := make([]*quic.Stream, maxStreams)
	for i := range waiting {
		waiting[i] = open()
	}
	for _, str := range waiting {
		abandon(str)
	}
	p.info(gid(d))
}

// TestCloseWithPendingRequest checks that Close does not wait for a request
// that has not arrived, and that the peer learns the server is going away.
func TestCloseWithPendingRequest(t *testing.T) {
	d, stop := startGroupDaemon(t, Config{Server: server.Config{RequestTimeout: time.Hour, ShutdownTimeout: time.Hour}})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	str, err := p.conn.OpenStreamSync(testCtx(t))
	must(t, err)
	_, err = str.Write([]byte{0, 0}) // half a header, then nothing
	must(t, err)
	p.info(gid(d)) // the stream above has been accepted by now
	// Close must not wait for the request (it would for an hour).
	closed := make(chan struct{})
	go func() { stop(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatalf("Close waited %v for a request that never comes", testTimeout)
	}
	// Close returning means the server has refused the stream (an
	// unavailable Error frame) and closed the connection with 0x2, not
	// that the peer has taken either in: a read before the close arrives
	// returns the refusal. Once the connection has ended, reads fail.
	select {
	case <-p.conn.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the connection stayed open after Close")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(p.conn.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != wire.ConnShutdown {
		t.Fatalf("the connection ended with %v, want the server's close code 0x2", err)
	}
	if f, err := readFrame(str); err == nil {
		t.Fatalf("read after Close: %+v, want an error", f)
	}
	if err := d.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

package client

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// TestQueuedRequestHandedBack: a small request the flusher cannot write
// without blocking (the connection's flow-control credit is spent, here by
// a large request the server does not read yet) is handed back to its
// caller: the caller's read ends at once (the deadline that wakes it),
// and the caller writes the request itself, once credit comes back, and
// gets its reply.
func TestQueuedRequestHandedBack(t *testing.T) {
	const window = 4096
	srv, tr, ln := rawServer(t, &quic.Config{InitialConnectionReceiveWindow: window, MaxConnectionReceiveWindow: window})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer tr.Close() // and every connection on it
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	defer openGate() // a test that fails before opening it does not hang in wg.Wait
	// The server leaves its first stream (the large request) unread until
	// the gate opens, and answers every other request with a Result.
	wg.Go(func() {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		defer conn.CloseWithError(0, "")
		for first := true; ; first = false {
			st, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				if first {
					<-gate
				}
				if _, err := io.ReadAll(st); err != nil {
					return
				}
				wire.WriteResponse(st, wire.KindResult, wire.Left{WasMember: true})
				st.Close()
			})
		}
	})

	cl := newTestClient(t, Config{})
	defer cl.Close()
	p, err := cl.peer([]string{ln.Addr().String()}, srv.Fingerprint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live, err := p.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn := live.conn
	large, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// All the credit there is, taken at once: Write would leave its last
	// packet's worth for the sender to take later, and the request below
	// could take credit meanwhile (1 run in 3 of the package under load).
	if err := large.TryWriteAll(make([]byte, window)); err != nil {
		t.Fatalf("a write of the connection's whole credit: %v", err)
	}
	large.Close()

	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	frame, err := encodeRequest(wire.OpLeave, wire.GroupRef{Group: wire.UUID{7}})
	if err != nil {
		t.Fatal(err)
	}
	r := p.requests.queue(st, frame) // this caller flushes
	if !r.handedBack.Load() {
		t.Fatal("a request written without flow-control credit was not handed back")
	}
	var b [1]byte
	if _, err := st.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of a handed-back request's stream: %v, want the deadline that wakes it", err)
	}
	openGate() // the server reads the large request: credit comes back
	if handed, err := r.writeHandedBack(); !handed || err != nil {
		t.Fatalf("write of the handed-back request: handed %v, %v", handed, err)
	}
	buf := responseBufs.Get().(*[]byte)
	defer putResponseBuf(buf)
	kind, f, err := readResponse(st, buf)
	if err != nil {
		t.Fatal(err)
	}
	var left wire.Left
	if err := f.Decode(&left); kind != wire.KindResult || err != nil || !left.WasMember {
		t.Fatalf("reply: kind %v, %+v, %v; want a Result with was_member", kind, left, err)
	}
}

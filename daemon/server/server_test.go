package server

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// TestHandlerPanic checks that a panicking handler answers internal and the
// server goes on.
func TestHandlerPanic(t *testing.T) {
	id := peertest.NewKey(t)
	s := New(Config{MaxIncomingStreams: 10, RequestTimeout: time.Second, WriteTimeout: time.Second, ShutdownTimeout: time.Second},
		Setup{Listen: "127.0.0.1:0", Logger: peertest.Logger(t)}, func(ctx context.Context, c *Call) error {
			if c.Op() == wire.OpInfo {
				panic("boom")
			}
			return c.Result(wire.Left{WasMember: true})
		})
	peertest.Must(t, s.Listen(id))
	peertest.Must(t, s.Start())
	t.Cleanup(s.Close)
	p := peertest.Dial(t, s.Addr(), id.Fingerprint(), nil)
	peertest.WantCode(t, p.Call(wire.OpInfo, wire.GroupRef{}, nil), wire.CodeInternal)
	var l wire.Left
	peertest.Must(t, p.Call(wire.OpLeave, wire.GroupRef{}, &l))
	if !l.WasMember {
		t.Fatal("second call not served")
	}
	if err := s.Start(); !errors.Is(err, ErrServing) {
		t.Fatalf("second start: %v", err)
	}
}

// startTestServer runs the shared machinery with handler h.
func startTestServer(t *testing.T, shutdown time.Duration, h Handler) (*Server, *peertest.Peer) {
	t.Helper()
	id := peertest.NewKey(t)
	s := New(Config{MaxIncomingStreams: 10, RequestTimeout: time.Second, WriteTimeout: time.Second, ShutdownTimeout: shutdown},
		Setup{Listen: "127.0.0.1:0", Logger: peertest.Logger(t)}, h)
	peertest.Must(t, s.Listen(id))
	peertest.Must(t, s.Start())
	t.Cleanup(s.Close)
	return s, peertest.Dial(t, s.Addr(), id.Fingerprint(), nil)
}

// TestCloseLetsOperationsFinish checks that an operation in flight when
// Close begins still gets its reply.
func TestCloseLetsOperationsFinish(t *testing.T) {
	entered := make(chan struct{})
	s, p := startTestServer(t, time.Hour, func(ctx context.Context, c *Call) error {
		close(entered)
		<-c.Stopping() // finish only once shutdown has begun
		return c.Result(wire.Left{WasMember: true})
	})
	str := p.Open(peertest.Request(t, wire.OpLeave, wire.GroupRef{}))
	<-entered
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	f, err := peertest.ReadFrame(str)
	peertest.Must(t, err)
	var l wire.Left
	if f.Kind != wire.KindResult {
		t.Fatalf("got %+v, want the result", f)
	}
	f.Decode(t, &l)
	if !l.WasMember {
		t.Fatal("wrong result")
	}
	<-closed
	// A new connection is refused now.
	if _, err := quic.DialAddr(peertest.Ctx(t), s.Addr().String(), p.ID.ClientTLS(wire.Fingerprint{}, nil), &quic.Config{HandshakeIdleTimeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("dial after close succeeded")
	}
}

// requestArriving starts a server (request and shutdown deadlines an hour
// away) and returns it with a stream whose request it is still reading:
// all but the request's last byte sent, and no end of stream.
func requestArriving(t *testing.T) (*Server, *quic.Stream) {
	t.Helper()
	id := peertest.NewKey(t)
	s := New(Config{MaxIncomingStreams: 10, RequestTimeout: time.Hour, WriteTimeout: time.Second, ShutdownTimeout: time.Hour},
		Setup{Listen: "127.0.0.1:0", Logger: peertest.Logger(t)}, func(ctx context.Context, c *Call) error {
			return c.Result(wire.Left{WasMember: true})
		})
	peertest.Must(t, s.Listen(id))
	peertest.Must(t, s.Start())
	t.Cleanup(s.Close)
	p := peertest.Dial(t, s.Addr(), id.Fingerprint(), nil)
	req := peertest.Request(t, wire.OpLeave, wire.GroupRef{})
	str, err := p.Conn.OpenStreamSync(peertest.Ctx(t))
	peertest.Must(t, err)
	_, err = str.Write(req[:len(req)-1])
	peertest.Must(t, err)
	peertest.Eventually(t, "the request read", func() bool { return len(s.shares.readingStreams()) == 1 })
	return s, str
}

// TestCloseCutsRequestReadsShort checks that Close does not wait out the
// request deadline of a stream whose request is still arriving: the read
// ends at once, and the peer is told the server is shutting down.
func TestCloseCutsRequestReadsShort(t *testing.T) {
	s, str := requestArriving(t)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	f, err := peertest.ReadFrame(str)
	peertest.Must(t, err)
	if f.Kind != wire.KindError || f.Err.Code != wire.CodeUnavailable || !strings.Contains(f.Err.Message, "shutting down") {
		t.Fatalf("got %+v (%v), want unavailable: shutting down", f, f.Err)
	}
	if !f.Err.Unchanged {
		// Its request was not read: the client may report it refused,
		// not in doubt (PROTOCOL.md §9, key 7).
		t.Errorf("the refusal of a request not read %+v: not marked unchanged", f.Err)
	}
	<-closed
}

// TestCloseNamesLeader: a server told whom to name (a member of a cell
// that handed its leadership over as it stops) refuses the streams it
// will no longer serve naming that leader, so that clients go there at
// once instead of waiting the refusal's retry_after_ms (in
// internal/jepsen's rolling restarts they waited it, 0.3-0.7 s).
func TestCloseNamesLeader(t *testing.T) {
	s, str := requestArriving(t)
	leader := wire.Replica{Addr: "10.0.0.2:7374", Fingerprint: wire.Fingerprint{2}, Leader: true}
	s.NameLeader(&leader)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	f, err := peertest.ReadFrame(str)
	peertest.Must(t, err)
	if f.Kind != wire.KindError || f.Err.Code != wire.CodeUnavailable || f.Err.Leader == nil || *f.Err.Leader != leader {
		t.Fatalf("got %+v (%v), want unavailable naming %v", f, f.Err, leader)
	}
	<-closed
}

// TestShutdownTimeoutCancelsOperations checks that an operation that does
// not finish within ShutdownTimeout has its context cancelled.
func TestShutdownTimeoutCancelsOperations(t *testing.T) {
	entered, cancelled := make(chan struct{}), make(chan struct{})
	s, p := startTestServer(t, 50*time.Millisecond, func(ctx context.Context, c *Call) error {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return wire.ErrUnavailable
	})
	p.Open(peertest.Request(t, wire.OpLeave, wire.GroupRef{}))
	<-entered
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	// The handler's context ends once the 50 ms grace is over, and close
	// returns then; a deadline turns a regression into a failure here
	// instead of the test binary's timeout.
	for _, ev := range []struct {
		what string
		ch   <-chan struct{}
	}{{"the handler's context ended", cancelled}, {"close returned", closed}} {
		select {
		case <-ev.ch:
		case <-time.After(peertest.Timeout):
			t.Fatalf("%s not within %v of a 50 ms shutdown timeout", ev.what, peertest.Timeout)
		}
	}
	if s.Stuck() {
		t.Error("Stuck after every handler returned")
	}
}

// TestCloseLeavesStuckHandler: a handler that neither ends at the grace
// period nor at its connection's close (stuck in a disk that never
// answers) is waited for stuckWait, then left: Close returns, Stuck says
// so, and the handler's client, never answered, saw its connection close
// with 0x2 (its operation in doubt). Close waited for it for ever until
// session 19.
func TestCloseLeavesStuckHandler(t *testing.T) {
	entered, disk, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	s, p := startTestServer(t, 50*time.Millisecond, func(ctx context.Context, c *Call) error {
		defer close(returned)
		close(entered)
		<-disk // ignores ctx, as an append to a hung disk does
		return c.Result(wire.Left{WasMember: true})
	})
	t.Cleanup(func() {
		// The disk answers: the handler left behind returns, and so do
		// the goroutines that waited for it (goleak).
		close(disk)
		<-returned
		<-s.Stopped()
	})
	str := p.Open(peertest.Request(t, wire.OpLeave, wire.GroupRef{}))
	<-entered
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(peertest.Timeout):
		t.Fatalf("Close still waits %v for a handler stuck in its disk", peertest.Timeout)
	}
	if !s.Stuck() {
		t.Error("Close left a handler running and Stuck says it did not")
	}
	select {
	case <-s.Stopped():
		t.Error("Stopped while a handler Close left still runs")
	default:
	}
	var appErr *quic.ApplicationError
	if _, err := peertest.ReadFrame(str); !errors.As(err, &appErr) || appErr.ErrorCode != wire.ConnShutdown {
		t.Errorf("the stuck operation's client read %v, want its connection closed with 0x2 (in doubt)", err)
	}
}

// TestRetryUnderHandshakeLoad checks that over its handshake threshold the
// server asks connection attempts to prove their address with a Retry, that
// an honest client gets through it, and that finished and failed handshakes
// stop counting.
func TestRetryUnderHandshakeLoad(t *testing.T) {
	id := peertest.NewKey(t)
	s := New(Config{}, Setup{
		Listen: "127.0.0.1:0", retryAbove: -1, // every attempt must retry
		Logger: peertest.Logger(t),
	}, func(ctx context.Context, c *Call) error { return c.Result(wire.Left{WasMember: true}) })
	peertest.Must(t, s.Listen(id))
	peertest.Must(t, s.Start())
	t.Cleanup(s.Close)
	p := peertest.Dial(t, s.Addr(), id.Fingerprint(), nil)
	var l wire.Left
	peertest.Must(t, p.Call(wire.OpLeave, wire.GroupRef{}, &l))
	if s.retries.Load() == 0 {
		t.Fatal("no Retry was asked for")
	}
	// A handshake that fails (wrong ALPN) stops counting too.
	tc := peertest.NewKey(t).ClientTLS(id.Fingerprint(), nil)
	tc.NextProtos = []string{"h3"}
	if c, err := quic.DialAddr(peertest.Ctx(t), s.Addr().String(), tc, &quic.Config{}); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("handshake with the wrong ALPN succeeded")
	}
	peertest.Eventually(t, "no handshake in progress", func() bool { return s.handshakes.Load() == 0 })
}

// TestRefusalLogOnTheDaemonsClock: connections refused over a limit are
// logged at most once a second of the daemon's clock (not the machine's),
// with how many were refused meanwhile; a clock that stepped back logs.
func TestRefusalLogOnTheDaemonsClock(t *testing.T) {
	var logged testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	var r refusalLog
	at := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	lines := func() int { return strings.Count(logged.String(), "connection refused") }
	for i := range 5 {
		r.note(log, at.Add(time.Duration(i)*time.Millisecond), netip.MustParsePrefix("192.0.2.1/32"), wire.Fingerprint{1}, "too many")
	}
	if n := lines(); n != 1 {
		t.Fatalf("5 refusals within a second logged %d lines, want 1:\n%s", n, logged.String())
	}
	r.note(log, at.Add(time.Second), netip.MustParsePrefix("192.0.2.1/32"), wire.Fingerprint{1}, "too many")
	if n := lines(); n != 2 || !strings.Contains(logged.String(), "refused_since_last_logged=4") {
		t.Fatalf("a second later: %d lines, want 2, the second counting 4 not logged:\n%s", n, logged.String())
	}
	r.note(log, at.Add(-time.Hour), netip.MustParsePrefix("192.0.2.1/32"), wire.Fingerprint{1}, "too many")
	if n := lines(); n != 3 {
		t.Fatalf("a clock stepped back: %d lines, want 3 (it logs)", n)
	}
}

// TestTryResult: a reply written by TryResult on another goroutine, while
// the handler waits, reaches the peer whole with the stream's end, and
// nothing the handler does after cuts it off (an error it returns is
// logged, not written over a reply already queued); on a stream the peer
// gave up, TryResult writes nothing and says so, and the handler answers
// as usual.
func TestTryResult(t *testing.T) {
	type outcome struct {
		ok, answered bool
	}
	outcomes := make(chan outcome, 1)
	var logged testlog.Buffer
	id := peertest.NewKey(t)
	s := New(Config{MaxIncomingStreams: 10, RequestTimeout: time.Second, WriteTimeout: time.Second, ShutdownTimeout: time.Second},
		Setup{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logged, nil))}, func(ctx context.Context, c *Call) error {
			var req wire.Join
			if err := c.Decode(&req); err != nil {
				return err
			}
			if req.Name == "gone" {
				<-c.Gone() // the peer stopped reading
			}
			done := make(chan bool)
			go func() { done <- c.TryResult(wire.Left{WasMember: true}) }()
			ok := <-done
			outcomes <- outcome{ok, c.Answered()}
			switch {
			case !ok:
				return c.Result(wire.Left{})
			case req.Name == "fails":
				return wire.ErrUnavailable // after the reply: must not reach the peer
			}
			return nil
		})
	peertest.Must(t, s.Listen(id))
	peertest.Must(t, s.Start())
	t.Cleanup(s.Close)
	p := peertest.Dial(t, s.Addr(), id.Fingerprint(), nil)
	for _, name := range []string{"answered", "fails"} {
		var l wire.Left
		peertest.Must(t, p.Call(wire.OpJoin, wire.Join{Group: wire.UUID{1}, Name: name}, &l)) // one Result, then the end
		if !l.WasMember {
			t.Fatalf("%s: got %+v, want TryResult's reply", name, l)
		}
		if o := <-outcomes; !o.ok || !o.answered {
			t.Fatalf("%s: TryResult %v, Answered %v; want both true", name, o.ok, o.answered)
		}
	}
	peertest.Eventually(t, "the error after the reply logged", func() bool {
		return strings.Contains(logged.String(), "operation failed after it was answered")
	})
	str := p.Open(peertest.Request(t, wire.OpJoin, wire.Join{Group: wire.UUID{1}, Name: "gone"}))
	str.CancelRead(0x100)
	if o := <-outcomes; o.ok || o.answered {
		t.Fatalf("on a stream the peer stopped reading: TryResult %v, Answered %v; want both false", o.ok, o.answered)
	}
}

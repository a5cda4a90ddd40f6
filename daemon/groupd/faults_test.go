package groupd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// serveWith starts a group daemon whose handler is wrap(the daemon's own),
// for tests that inject faults between the network and the operations.
func serveWith(t *testing.T, cfg Config, wrap func(next server.Handler) server.Handler) *Daemon {
	t.Helper()
	cfg.StateDir = orDefault(cfg.StateDir, t.TempDir())
	cfg.Listen = orDefault(cfg.Listen, "127.0.0.1:0")
	if len(cfg.Groups) == 0 {
		cfg.Groups = []Spec{{Name: "general"}}
	}
	cfg.Logger = logger(orDefault(cfg.Logger, testLogger(t)))
	cfg.wrap = wrap
	d, err := New(cfg)
	must(t, err)
	must(t, d.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, d.Close())
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return d
}

func newTestClient(t *testing.T) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Identity: newKey(t), Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestSendSurvivesDroppedConnection drops the client's connection after
// the daemon has stored a send and before its acknowledgment can leave:
// the client retries on a new connection with the same message IDs, gets
// the original sequence number back, and the message is stored once.
func TestSendSurvivesDroppedConnection(t *testing.T) {
	dropped := make(chan struct{})
	d := serveWith(t, Config{}, func(next server.Handler) server.Handler {
		return func(ctx context.Context, c *server.Call) error {
			select {
			case <-dropped:
			default:
				if c.Op() == wire.OpSend {
					close(dropped)
					c.Conn().CloseWithError(wire.ConnNoError, "dropped by the test")
					return next(ctx, c) // stores the message; the ack has nowhere to go
				}
			}
			return next(ctx, c)
		}
	})
	ctx := testCtx(t)
	g, err := newTestClient(t).Group(wire.GroupEntry{Group: gid(d), Name: "general", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
	must(t, err)
	_, err = g.Join(ctx, "sender", nil)
	must(t, err)
	ack, err := g.Send(ctx, []byte("exactly once"))
	must(t, err)
	select {
	case <-dropped:
	default:
		t.Fatal("the send was never dropped")
	}
	if !ack.Duplicate || ack.Seq != 1 {
		t.Fatalf("ack %+v: want the retry to find message 1 stored by the dropped attempt", ack)
	}
	var bodies []string
	if _, err := g.Fetch(ctx, client.Query{}, func(m client.Message) bool {
		bodies = append(bodies, string(m.Body))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 1 || bodies[0] != "exactly once" {
		t.Fatalf("log holds %q, want the message once", bodies)
	}
}

// TestRestartedDaemonResetsOldConnections kills a daemon without a word to
// its clients (its socket simply goes away, as with SIGKILL) and starts it
// again on the same port with its state directory. A client's next call on
// its old connection gets a stateless reset the client recognises (the
// reset key derives from the daemon's key), so it redials at once instead
// of waiting out its idle timeout, and its membership is still there.
func TestRestartedDaemonResetsOldConnections(t *testing.T) {
	dir := t.TempDir()
	addr := testport.Cell(t) // reserved: the restart finds it free
	d1, err := New(Config{StateDir: dir, Listen: addr, Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)})
	must(t, err)
	must(t, d1.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d1.Serve(context.Background()) }()

	ctx := testCtx(t)
	g, err := newTestClient(t).Group(wire.GroupEntry{Group: gid(d1), Name: "general", Addrs: []string{addr}, Fingerprint: d1.Fingerprint()})
	must(t, err)
	_, err = g.Join(ctx, "survivor", nil)
	must(t, err)
	_, err = g.Send(ctx, []byte("before"))
	must(t, err)

	// The daemon dies: its socket closes, its clients are told nothing.
	d1.srv.Transport().Conn.Close()
	d1.Close()
	must(t, <-errc)

	d2, _ := startGroupDaemon(t, Config{StateDir: dir, Listen: addr})
	if gid(d2) != gid(d1) || d2.Fingerprint() != d1.Fingerprint() {
		t.Fatal("the restarted daemon has another group UUID or key")
	}
	// Well under the client's 30 s idle timeout: only a reset gets it here.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := g.Send(sctx, []byte("after"))
	must(t, err)
	if ack.Seq != 2 {
		t.Fatalf("ack %+v: want the log's second message (the log is on disk)", ack)
	}
}

// TestSendRetriedByID has the daemon store a send only after the client
// gave up on it (its context ended): the client cannot tell whether the
// message was stored, so it retries with the ID its failed Send returned,
// and gets the stored message's acknowledgement back as a duplicate, with
// the log's epoch; the message is stored once. With and without batching.
func TestSendRetriedByID(t *testing.T) {
	for _, batching := range []bool{true, false} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			release := make(chan struct{})
			arrived := make(chan struct{})
			var once sync.Once
			d := serveWith(t, Config{}, func(next server.Handler) server.Handler {
				return func(ctx context.Context, c *server.Call) error {
					if c.Op() == wire.OpSend {
						held := false
						once.Do(func() { held = true })
						if held {
							close(arrived)
							<-release // until the client has given up
						}
					}
					return next(ctx, c)
				}
			})
			ctx := testCtx(t)
			cl, err := client.New(client.Config{Identity: newKey(t), Logger: testLogger(t), NoBatching: !batching})
			must(t, err)
			t.Cleanup(func() { cl.Close() })
			g, err := cl.Group(wire.GroupEntry{Group: gid(d), Name: "general", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
			must(t, err)
			_, err = g.Join(ctx, "sender", nil)
			must(t, err)
			info, err := g.Info(ctx)
			must(t, err)

			short, cancel := context.WithCancel(ctx)
			failed := make(chan error, 1)
			var ack client.Ack
			go func() {
				var err error
				ack, err = g.Send(short, []byte("maybe stored"))
				failed <- err
			}()
			recv(t, arrived)
			cancel()
			if err := <-failed; !errors.Is(err, context.Canceled) {
				t.Fatalf("the abandoned send: %v, want its context's error", err)
			}
			if ack.ID.IsZero() {
				t.Fatal("a failed Send returned no message ID to retry with")
			}
			close(release) // the daemon stores it now, too late for the client
			eventually(t, "the message to be stored", func() bool { return d.groups[gid(d)].log.Last() == 1 })

			again, err := g.SendWithID(ctx, ack.ID, []byte("maybe stored"))
			must(t, err)
			if !again.Duplicate || again.Seq != 1 || again.ID != ack.ID || again.Epoch != info.Epoch || again.Time.IsZero() {
				t.Fatalf("retry acknowledged as %+v: want message 1 as a duplicate, with its ID and epoch %d", again, info.Epoch)
			}
			acks, err := g.SendMessages(ctx, []client.Outgoing{{ID: ack.ID, Body: []byte("maybe stored")}, {ID: wire.NewID(), Body: []byte("new")}})
			must(t, err)
			if a := acks[0]; a.ID != again.ID || a.Seq != 1 || !a.Duplicate || !a.Time.Equal(again.Time) || acks[1].Seq != 2 || acks[1].Epoch != info.Epoch || acks[1].Duplicate {
				t.Fatalf("SendMessages acknowledged %+v, want the first as before and the second new, with the epoch", acks)
			}
			n := 0
			if _, err := g.Fetch(ctx, client.Query{}, func(client.Message) bool { n++; return true }); err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Fatalf("the log holds %d messages, want 2", n)
			}
		})
	}
}

// TestGracefulStopSaysUnavailable stops a daemon while an operation is in
// flight: until it has finished (the grace period), the daemon keeps
// answering, and what it no longer serves gets unavailable at once, never
// a wait: a new call on a client's connection (an Error frame), a client
// that dials it (close code 0x2, which the client reports as unavailable,
// without dialling again), a watch (its Error frame). The operation in
// flight completes; calls made as the connections close get unavailable
// too.
func TestGracefulStopSaysUnavailable(t *testing.T) {
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release) // the test failed before it let the send go
		}
	}()
	held := make(chan struct{})
	d := serveWith(t, Config{Server: server.Config{ShutdownTimeout: time.Minute}}, func(next server.Handler) server.Handler {
		return func(ctx context.Context, c *server.Call) error {
			if c.Op() == wire.OpSend {
				select {
				case <-held:
				default:
					close(held)
					<-release
				}
			}
			return next(ctx, c)
		}
	})
	ctx := testCtx(t)
	entry := wire.GroupEntry{Group: gid(d), Name: "general", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()}
	cl := newTestClient(t)
	g, err := cl.Group(entry)
	must(t, err)
	_, err = g.Join(ctx, "stayer", nil)
	must(t, err)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := watchEvents(wctx, g, client.Query{Status: true}, 16)
	if ev := recv(t, events); ev.Kind != client.EventLive {
		t.Fatalf("watch: first event %+v, want live", ev)
	}

	inFlight := make(chan error, 1)
	go func() { _, err := g.Send(ctx, []byte("in flight")); inFlight <- err }()
	recv(t, held)
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	eventually(t, "shutdown to begin", func() bool { return d.srv.Listening() != nil })

	if ev := recv(t, events); ev.Kind != client.EventInterrupted || !errors.Is(ev.Err, client.ErrUnavailable) {
		t.Fatalf("watch during shutdown: %+v, want interrupted with unavailable", ev)
	}
	if _, err := g.Info(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("a new call on an open connection during shutdown: %v, want unavailable", err)
	}
	other, err := newTestClient(t).Group(entry)
	must(t, err)
	if _, err := other.Info(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("a client dialling during shutdown: %v, want unavailable", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with an operation in flight")
	default:
	}
	close(release)
	if err := recv(t, inFlight); err != nil {
		t.Fatalf("the send in flight: %v, want it completed", err)
	}
	recv(t, closed)
}

// recv receives from c, failing the test after testTimeout.
func recv[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for a %T", *new(T))
		panic("unreachable")
	}
}

// watchEvents runs g's watch with q until ctx ends or the watch fails,
// passing its events on the channel it returns, which holds up to n and
// is closed as the watch ends. The caller ends ctx by its test's end.
func watchEvents(ctx context.Context, g *client.Group, q client.Query, n int) <-chan client.Event {
	events := make(chan client.Event, n)
	go func() {
		defer close(events)
		for ev, err := range g.Watch(ctx, q) {
			if err != nil {
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				return // the test has stopped reading
			}
		}
	}()
	return events
}

// TestWatchLearnsOfRestart kills a daemon without a word to its clients
// (its socket goes away, as with SIGKILL) and starts it again on the same
// address while a client watches: the watcher, which only receives, must
// learn of it from a probe when a heartbeat is late (the restarted daemon
// answers it with a stateless reset), not from its last resort, three
// heartbeats of silence; then it follows the new log (in memory, so a new
// epoch: a reset).
func TestWatchLearnsOfRestart(t *testing.T) {
	const heartbeat = time.Second
	dir := t.TempDir()
	// A reserved port, which the restart finds free (testport.Cell).
	cfg := Config{StateDir: dir, Listen: testport.Cell(t), Groups: []Spec{{Name: "general"}}, Logger: testLogger(t), HeartbeatInterval: heartbeat,
		Storage: StorageConfig{Memory: true}}
	d1, err := New(cfg)
	must(t, err)
	must(t, d1.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d1.Serve(context.Background()) }()

	ctx := testCtx(t)
	g, err := newTestClient(t).Group(wire.GroupEntry{Group: gid(d1), Name: "general", Addrs: []string{cfg.Listen}, Fingerprint: d1.Fingerprint()})
	must(t, err)
	_, err = g.Join(ctx, "watcher", nil)
	must(t, err)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events := watchEvents(wctx, g, client.Query{Status: true}, 16)
	if ev := recv(t, events); ev.Kind != client.EventLive {
		t.Fatalf("first event %+v, want live", ev)
	}

	d1.srv.Transport().Conn.Close()
	d1.Close()
	must(t, <-errc)
	d2, _ := startGroupDaemon(t, cfg)
	ev := recv(t, events)
	if ev.Kind != client.EventInterrupted || strings.Contains(ev.Err.Error(), "no word from the daemon") {
		t.Fatalf("after the restart: %+v, want the watch interrupted by a probe of the late heartbeat, not by its silence timer", ev)
	}
	if ev := recv(t, events); ev.Kind != client.EventReset || ev.Epoch != d2.groups[gid(d2)].epoch() {
		t.Fatalf("then %+v, want a reset to the new daemon's epoch", ev)
	}
}

// refusingLog is a group log whose appends fail while refuse is set, as a
// log on a full disk's would.
type refusingLog struct {
	Log
	refuse atomic.Bool
}

var errLogFull = errors.New("no space left on device")

func (l *refusingLog) Append(batch []store.Entry) error {
	if l.refuse.Load() {
		return errLogFull
	}
	return l.Log.Append(batch)
}

// serveOverLog serves a daemon of one group, "general", whose log is
// wrap's around the one it would have opened, until the test ends.
func serveOverLog(t *testing.T, wrap func(Log) Log) *Daemon {
	return serveOverLogWith(t, nil, wrap)
}

// serveOverLogWith is serveOverLog of a daemon whose Config mutate
// changes first, if set.
func serveOverLogWith(t *testing.T, mutate func(*Config), wrap func(Log) Log) *Daemon {
	cfg := Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := New(cfg)
	must(t, err)
	d.openLog = func(id wire.UUID, name string, retention store.Config, replicated bool) (Log, error) {
		inner, err := d.openStorageLog(id, name, retention, replicated)
		return wrap(inner), err
	}
	must(t, d.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, d.Close())
		must(t, <-errc)
	})
	return d
}

// TestLogRefusesAppends reaches the group's log through the daemon's Log
// seam: while the log cannot store, a send is told unavailable (with a
// retry time), nothing is stored, reads keep working, and once the log
// stores again the sequence goes on without a gap, a retried message
// stored once.
func TestLogRefusesAppends(t *testing.T) {
	log := &refusingLog{}
	d := serveOverLog(t, func(inner Log) Log { log.Log = inner; return log })
	p := joined(t, d, "alice")
	g := gid(d)
	first := outgoing("one")
	if _, err := p.send(g, first); err != nil {
		t.Fatal(err)
	}

	log.refuse.Store(true)
	retry := outgoing("two", "three")
	_, err := p.send(g, retry)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnavailable || we.RetryAfterMS == 0 {
		t.Fatalf("send while the log refuses: %v, want unavailable with a retry time", err)
	}
	if strings.Contains(we.Message, errLogFull.Error()) {
		t.Fatalf("the log's own error reached the peer: %q", we.Message)
	}
	if !we.Unchanged {
		t.Errorf("a send the log refused %+v: not marked unchanged (nothing was stored: the client may say so)", we)
	}
	msgs, end, err := p.fetch(wire.Fetch{Group: g})
	must(t, err)
	if len(msgs) != 1 || end.Last != 1 {
		t.Fatalf("fetch while the log refuses: %d messages, last %d; want the one stored", len(msgs), end.Last)
	}

	log.refuse.Store(false)
	sent, err := p.send(g, retry)
	must(t, err)
	again, err := p.send(g, retry[1:])
	must(t, err)
	if sent.Acks[0].Seq != 2 || sent.Acks[1].Seq != 3 || !again.Acks[0].Duplicate || again.Acks[0].Seq != 3 {
		t.Fatalf("acks after the log recovered: %+v then %+v; want 2, 3, then 3 again as a duplicate", sent.Acks, again.Acks)
	}
}

// unsyncedLog is a group's log whose Durable fails while fail is set, as a
// disk log's does when an fsync fails: the batch was appended, whether it
// reached the device is not known.
type unsyncedLog struct {
	Log
	fail atomic.Bool
}

func (l *unsyncedLog) Durable(seq uint64) error {
	if l.fail.Load() {
		return fmt.Errorf("%w: fsync: input/output error", store.ErrFailed)
	}
	return l.Log.Durable(seq)
}

// TestSendNotDurable: a send whose messages were appended but could not be
// made durable (an fsync that failed) is refused as unavailable, and the
// refusal does not say "nothing was stored", which was false: the
// messages may be held (here they are, and a retry of their IDs is
// acknowledged as a duplicate with the original stamps). A client told
// nothing was stored could send them again under new IDs.
func TestSendNotDurable(t *testing.T) {
	log := &unsyncedLog{}
	d := serveOverLog(t, func(inner Log) Log { log.Log = inner; return log })
	p := joined(t, d, "alice")
	g := gid(d)
	log.fail.Store(true)
	out := outgoing("maybe")
	_, err := p.send(g, out)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnavailable || we.RetryAfterMS == 0 {
		t.Fatalf("send that could not be made durable: %v, want unavailable with a retry time", err)
	}
	if strings.Contains(we.Message, "nothing was stored") || !strings.Contains(we.Message, "same message IDs") || we.Unchanged {
		t.Errorf("the refusal says %q (unchanged %v): it must not say nothing was stored, nor be marked unchanged, and must say to retry with the same message IDs", we.Message, we.Unchanged)
	}
	log.fail.Store(false)
	again, err := p.send(g, out)
	must(t, err)
	if a := again.Acks[0]; !a.Duplicate || a.Seq != 1 {
		t.Fatalf("the retry: %+v, want #1 as a duplicate: the message had been stored", a)
	}
}

// halfWrittenLog is a group's log whose Append fails as a disk log's does
// when its write failed and could not be cut back (the device gone): the
// record may be in the file, and read back at the next start.
type halfWrittenLog struct {
	Log
	fail atomic.Bool
}

func (l *halfWrittenLog) Append(batch []store.Entry) error {
	if l.fail.Load() {
		return fmt.Errorf("%w: a partial write could not be undone: input/output error (%w)", store.ErrFailed, store.ErrMaybeWritten)
	}
	return l.Log.Append(batch)
}

// TestSendMaybeWritten: a send whose record may have reached the file
// (store.ErrMaybeWritten) is refused as unavailable without saying nothing
// was stored: a restart may read it back, and a client told otherwise
// could send the messages again under new IDs (stored twice). It says to
// retry under the same IDs, as a send whose fsync failed does.
func TestSendMaybeWritten(t *testing.T) {
	log := &halfWrittenLog{}
	d := serveOverLog(t, func(inner Log) Log { log.Log = inner; return log })
	p := joined(t, d, "alice")
	log.fail.Store(true)
	_, err := p.send(gid(d), outgoing("maybe"))
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnavailable || we.RetryAfterMS == 0 {
		t.Fatalf("send whose record may be written: %v, want unavailable with a retry time", err)
	}
	if strings.Contains(we.Message, "nothing was stored") || !strings.Contains(we.Message, "same message IDs") || we.Unchanged {
		t.Errorf("the refusal says %q (unchanged %v): it must not say nothing was stored, nor be marked unchanged, and must say to retry with the same message IDs", we.Message, we.Unchanged)
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/internal/udpproxy"
	"github.com/huddle-chat/huddle/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds each test's network steps so a bug fails instead of
// hanging; it asserts nothing about speed.
const testTimeout = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func startRegistry(t *testing.T, dir string) *registry.Daemon {
	t.Helper()
	r, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: dir, LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// startGroups starts a group daemon for cfg (Listen, StateDir and Registry
// filled in if empty) and returns it with a stop function.
func startGroups(t *testing.T, cfg groupd.Config) (*groupd.Daemon, func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	d, err := groupd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Serve(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return d, stop
}

func newClient(t *testing.T) *client.Client {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known")),
		Logger: slog.New(slog.NewTextHandler(testlog.Output(t), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openGroup lists the registry until name appears and opens it.
func openGroup(t *testing.T, c *client.Client, regAddr string, name string) *client.Group {
	t.Helper()
	ctx := testCtx(t)
	reg, err := c.Registry(ctx, regAddr, wire.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		list, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Groups {
			if e.Name == name {
				g, err := reg.Group(e)
				if err != nil {
					t.Fatal(err)
				}
				return g
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %q never registered", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func setup(t *testing.T, cfg groupd.Config) (*registry.Daemon, *groupd.Daemon, func()) {
	t.Helper()
	r := startRegistry(t, t.TempDir())
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []groupd.Spec{{Name: "lobby"}}
	}
	cfg.Registries = []string{r.Addr().String()}
	cfg.RegistryFingerprints = []wire.Fingerprint{r.Fingerprint()}
	d, stop := startGroups(t, cfg)
	return r, d, stop
}

func TestGroupOperations(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{MaxMessageBytes: 100, FetchPage: 7})
	ctx := testCtx(t)
	alice, bob := newClient(t), newClient(t)
	ga := openGroup(t, alice, r.Addr().String(), "lobby")
	gb := openGroup(t, bob, r.Addr().String(), "lobby")

	if _, err := ga.Send(ctx, []byte("before joining")); !errors.Is(err, client.ErrNotMember) {
		t.Fatalf("send before join: err = %v, want ErrNotMember", err)
	}
	if _, err := ga.Join(ctx, "alice", nil); err != nil {
		t.Fatal(err)
	}
	j, err := ga.Join(ctx, "alice2", nil)
	if err != nil || !j.Already {
		t.Fatalf("second join = %+v, %v; want Already", j, err)
	}
	if _, err := gb.Join(ctx, "bob", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ga.Send(ctx, make([]byte, 101)); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("oversized send: err = %v, want ErrTooLarge", err)
	}
	for i := range 20 {
		g := ga
		if i%2 == 1 {
			g = gb
		}
		ack, err := g.Send(ctx, fmt.Appendf(nil, "m%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ack.Seq, uint64(i+1); got != want {
			t.Fatalf("ack seq = %d, want %d", got, want)
		}
	}

	// Fetch follows the cursor across pages of 7.
	var got []string
	cur, err := gb.Fetch(ctx, client.Query{}, func(m client.Message) bool {
		got = append(got, string(m.Body))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0] != "m1" || got[19] != "m20" {
		t.Fatalf("fetched %d messages %v", len(got), got)
	}
	if cur.Next != 20 || cur.Last != 20 || cur.More || cur.Gap {
		t.Errorf("cursor = %+v", cur)
	}

	// Names and senders come from the server, keyed by the client's key.
	var names []string
	if _, err := gb.Fetch(ctx, client.Query{After: 18}, func(m client.Message) bool {
		names = append(names, m.Name)
		want := alice.Fingerprint()
		if m.Seq%2 == 0 {
			want = bob.Fingerprint()
		}
		if m.From != want {
			t.Errorf("message %d from %s, want %s", m.Seq, m.From.Short(), want.Short())
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[alice2 bob]" {
		t.Errorf("names after 18 = %v", names)
	}

	// Limit, and a since query.
	n := 0
	if _, err := gb.Fetch(ctx, client.Query{Limit: 3}, func(client.Message) bool { n++; return true }); err != nil || n != 3 {
		t.Errorf("limit 3: %d messages, %v", n, err)
	}
	if _, err := gb.Fetch(ctx, client.Query{Since: time.Now().Add(time.Hour)}, func(client.Message) bool { n++; return true }); err != nil || n != 3 {
		t.Errorf("since the future: %d messages, %v", n-3, err)
	}
	if _, err := gb.Fetch(ctx, client.Query{Since: time.Now(), After: 3}, nil); !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("since and after: err = %v, want ErrBadRequest", err)
	}
	if _, err := gb.Fetch(ctx, client.Query{After: 3, Epoch: 12345}, nil); !errors.Is(err, client.ErrEpochMismatch) {
		t.Errorf("wrong epoch: err = %v, want ErrEpochMismatch", err)
	} else if e, ok := client.EpochOf(err); !ok || e == 0 {
		t.Errorf("EpochOf = %d, %v", e, ok)
	}

	ms, err := ga.Members(ctx)
	if err != nil || len(ms) != 2 {
		t.Fatalf("members = %v, %v", ms, err)
	}
	if was, err := gb.Leave(ctx); err != nil || !was {
		t.Fatalf("leave = %v, %v", was, err)
	}
	if was, err := gb.Leave(ctx); err != nil || was {
		t.Fatalf("second leave = %v, %v", was, err)
	}
	if _, err := gb.Members(ctx); !errors.Is(err, client.ErrNotMember) {
		t.Errorf("members after leave: err = %v, want ErrNotMember", err)
	}
}

// TestSendIsIdempotent sends the same message IDs twice: the second send
// gets the original acknowledgements, marked duplicate.
func TestSendIsIdempotent(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{})
	ctx := testCtx(t)
	g := openGroup(t, newClient(t), r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	msgs := []client.Outgoing{{ID: wire.NewID(), Body: []byte("x")}, {ID: wire.NewID(), Body: []byte("y")}}
	first, err := g.SendMessages(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := g.SendMessages(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if again[i].Seq != first[i].Seq || !again[i].Time.Equal(first[i].Time) || !again[i].Duplicate {
			t.Errorf("retry ack %d = %+v, want %+v with Duplicate", i, again[i], first[i])
		}
	}
	info, err := g.Info(ctx)
	if err != nil || info.Last != 2 {
		t.Errorf("info.Last = %d, %v; want 2", info.Last, err)
	}
}

// TestRegistryPinning checks trust on first use and the error for a changed
// key at the same address.
func TestRegistryPinning(t *testing.T) {
	ctx := testCtx(t)
	r1 := startRegistry(t, t.TempDir())
	addr := r1.Addr().String()
	c := newClient(t)
	reg, err := c.Registry(ctx, addr, wire.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Fingerprint() != r1.Fingerprint() {
		t.Fatalf("pinned %s, want %s", reg.Fingerprint(), r1.Fingerprint())
	}
	stranger, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var mm *identity.MismatchError
	if _, err := newClient(t).Registry(ctx, addr, stranger.Fingerprint()); !errors.As(err, &mm) {
		t.Fatalf("wrong pin: err = %v, want *identity.MismatchError", err)
	}

	// Another key at a pinned address is refused, ssh-style.
	id, _ := identity.Generate()
	kh := identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))
	if err := kh.Check(t.Context(), addr, stranger.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	c2, err := client.New(client.Config{Identity: id, KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var ce *identity.ChangedError
	if _, err := c2.Registry(ctx, addr, wire.Fingerprint{}); !errors.As(err, &ce) {
		t.Fatalf("changed key: err = %v, want *identity.ChangedError", err)
	}
}

// TestKeyRefusedUnderEveryAddress: a registry answering under two
// addresses (127.0.0.1:P and localhost:P), the first pinned to another key,
// is refused under both for the Client's life, and its key is pinned under
// neither, whichever the Client asks first (huddle web asks the registries
// it was given as they answer). The second address was trusted on first use
// and pinned, so the key refused under the first was trusted there from then
// on.
func TestKeyRefusedUnderEveryAddress(t *testing.T) {
	ctx := testCtx(t)
	r := startRegistry(t, t.TempDir())
	pinned := r.Addr().String()
	other := net.JoinHostPort("localhost", strconv.Itoa(r.Addr().(*net.UDPAddr).Port))
	stranger, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, otherFirst := range []bool{false, true} {
		kh := identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))
		if err := kh.Check(t.Context(), pinned, stranger.Fingerprint()); err != nil {
			t.Fatal(err)
		}
		id, _ := identity.Generate()
		c, err := client.New(client.Config{Identity: id, KnownHosts: kh})
		if err != nil {
			t.Fatal(err)
		}
		var ce *identity.ChangedError
		if otherFirst {
			reg, err := c.Registry(ctx, other, wire.Fingerprint{})
			if err != nil {
				t.Fatalf("%s, first: %v", other, err)
			}
			reg.Close()
		}
		if _, err := c.Registry(ctx, pinned, wire.Fingerprint{}); !errors.As(err, &ce) {
			t.Fatalf("%s, pinned to another key: %v, want a *identity.ChangedError", pinned, err)
		}
		if _, err := c.Registry(ctx, other, wire.Fingerprint{}); !errors.As(err, &ce) || ce.Name != pinned {
			t.Errorf("%s after its key was refused at %s (asked first: %v): %v, want that refusal", other, pinned, otherFirst, err)
		}
		if fp, ok, err := kh.Lookup(other); ok || err != nil {
			t.Errorf("%s pinned to %s (asked first: %v; err %v): the key refused at %s", other, fp.Short(), otherFirst, err, pinned)
		}
		c.Close()
	}
}

// TestRefusedKeyTakesBackOnlyItsPin: a Client that pinned an address on
// first use, then refuses that key under another address, takes back its
// pin only if the address still pins that key: the user may have
// forgotten it and pinned another key there since (another process, here
// another KnownHosts on the file). The Client removed whatever the
// address pinned, and the address was then trusted on first use again.
func TestRefusedKeyTakesBackOnlyItsPin(t *testing.T) {
	ctx := testCtx(t)
	r := startRegistry(t, t.TempDir())
	pinned := r.Addr().String()
	other := net.JoinHostPort("localhost", strconv.Itoa(r.Addr().(*net.UDPAddr).Port))
	stranger, _ := identity.Generate()
	users, _ := identity.Generate()
	path := filepath.Join(t.TempDir(), "known")
	kh := identity.OpenKnownHosts(path)
	if err := kh.Check(t.Context(), pinned, stranger.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	id, _ := identity.Generate()
	c, err := client.New(client.Config{Identity: id, KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg, err := c.Registry(ctx, other, wire.Fingerprint{})
	if err != nil {
		t.Fatalf("%s, first use: %v", other, err)
	}
	reg.Close()
	// Another process: the user forgets other's pin and pins a key of
	// their choosing there.
	user := identity.OpenKnownHosts(path)
	if ok, err := user.Forget(t.Context(), other); !ok || err != nil {
		t.Fatalf("forget %s: %v %v", other, ok, err)
	}
	if err := user.Check(t.Context(), other, users.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	var ce *identity.ChangedError
	if _, err := c.Registry(ctx, pinned, wire.Fingerprint{}); !errors.As(err, &ce) {
		t.Fatalf("%s, pinned to another key: %v, want a *identity.ChangedError", pinned, err)
	}
	if fp, ok, err := user.Lookup(other); !ok || err != nil || fp != users.Fingerprint() {
		t.Errorf("%s after the Client refused its old key elsewhere: pinned %v to %s (err %v), want the user's pin %s kept", other, ok, fp.Short(), err, users.Fingerprint().Short())
	}
}

// TestRefusalEndsWithItsPin: a key refused under an address is refused
// elsewhere only while that address still pins another key: once the user
// accepts the change (huddle forget-registry, the command the refusal
// names, run in another process), the Client takes the key on first use
// there and under its other addresses. huddle web, whose Client lives as
// long as it runs, went on refusing the registry after the user ran the
// command its page named, until it was restarted.
func TestRefusalEndsWithItsPin(t *testing.T) {
	ctx := testCtx(t)
	r := startRegistry(t, t.TempDir())
	pinned := r.Addr().String()
	other := net.JoinHostPort("localhost", strconv.Itoa(r.Addr().(*net.UDPAddr).Port))
	stranger, _ := identity.Generate()
	path := filepath.Join(t.TempDir(), "known")
	kh := identity.OpenKnownHosts(path)
	if err := kh.Check(t.Context(), pinned, stranger.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	id, _ := identity.Generate()
	c, err := client.New(client.Config{Identity: id, KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ce *identity.ChangedError
	if _, err := c.Registry(ctx, pinned, wire.Fingerprint{}); !errors.As(err, &ce) {
		t.Fatalf("%s, pinned to another key: %v, want a *identity.ChangedError", pinned, err)
	}
	if ok, err := identity.OpenKnownHosts(path).Forget(t.Context(), pinned); !ok || err != nil {
		t.Fatalf("forget %s: %v %v", pinned, ok, err)
	}
	for _, addr := range []string{pinned, other} {
		reg, err := c.Registry(ctx, addr, wire.Fingerprint{})
		if err != nil {
			t.Fatalf("%s after the user forgot %s's old pin: %v", addr, pinned, err)
		}
		reg.Close()
		if fp, ok, err := kh.Lookup(addr); !ok || err != nil || fp != reg.Fingerprint() {
			t.Errorf("%s: pinned %v to %s (err %v), want the registry's key", addr, ok, fp.Short(), err)
		}
	}
}

// TestWatchResumesAcrossRestart runs a watch while the group daemon
// restarts on the same port: the watcher sees every message of the first
// log once, then, with the log in memory, an EventReset with the new epoch
// and the new log from 1; with the log on disk, the next message, #4, in
// the same epoch, with no reset.
func TestWatchResumesAcrossRestart(t *testing.T) {
	for _, memory := range []bool{true, false} {
		t.Run(fmt.Sprint("memory=", memory), func(t *testing.T) { testWatchResumesAcrossRestart(t, memory) })
	}
}

func testWatchResumesAcrossRestart(t *testing.T, memory bool) {
	stateDir := t.TempDir()
	storage := groupd.StorageConfig{Memory: memory}
	// A reserved port, which the restart finds free (testport.Cell).
	r, d, stop := setup(t, groupd.Config{StateDir: stateDir, Listen: testport.Cell(t), HeartbeatInterval: 200 * time.Millisecond, Storage: storage})
	ctx := testCtx(t)
	watcher, sender := newClient(t), newClient(t)
	gw := openGroup(t, watcher, r.Addr().String(), "lobby")
	gs := openGroup(t, sender, r.Addr().String(), "lobby")
	for _, g := range []*client.Group{gw, gs} {
		if _, err := g.Join(ctx, "x", nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := gs.Send(ctx, fmt.Appendf(nil, "old%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}

	events := make(chan client.Event, 100)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(events)
		for ev, err := range gw.Watch(wctx, client.Query{}) {
			if err != nil {
				t.Errorf("watch: %v", err)
				return
			}
			select {
			case events <- ev:
			case <-wctx.Done():
				return // the test has stopped reading
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	next := func() client.Event {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch ended")
			}
			return ev
		case <-ctx.Done():
			t.Fatal("no watch event in time")
		}
		return client.Event{}
	}
	for i := 1; i <= 3; i++ {
		if ev := next(); ev.Kind != client.EventMessage || ev.Message.Seq != uint64(i) {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}

	// Restart the daemon on the same address with the same state.
	addr := d.Addr().String()
	stop()
	cfg := groupd.Config{StateDir: stateDir, Listen: addr, Groups: []groupd.Spec{{Name: "lobby"}},
		Registries: []string{r.Addr().String()}, RegistryFingerprints: []wire.Fingerprint{r.Fingerprint()}, HeartbeatInterval: 200 * time.Millisecond,
		Storage: storage}
	startGroups(t, cfg)

	// Send into the new log until the watcher reports the reset and the
	// first new message.
	sendErr := make(chan error, 1)
	go func() {
		for {
			if _, err := gs.Send(ctx, []byte("new1")); err == nil || ctx.Err() != nil {
				sendErr <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var sawReset bool
	for {
		ev := next()
		if ev.Kind == client.EventReset {
			sawReset = true
			continue
		}
		if ev.Kind != client.EventMessage {
			continue
		}
		if sawReset != memory {
			t.Fatalf("message %d (%q); a reset before it: %v, want %v", ev.Message.Seq, ev.Message.Body, sawReset, memory)
		}
		want := uint64(1)
		if !memory {
			want = 4
		}
		if ev.Message.Seq != want || string(ev.Message.Body) != "new1" {
			t.Fatalf("first message after the restart = %d %q, want %d new1", ev.Message.Seq, ev.Message.Body, want)
		}
		break
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
}

// TestWatchSeam starts watchers at random moments while several clients
// send: every watcher must see every message exactly once, in order, however
// its history part and its live part meet.
func TestWatchSeam(t *testing.T) {
	const senders, each, watchers = 4, 60, 6
	r, _, _ := setup(t, groupd.Config{HeartbeatInterval: time.Hour})
	ctx := testCtx(t)
	total := uint64(senders * each)

	var sendWG, watchWG sync.WaitGroup
	start := make(chan struct{})
	for i := range senders {
		g := openGroup(t, newClient(t), r.Addr().String(), "lobby")
		if _, err := g.Join(ctx, fmt.Sprintf("s%d", i), nil); err != nil {
			t.Fatal(err)
		}
		sendWG.Go(func() {
			<-start
			for j := range each {
				if _, err := g.Send(ctx, fmt.Appendf(nil, "%d-%d", i, j)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	for w := range watchers {
		g := openGroup(t, newClient(t), r.Addr().String(), "lobby")
		if _, err := g.Join(ctx, fmt.Sprintf("w%d", w), nil); err != nil {
			t.Fatal(err)
		}
		watchWG.Go(func() {
			<-start
			time.Sleep(time.Duration(w) * 7 * time.Millisecond) // start at different points of the sending
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			next := uint64(1)
			for ev, err := range g.Watch(wctx, client.Query{}) {
				if err != nil {
					t.Errorf("watcher %d: %v", w, err)
					return
				}
				if ev.Kind != client.EventMessage {
					t.Errorf("watcher %d: event %+v", w, ev)
					return
				}
				if ev.Message.Seq != next {
					t.Errorf("watcher %d got seq %d, want %d: a gap or a duplicate", w, ev.Message.Seq, next)
					return
				}
				if next++; next > total {
					return
				}
			}
		})
	}
	close(start)
	sendWG.Wait()
	watchWG.Wait()
}

// TestWatchSurvivesCutPath cuts the network path under a watch (every
// packet dropped), sends meanwhile, and restores it: the watch notices the
// silence, reconnects when it can, and delivers every message exactly once.
func TestWatchSurvivesCutPath(t *testing.T) {
	r, d, _ := setup(t, groupd.Config{HeartbeatInterval: 100 * time.Millisecond})
	ctx := testCtx(t)
	proxy, err := udpproxy.New(d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	sender := openGroup(t, newClient(t), r.Addr().String(), "lobby")
	if _, err := sender.Join(ctx, "sender", nil); err != nil {
		t.Fatal(err)
	}
	wc := newClient(t)
	gw, err := wc.Group(wire.GroupEntry{Group: sender.ID(), Name: "lobby", Addrs: []string{proxy.Addr()}, Fingerprint: d.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Join(ctx, "watcher", nil); err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		t.Helper()
		for range n {
			if _, err := sender.Send(ctx, []byte("m")); err != nil {
				t.Fatal(err)
			}
		}
	}

	seqs := make(chan uint64, 100)
	interrupted := make(chan error, 10)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(seqs)
		for ev, err := range gw.Watch(wctx, client.Query{Status: true}) {
			if err != nil {
				t.Errorf("watch: %v", err)
				return
			}
			switch ev.Kind {
			case client.EventMessage:
				seqs <- ev.Message.Seq
			case client.EventInterrupted:
				select {
				case interrupted <- ev.Err:
				default:
				}
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()
	expect := func(from, to uint64) {
		t.Helper()
		for want := from; want <= to; want++ {
			select {
			case got := <-seqs:
				if got != want {
					t.Fatalf("watch delivered %d, want %d", got, want)
				}
			case <-ctx.Done():
				t.Fatalf("watch never delivered %d", want)
			}
		}
	}

	send(5)
	expect(1, 5)
	proxy.Cut()
	send(5)
	// Silence for longer than three heartbeats makes the watch give up on
	// the connection and start redialling, which fails while cut: wait for
	// exactly that (a slow watch alone must not pass this test).
	select {
	case err := <-interrupted:
		t.Logf("the watch gave up on the cut path: %v", err)
	case s := <-seqs:
		t.Fatalf("delivered %d through a cut path", s)
	case <-ctx.Done():
		t.Fatal("the watch never noticed the cut path")
	}
	select {
	case s := <-seqs:
		t.Fatalf("delivered %d through a cut path", s)
	default:
	}
	proxy.Restore()
	send(5)
	expect(6, 15)
}

// QLOGDIR makes both ends write a qlog of each connection (README,
// "Environment").
func TestQLOGDIR(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("QLOGDIR", dir)
	r, _, _ := setup(t, groupd.Config{})
	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Info(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for _, side := range []string{"client", "server"} {
		logs, err := filepath.Glob(filepath.Join(dir, "*_"+side+".sqlog"))
		if err != nil || len(logs) == 0 {
			t.Fatalf("no %s qlog in QLOGDIR (%v)", side, err)
		}
	}
}

// TestWatchStatus checks Query.Status: the watch reports EventLive when
// the daemon accepts it, EventInterrupted (with why) when its path is cut,
// and EventLive again once it has resumed, delivering what was sent
// meanwhile once. Without Status none of these are yielded.
func TestWatchStatus(t *testing.T) {
	r, d, _ := setup(t, groupd.Config{HeartbeatInterval: 100 * time.Millisecond})
	ctx := testCtx(t)
	proxy, err := udpproxy.New(d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	sender := openGroup(t, newClient(t), r.Addr().String(), "lobby")
	if _, err := sender.Join(ctx, "sender", nil); err != nil {
		t.Fatal(err)
	}
	gw, err := newClient(t).Group(wire.GroupEntry{Group: sender.ID(), Name: "lobby", Addrs: []string{proxy.Addr()}, Fingerprint: d.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Join(ctx, "watcher", nil); err != nil {
		t.Fatal(err)
	}

	for _, status := range []bool{false, true} {
		events := make(chan client.Event, 100)
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for ev, err := range gw.Watch(wctx, client.Query{Status: status}) {
				if err != nil {
					t.Errorf("watch: %v", err)
					return
				}
				select {
				case events <- ev:
				case <-wctx.Done():
					return // the test has stopped reading
				}
			}
		})
		next := func() client.Event {
			t.Helper()
			select {
			case ev := <-events:
				return ev
			case <-ctx.Done():
				t.Fatal("no watch event in time")
			}
			return client.Event{}
		}
		before := fmt.Sprintf("before, status %v", status)
		if _, err := sender.Send(ctx, []byte(before)); err != nil {
			t.Fatal(err)
		}
		if !status {
			// The first event is the message: no status events.
			if ev := next(); ev.Kind != client.EventMessage {
				t.Fatalf("without Status: first event %+v, want the message", ev)
			}
			cancel()
			wg.Wait()
			continue
		}
		if ev := next(); ev.Kind != client.EventLive {
			t.Fatalf("first event %+v, want EventLive", ev)
		}
		var last uint64
		for ev := next(); ; ev = next() {
			if ev.Kind != client.EventMessage {
				t.Fatalf("event %+v, want the messages sent", ev)
			}
			if last = ev.Message.Seq; string(ev.Message.Body) == before {
				break
			}
		}
		proxy.Cut()
		ev := next()
		if ev.Kind != client.EventInterrupted || !errors.Is(ev.Err, client.ErrUnreachable) {
			t.Fatalf("after the cut: %+v, want EventInterrupted, unreachable", ev)
		}
		if _, err := sender.Send(ctx, []byte("during")); err != nil {
			t.Fatal(err)
		}
		proxy.Restore()
		for ev = next(); ev.Kind == client.EventInterrupted; ev = next() {
		}
		if ev.Kind != client.EventLive {
			t.Fatalf("after the restore: %+v, want EventLive", ev)
		}
		if ev = next(); ev.Kind != client.EventMessage || ev.Message.Seq != last+1 || string(ev.Message.Body) != "during" {
			t.Fatalf("after resuming: %+v, want message %d \"during\"", ev, last+1)
		}
		cancel()
		wg.Wait()
	}
}

// TestStoppedServerNotDialledAtOnce stops a daemon gracefully between two
// calls of a client: the daemon closes the client's connection with 0x2,
// and the client's next call fails at once with ErrShuttingDown rather
// than dial a daemon that is going away and wait for the dial to time out
// (TestGracefulStop saw 5 of 64 callers do so under load, issue 15.14).
// Once the time it takes the server at its word has passed, the next call
// dials: the daemon, started again on the same address, is reached. The
// client's clock is frozen and then moved on, so no timing is assumed.
func TestStoppedServerNotDialledAtOnce(t *testing.T) {
	stateDir := t.TempDir()
	addr := testport.Cell(t) // reserved: the restart finds it free
	d, stop := startGroups(t, groupd.Config{StateDir: stateDir, Listen: addr, Groups: []groupd.Spec{{Name: "lobby"}}})
	entry := wire.GroupEntry{Group: d.Groups()[0].ID, Name: "lobby", Addrs: []string{addr}, Fingerprint: d.Fingerprint()}
	c := newClient(t)
	var now atomic.Int64 // the client's clock, in Unix ns
	now.Store(time.Now().UnixNano())
	client.SetNow(c, func() time.Time { return time.Unix(0, now.Load()) })
	g, err := c.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := g.Join(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	stop()
	for i := range 3 {
		if _, err := g.Info(ctx); !errors.Is(err, client.ErrShuttingDown) {
			t.Fatalf("call %d after the daemon stopped: %v, want it shutting down", i, err)
		}
	}
	startGroups(t, groupd.Config{StateDir: stateDir, Listen: addr, Groups: []groupd.Spec{{Name: "lobby"}}})
	now.Add(int64(2 * time.Second))
	if _, err := g.Info(ctx); err != nil {
		t.Fatalf("a call once the daemon is back: %v", err)
	}
}

// TestRegistryClose checks that handles on one registry share its
// connection until the last is closed, that a closed handle's calls fail
// with ErrClosed, and that a new handle dials afresh.
func TestRegistryClose(t *testing.T) {
	reg := startRegistry(t, t.TempDir())
	c := newClient(t)
	ctx := t.Context()
	open := func() *client.Registry {
		t.Helper()
		r, err := c.Registry(ctx, reg.Addr().String(), reg.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := open(), open()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close() // safe twice
	if _, err := a.List(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("List on a closed handle: %v, want ErrClosed", err)
	}
	if _, err := b.List(ctx); err != nil {
		t.Errorf("List on the other handle, open: %v", err)
	}
	b.Close()
	if _, err := b.Register(ctx, client.Registration{Group: client.UUID{1}, Name: "g", Port: 1}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Register on a closed handle: %v, want ErrClosed", err)
	}
	if _, err := open().List(ctx); err != nil {
		t.Errorf("List on a new handle after the others closed: %v", err)
	}
}

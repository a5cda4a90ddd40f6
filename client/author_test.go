package client_test

// The programs a Go author writes against this package from its docs alone
// (README's "Go API" and go doc): a bot that watches several groups and
// answers, a script that reads history, a sender that outlives a daemon
// restart, and one that tells every documented error kind apart. They use
// nothing but the exported API (the servers they talk to are started here).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/store"
)

// TestAuthorErrorKinds meets each error kind the docs name, and checks that
// it is both the sentinel (errors.Is) and the server's code (errors.As with
// *client.Error), as PROTOCOL.md §9 types it.
func TestAuthorErrorKinds(t *testing.T) {
	r, d, _ := setup(t, groupd.Config{MaxMessageBytes: 64, SendRate: 1, SendBurst: 1, MaxMembers: 1, MaxBatch: 1})
	ctx := testCtx(t)
	bot, other := newClient(t), newClient(t)
	g := openGroup(t, bot, r.Addr().String(), "lobby")

	serverSaid := func(t *testing.T, err error, sentinel error, code client.Code) *client.Error {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Fatalf("err = %v, want %v", err, sentinel)
		}
		var se *client.Error
		if !errors.As(err, &se) {
			t.Fatalf("err = %v (%T), not a *client.Error", err, err)
		}
		if se.Code != code {
			t.Fatalf("code %v, want %v", se.Code, code)
		}
		return se
	}

	t.Run("not a member", func(t *testing.T) {
		_, err := g.Send(ctx, []byte("hello"))
		serverSaid(t, err, client.ErrNotMember, client.CodeNotMember)
	})
	if _, err := g.Join(ctx, "bot", nil); err != nil {
		t.Fatal(err)
	}
	t.Run("unknown group", func(t *testing.T) {
		// The daemon is real, the group is not (an entry made by hand, or
		// one the daemon stopped hosting).
		nowhere, err := bot.Group(client.GroupEntry{Group: client.UUID{0x42}, Name: "nowhere",
			Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = nowhere.Info(ctx)
		serverSaid(t, err, client.ErrNotFound, client.CodeNotFound)
		_, err = nowhere.Send(ctx, []byte("hello"))
		serverSaid(t, err, client.ErrNotFound, client.CodeNotFound)
	})
	t.Run("too large", func(t *testing.T) {
		info, err := g.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The client knows the limit now (Info told it), and refuses
		// without asking: the sentinel, not a server's *Error.
		_, err = g.Send(ctx, make([]byte, info.Limits.MaxMessageBytes+1))
		if !errors.Is(err, client.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		// A batch over the daemon's MaxBatch is the daemon's refusal.
		_, err = g.SendMessages(ctx, []client.Outgoing{{ID: client.NewID(), Body: []byte("a")}, {ID: client.NewID(), Body: []byte("b")}})
		serverSaid(t, err, client.ErrTooLarge, client.CodeTooLarge)
	})
	t.Run("rate limited", func(t *testing.T) {
		// One message a second, in bursts of one: the second of two at once
		// is refused, and sent again with its ID after RetryAfter, it is
		// stored once.
		var ack client.Ack
		var err error
		for range 3 {
			if ack, err = g.Send(ctx, []byte("tick")); err != nil {
				break
			}
		}
		serverSaid(t, err, client.ErrRateLimited, client.CodeRateLimited)
		wait, ok := client.RetryAfter(err)
		if !ok || wait <= 0 {
			t.Fatalf("RetryAfter(%v) = %v, %v; want a wait", err, wait, ok)
		}
		for {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
			again, err := g.SendWithID(ctx, ack.ID, []byte("tick"))
			if wait, ok = client.RetryAfter(err); ok {
				continue // another sender's message took the token first
			}
			if err != nil {
				t.Fatal(err)
			}
			if again.ID != ack.ID || again.Duplicate {
				t.Fatalf("retry = %+v, want a first store of %v", again, ack.ID)
			}
			break
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		// The group takes one member, the bot.
		og := openGroup(t, other, r.Addr().String(), "lobby")
		_, err := og.Join(ctx, "other", nil)
		serverSaid(t, err, client.ErrUnavailable, client.CodeUnavailable)
	})
	t.Run("closed", func(t *testing.T) {
		c := newClient(t)
		cg := openGroup(t, c, r.Addr().String(), "lobby")
		c.Close()
		_, err := cg.Send(ctx, []byte("hello"))
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("send after Close: %v, want ErrClosed", err)
		}
		var se *client.Error
		if errors.As(err, &se) {
			t.Fatalf("ErrClosed is this client's, not a server's: %v", se)
		}
	})
}

// scriptInLobby starts a registry and a group daemon and joins a new
// client to its group "lobby" as "script", as a script reading history
// does; the context is the test's.
func scriptInLobby(t *testing.T) (context.Context, *client.Group) {
	t.Helper()
	r, _, _ := setup(t, groupd.Config{})
	ctx := testCtx(t)
	g := openGroup(t, newClient(t), r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "script", nil); err != nil {
		t.Fatal(err)
	}
	return ctx, g
}

// TestAuthorHistory reads a group's history the two ways a script does:
// since a time, and after a sequence number (in the epoch it came from),
// page by page with the cursor.
func TestAuthorHistory(t *testing.T) {
	ctx, g := scriptInLobby(t)
	var acks []client.Ack
	for i := range 5 {
		ack, err := g.Send(ctx, fmt.Appendf(nil, "m%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	fetch := func(q client.Query) ([]uint64, client.Cursor, error) {
		var got []uint64
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool { got = append(got, m.Seq); return true })
		return got, cur, err
	}

	got, _, err := fetch(client.Query{Since: acks[2].Time})
	if err != nil || fmt.Sprint(got) != "[3 4 5]" {
		t.Fatalf("since the third's time: %v, %v; want [3 4 5]", got, err)
	}
	got, _, err = fetch(client.Query{After: acks[2].Seq, Epoch: acks[2].Epoch})
	if err != nil || fmt.Sprint(got) != "[4 5]" {
		t.Fatalf("after the third: %v, %v; want [4 5]", got, err)
	}
	// Two at a time, from the cursor.
	var all []uint64
	q := client.Query{Limit: 2}
	for {
		page, cur, err := fetch(q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !cur.More {
			break
		}
		q = client.Query{After: cur.Next, Epoch: cur.Epoch, Limit: 2}
	}
	if fmt.Sprint(all) != "[1 2 3 4 5]" {
		t.Fatalf("paged: %v", all)
	}
	// A cursor of another epoch is refused, with the epoch to start over in.
	_, _, err = fetch(client.Query{After: 3, Epoch: acks[0].Epoch + 1})
	if epoch, ok := client.EpochOf(err); !errors.Is(err, client.ErrEpochMismatch) || !ok || epoch != acks[0].Epoch {
		t.Fatalf("another epoch's cursor: %v (epoch %d, %v)", err, epoch, ok)
	}
	if _, _, err = fetch(client.Query{Since: time.Now(), After: 1}); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("both Since and After: %v, want ErrBadRequest", err)
	}
}

// TestAuthorBotAnswersInSeveralGroups is a bot that watches two groups at
// once (one of them private) and answers each "ping" in its own group.
func TestAuthorBotAnswersInSeveralGroups(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{Groups: []groupd.Spec{{Name: "lobby"}, {Name: "ops", Secret: []byte("hunter2")}}})
	ctx := testCtx(t)
	bot, user := newClient(t), newClient(t)
	secrets := map[string][]byte{"ops": []byte("hunter2")}

	botCtx, stopBot := context.WithCancel(ctx)
	var wg sync.WaitGroup
	joined := make(chan error, 2)
	for _, name := range []string{"lobby", "ops"} {
		g := openGroup(t, bot, r.Addr().String(), name)
		j, err := g.Join(ctx, "pingbot", secrets[name])
		joined <- err
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// From the join on: nothing sent after it is missed.
			for ev, err := range g.Watch(botCtx, client.Query{After: j.Last, Epoch: j.Epoch}) {
				if err != nil {
					t.Errorf("watch %s: %v", name, err)
					return
				}
				m := ev.Message
				if ev.Kind != client.EventMessage || m.From == bot.Fingerprint() || !strings.HasPrefix(string(m.Body), "ping") {
					continue
				}
				if _, err := g.Send(botCtx, fmt.Appendf(nil, "pong in %s to %d", name, m.Seq)); err != nil && botCtx.Err() == nil {
					t.Errorf("answer in %s: %v", name, err)
				}
			}
		}()
	}
	defer func() { stopBot(); wg.Wait() }()
	for range 2 {
		if err := <-joined; err != nil {
			t.Fatal(err)
		}
	}

	for _, name := range []string{"lobby", "ops"} {
		g := openGroup(t, user, r.Addr().String(), name)
		j, err := g.Join(ctx, "user", secrets[name])
		if err != nil {
			t.Fatal(err)
		}
		ping, err := g.Send(ctx, []byte("ping"))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("pong in %s to %d", name, ping.Seq)
		for ev, err := range g.Watch(ctx, client.Query{After: j.Last, Epoch: j.Epoch}) {
			if err != nil {
				t.Fatalf("watch %s: %v", name, err)
			}
			if ev.Kind == client.EventMessage && ev.Message.From == bot.Fingerprint() {
				if got := string(ev.Message.Body); got != want {
					t.Fatalf("answer %q, want %q", got, want)
				}
				break
			}
		}
	}
}

// TestAuthorSenderOutlivesRestart is a sender whose daemon restarts under
// it: a send that fails is sent again with the ID its Ack carried, and the
// group holds it once.
func TestAuthorSenderOutlivesRestart(t *testing.T) {
	stateDir := t.TempDir()
	addr := testport.Cell(t) // reserved: the restart finds it free
	r, _, stop := setup(t, groupd.Config{StateDir: stateDir, Listen: addr})
	ctx := testCtx(t)
	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "sender", nil); err != nil {
		t.Fatal(err)
	}
	first, err := g.Send(ctx, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}

	stop()
	short, cancel := context.WithTimeout(ctx, time.Second)
	ack, err := g.Send(short, []byte("across"))
	cancel()
	if err == nil {
		t.Fatal("a send to a stopped daemon succeeded")
	}
	if ack.ID == (client.ID{}) {
		t.Fatalf("the failed send's Ack has no ID to retry with: %v", err)
	}
	startGroups(t, groupd.Config{StateDir: stateDir, Listen: addr, Groups: []groupd.Spec{{Name: "lobby"}},
		Registries: []string{r.Addr().String()}, RegistryFingerprints: []client.Fingerprint{r.Fingerprint()}})

	// The sender's loop: the same ID until it is stored.
	var stored client.Ack
	for {
		stored, err = g.SendWithID(ctx, ack.ID, []byte("across"))
		if err == nil {
			break
		}
		if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrUnreachable) {
			t.Fatalf("retry: %v", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("never stored: %v", err)
		}
	}
	if stored.Seq != first.Seq+1 || stored.Epoch != first.Epoch {
		t.Fatalf("stored as %d in epoch %d, want %d in %d", stored.Seq, stored.Epoch, first.Seq+1, first.Epoch)
	}
	again, err := g.SendWithID(ctx, ack.ID, []byte("across"))
	if err != nil || !again.Duplicate || again.Seq != stored.Seq {
		t.Fatalf("sent again: %+v, %v; want the first Ack as a duplicate", again, err)
	}
}

// TestAuthorCancelEndsCalls: a cancelled context ends a call at once, even
// one whose own bound (DialTimeout) is far away, and ends a watch that is
// waiting to reconnect, with nothing of the call left running.
func TestAuthorCancelEndsCalls(t *testing.T) {
	// A UDP socket that never answers: a dial to it waits for its bound.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A reserved port (testport.Cell): the watch below redials the daemon
	// stopped there, and a port the kernel chose could be bound meanwhile
	// by another test's daemon, another key answering the watch.
	r, d, stop := setup(t, groupd.Config{Listen: testport.Cell(t)})
	ctx := testCtx(t)
	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("dial", func(t *testing.T) {
		slow, err := client.New(client.Config{Identity: mustIdentity(t), DialTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := slow.Registry(cctx, silent.LocalAddr().String(), client.Fingerprint{})
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled dial: %v, want context.Canceled", err)
		}
	})
	t.Run("calls at a silent server", func(t *testing.T) {
		slow, err := client.New(client.Config{Identity: mustIdentity(t), DialTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		h, err := slow.Group(client.GroupEntry{Group: client.UUID{1}, Name: "silent", Addrs: []string{silent.LocalAddr().String()}, Fingerprint: client.Fingerprint{1}})
		if err != nil {
			t.Fatal(err)
		}
		// A Send leaves its batcher asking the daemon's limits in the
		// background, with the Client's context: the calls after it find
		// that dial in progress (behind another's dial, below).
		calls := []struct {
			name string
			call func(context.Context) error
		}{
			{"info", func(ctx context.Context) error { _, err := h.Info(ctx); return err }},
			{"fetch", func(ctx context.Context) error {
				_, err := h.Fetch(ctx, client.Query{}, func(client.Message) bool { return true })
				return err
			}},
			{"cell status", func(ctx context.Context) error {
				_, err := slow.CellStatus(ctx, silent.LocalAddr().String(), client.Fingerprint{1})
				return err
			}},
			{"send", func(ctx context.Context) error { _, err := h.Send(ctx, []byte("x")); return err }},
		}
		for _, tc := range calls {
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- tc.call(cctx) }()
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("%s, cancelled: %v, want context.Canceled", tc.name, err)
			}
		}
	})
	t.Run("behind another's dial", func(t *testing.T) {
		// A call that finds another call's dial of the same server in
		// progress waits for it only as long as its own context lets it:
		// the peer's lock was held across a dial, and a cancelled call
		// waited for the other's dial to end (up to DialTimeout).
		quiet, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer quiet.Close()
		slow, err := client.New(client.Config{Identity: mustIdentity(t), DialTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		h, err := slow.Group(client.GroupEntry{Group: client.UUID{1}, Name: "silent", Addrs: []string{quiet.LocalAddr().String()}, Fingerprint: client.Fingerprint{1}})
		if err != nil {
			t.Fatal(err)
		}
		first, cancelFirst := context.WithCancel(ctx)
		defer cancelFirst()
		firstDone := make(chan error, 1)
		go func() { _, err := h.Info(first); firstDone <- err }()
		// The first call's handshake reaching the server: its dial is in
		// progress.
		quiet.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := quiet.ReadFrom(make([]byte, 2048)); err != nil {
			t.Fatalf("the first call's dial never reached the server: %v", err)
		}
		second, cancelSecond := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancelSecond()
		secondDone := make(chan error, 1)
		go func() { _, err := h.Info(second); secondDone <- err }()
		select {
		case err := <-secondDone:
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrUnreachable) {
				t.Errorf("a call whose deadline passed behind another's dial: %v, want unreachable and its deadline", err)
			}
		case <-time.After(10 * time.Second): // the first dial's bound is an hour
			t.Error("a call whose deadline passed still waits for another call's dial")
			cancelFirst()
			<-secondDone
		}
		cancelFirst()
		if err := <-firstDone; !errors.Is(err, context.Canceled) {
			t.Errorf("the first call, cancelled: %v, want context.Canceled", err)
		}
	})
	t.Run("watch reconnecting", func(t *testing.T) {
		stop() // the watch can only wait to reconnect
		_ = d
		wctx, cancel := context.WithCancel(ctx)
		events := make(chan client.Event, 16)
		done := make(chan error, 1)
		go func() {
			defer close(events)
			for ev, err := range g.Watch(wctx, client.Query{Status: true}) {
				if err != nil {
					done <- err
					return
				}
				events <- ev
			}
			done <- nil
		}()
		for ev := range events {
			if ev.Kind == client.EventInterrupted {
				break
			}
		}
		cancel()
		for range events {
		}
		if err := <-done; err != nil {
			t.Fatalf("a cancelled watch ends with no error, got %v", err)
		}
	})
}

// TestAuthorCloseConcurrently closes a client from several goroutines while
// its watches, fetches and sends run: each watch ends with ErrClosed, every
// later call says ErrClosed, and nothing is left running (TestMain's
// goleak; TestCloseWaitsForTheFirst checks that every Close waits).
func TestAuthorCloseConcurrently(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{Groups: []groupd.Spec{{Name: "lobby"}, {Name: "ops"}}})
	ctx := testCtx(t)
	for range 10 {
		c := newClient(t)
		var groups []*client.Group
		for _, name := range []string{"lobby", "ops"} {
			g := openGroup(t, c, r.Addr().String(), name)
			if _, err := g.Join(ctx, "x", nil); err != nil {
				t.Fatal(err)
			}
			groups = append(groups, g)
		}
		var wg sync.WaitGroup
		watching := make(chan struct{}, len(groups))
		ended := make(chan error, len(groups))
		for _, g := range groups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var last error
				for ev, err := range g.Watch(ctx, client.Query{Status: true}) {
					if ev.Kind == client.EventLive {
						watching <- struct{}{}
					}
					last = err
				}
				ended <- last
			}()
		}
		for range groups {
			<-watching
		}
		// Closes, and calls racing them.
		closed := make(chan struct{}, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				closed <- struct{}{}
			}()
		}
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				groups[0].Send(ctx, []byte("racing"))
				groups[1].Fetch(ctx, client.Query{}, func(client.Message) bool { return true })
			}()
		}
		wg.Wait()
		for range groups {
			if err := <-ended; !errors.Is(err, client.ErrClosed) {
				t.Fatalf("a watch of a closed client ended with %v, want ErrClosed", err)
			}
		}
		if _, err := groups[0].Send(ctx, []byte("late")); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("send after Close: %v", err)
		}
	}
}

func mustIdentity(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAuthorWatchGapAndReset holds Watch to what its doc promises a
// program that keeps a cursor: messages retention dropped before the watch
// read them come as one EventGap, and a cursor of an epoch the log no longer
// has comes as EventReset, then the new log from its first message.
func TestAuthorWatchGapAndReset(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{Retention: store.Config{MaxMessages: 4, SegmentSize: 1}})
	ctx := testCtx(t)
	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	j, err := g.Join(ctx, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := g.Send(ctx, fmt.Appendf(nil, "m%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := g.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// first returns what a watch reports before its first message.
	first := func(q client.Query) (events []string) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for ev, err := range g.Watch(wctx, q) {
			if err != nil {
				t.Fatalf("watch %+v: %v", q, err)
			}
			switch ev.Kind {
			case client.EventGap:
				events = append(events, fmt.Sprintf("gap %d-%d", ev.From, ev.To))
			case client.EventReset:
				events = append(events, fmt.Sprintf("reset %v", ev.Epoch == info.Epoch))
			case client.EventMessage:
				return append(events, fmt.Sprintf("message %d", ev.Message.Seq))
			}
		}
		return events
	}
	want := fmt.Sprintf("[gap 3-%d message %d]", info.First-1, info.First)
	if got := fmt.Sprint(first(client.Query{After: 2, Epoch: j.Epoch})); got != want {
		t.Fatalf("a cursor retention passed: %s, want %s", got, want)
	}
	want = fmt.Sprintf("[reset true message %d]", info.First)
	if got := fmt.Sprint(first(client.Query{After: 2, Epoch: j.Epoch + 1})); got != want {
		t.Fatalf("another epoch's cursor: %s, want %s", got, want)
	}
}

// TestAuthorFindsRegistryOverMDNS is a bot with no address to go on: it
// finds a registry over mDNS (package discovery), pins the key the answer
// claims (client.ParseFingerprint: no import of wire), and joins a group
// the registry lists. In a network namespace of its own (root).
func TestAuthorFindsRegistryOverMDNS(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		reg, err := registry.New(registry.Config{Listen: "127.0.0.1:0", StateDir: t.TempDir(), MDNS: true, Interfaces: []string{"lo"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Listen(); err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { reg.Serve(rctx); close(done) }()
		t.Cleanup(func() { stop(); <-done })
		startGroups(t, groupd.Config{StateDir: t.TempDir(), Groups: []groupd.Spec{{Name: "lobby"}},
			Registries: []string{reg.Addr().String()}, RegistryFingerprints: []client.Fingerprint{reg.Fingerprint()}})

		ctx := testCtx(t)
		bot := newClient(t)
		// The program: a registry is whatever mDNS finds that proves the
		// key it advertises.
		found, addr, err := discovery.Find(ctx, discovery.BrowseConfig{
			Interfaces: []string{"lo"},
			Verify: func(ctx context.Context, r discovery.Advertised, addr netip.AddrPort) error {
				fp, err := client.ParseFingerprint(r.Fingerprint)
				if err != nil {
					return err
				}
				h, err := bot.Registry(ctx, addr.String(), fp)
				if err != nil {
					return err
				}
				return h.Close()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		fp, err := client.ParseFingerprint(found.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		if fp != reg.Fingerprint() {
			t.Fatalf("found %v, want the registry's %v", fp, reg.Fingerprint())
		}
		g := openGroup(t, bot, addr.String(), "lobby")
		if _, err := g.Join(ctx, "bot", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Send(ctx, []byte("found you")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAuthorSinceFarFromNow: a script's "since" far in the past selects
// everything and one far in the future nothing (they wrapped around an
// int64 of nanoseconds: 500 years ago selected nothing, and the year 3000
// everything).
func TestAuthorSinceFarFromNow(t *testing.T) {
	ctx, g := scriptInLobby(t)
	for range 3 {
		if _, err := g.Send(ctx, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		since time.Time
		want  int
	}{
		{time.Now().AddDate(-500, 0, 0), 3},
		{time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), 3},
		{time.Unix(0, 0), 3},
		{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 0},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 0},
	} {
		n := 0
		if _, err := g.Fetch(ctx, client.Query{Since: tc.since}, func(client.Message) bool { n++; return true }); err != nil {
			t.Fatalf("since %v: %v", tc.since, err)
		}
		if n != tc.want {
			t.Errorf("since %v: %d messages, want %d", tc.since, n, tc.want)
		}
	}
}

// TestAuthorFetchStoppedByYield: a script that stops reading (yield returns
// false) continues from the Cursor it got, and misses and repeats nothing
// (the Cursor was the zero one on a first page, so a script continuing from
// it read everything again, and the previous page's on a later page).
func TestAuthorFetchStoppedByYield(t *testing.T) {
	r, _, _ := setup(t, groupd.Config{FetchPage: 4})
	ctx := testCtx(t)
	c := newClient(t)
	g := openGroup(t, c, r.Addr().String(), "lobby")
	if _, err := g.Join(ctx, "script", nil); err != nil {
		t.Fatal(err)
	}
	var last client.Ack
	for i := range 10 {
		var err error
		if last, err = g.Send(ctx, fmt.Appendf(nil, "m%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	// Pages of four: three at a time stop within a fetch's first page,
	// five at a time within its second.
	for _, each := range []int{3, 5} {
		t.Run(fmt.Sprint(each), func(t *testing.T) { readInSteps(t, ctx, g, each, last) })
	}
}

func readInSteps(t *testing.T, ctx context.Context, g *client.Group, each int, last client.Ack) {
	var got []uint64
	q := client.Query{}
	for range 10 {
		taken := 0
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool {
			got = append(got, m.Seq)
			taken++
			return taken < each
		})
		if err != nil {
			t.Fatal(err)
		}
		if cur.Epoch != last.Epoch || cur.Last != last.Seq {
			t.Fatalf("cursor %+v: want epoch %d, last %d", cur, last.Epoch, last.Seq)
		}
		if !cur.More {
			break
		}
		q = client.Query{After: cur.Next, Epoch: cur.Epoch}
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("read %v", got)
	}
}

// TestAuthorFetchOneAndStop: a fetch of one message that stops at it (as
// loadgen's checks do) reads the page's End, which follows at once, and
// gets the whole Cursor from it.
func TestAuthorFetchOneAndStop(t *testing.T) {
	ctx, g := scriptInLobby(t)
	var last client.Ack
	for range 3 {
		var err error
		if last, err = g.Send(ctx, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := g.Fetch(ctx, client.Query{After: 1, Limit: 1}, func(client.Message) bool { return false })
	want := client.Cursor{Next: 2, Epoch: last.Epoch, First: 1, Last: 3, More: true}
	if err != nil || cur != want {
		t.Fatalf("cursor %+v, %v; want %+v", cur, err, want)
	}
}

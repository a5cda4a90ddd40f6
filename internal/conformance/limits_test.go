//go:build linux

package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/quic"
)

// TestLimitsAndShutdown runs the client against a `huddle up` with small
// limits: a private group's secret, retention's gaps, the send rate, the
// request deadline (§3, §8), and then the daemon's graceful stop (§3
// "Shutting down").
func TestLimitsAndShutdown(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	// As `echo` writes it: §8.2 says the final line ending is not the secret's.
	if err := os.WriteFile(secret, []byte("open sesame\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startHuddle(t, "huddle up", nil, "up", "--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0", "--no-mdns",
		"--state-dir", t.TempDir(), "--max-msgs", "2", "--max-batch", "4", "--send-rate", "0.01", "--send-burst", "4",
		"--request-timeout", "300ms", "--max-streams", "2", "--secret-file", "private="+secret,
		"--group", "private", "--group", "retained", "--group", "rated")
	s := &single{registry: serverFrom(t, p.waitLine(t, registryLine)), daemon: serverFrom(t, p.waitLine(t, daemonLine)),
		groups: make(map[string]groupEntry)}
	waitListed(t, s, "private", "retained", "rated")

	t.Run("limits", func(t *testing.T) {
		t.Run("private", func(t *testing.T) { t.Parallel(); testPrivate(t, s) })
		t.Run("retention", func(t *testing.T) { t.Parallel(); testRetention(t, s) })
		t.Run("rate", func(t *testing.T) { t.Parallel(); testRate(t, s) })
		t.Run("request deadline", func(t *testing.T) { t.Parallel(); testRequestDeadline(t, s) })
		t.Run("registration", func(t *testing.T) { t.Parallel(); testRegistration(t, s) })
		t.Run("cell registration", func(t *testing.T) { t.Parallel(); testCellRegistration(t, s) })
		t.Run("list order", func(t *testing.T) { t.Parallel(); testListOrder(t, s) })
		t.Run("streams", func(t *testing.T) { t.Parallel(); testStreamLimit(t, s) })
		t.Run("paging", func(t *testing.T) { t.Parallel(); testListPaging(t, s) })
	})
	t.Run("shutdown", func(t *testing.T) { testShutdown(t, s, p) })
}

// waitListed lists until the registry has the groups named.
func waitListed(t *testing.T, s *single, names ...string) {
	t.Helper()
	c := newPeer(t).mustDial(t, s.registry.addr, s.registry.fp)
	defer c.close()
	ctx := ctxT(t)
	for {
		all, err := c.listAll(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, g := range all {
			s.groups[g.name] = g
		}
		missing := false
		for _, n := range names {
			_, ok := s.groups[n]
			missing = missing || !ok
		}
		if !missing {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the registry lists %d of the groups %v", len(s.groups), names)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// testPrivate: join needs the secret (§8.2).
func testPrivate(t *testing.T, s *single) {
	g := s.groups["private"].group
	ctx := ctxT(t)
	c := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	in, err := c.info(ctx, g)
	if err != nil || !in.private {
		t.Fatalf("info: private %v, %v; want true", in.private, err)
	}
	for _, tc := range []struct {
		name   string
		secret []byte
		code   uint64
	}{
		{"no secret", nil, codeUnauthorized},
		{"a wrong secret", []byte("open sesame!"), codeUnauthorized},
		{"the file's bytes, line ending and all", []byte("open sesame\r\n"), codeUnauthorized},
		{"a secret over 256 bytes", make([]byte, 257), codeTooLarge},
	} {
		args := cmap{1: g, 2: "joiner"}
		if tc.secret != nil {
			args[3] = tc.secret
		}
		_, err := c.call(ctx, opJoin, args)
		wantCode(t, "join with "+tc.name, err, tc.code)
	}
	body, err := c.call(ctx, opJoin, cmap{1: g, 2: "joiner", 3: []byte("open sesame")})
	if err != nil {
		t.Fatalf("join with the secret: %v", err)
	}
	if j, err := decodeJoined(body); err != nil || j.already || j.epoch != in.epoch {
		t.Errorf("joined %+v, %v", j, err)
	}
}

// testRetention: max_messages 2; what was dropped is a Gap for a cursor,
// and a batch retention could never hold is too_large (§8.5-8.7).
func testRetention(t *testing.T, s *single) {
	g := s.groups["retained"].group
	ctx := ctxT(t)
	_, c, j := s.member(t, "retained", "keeper")
	_, err := c.send(ctx, g, outgoing{newID(), []byte("1")}, outgoing{newID(), []byte("2")}, outgoing{newID(), []byte("3")})
	wantCode(t, "a batch of 3 where 2 are kept", err, codeTooLarge)
	for _, body := range []string{"1", "2", "3"} {
		if _, err := c.send(ctx, g, outgoing{newID(), []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	in, err := c.info(ctx, g)
	if err != nil || in.first != 2 || in.last != 3 || in.limits.maxMessages != 2 {
		t.Fatalf("info: first %d, last %d, max_messages %d, %v; want 2, 3, 2", in.first, in.last, in.limits.maxMessages, err)
	}
	msgs, end, err := c.fetch(ctx, query{group: g, hasAfter: true})
	if err != nil || len(msgs) != 2 || msgs[0].seq != 2 || end != (endOf(3, false, 2, 3, j.epoch)) {
		t.Errorf("fetch after 0: %v %+v, %v; want 2..3 (a gap: 1 < first)", msgs, end, err)
	}
	// A watch from a cursor: Start, one Gap, then what is held.
	w, err := c.watch(ctx, query{group: g, hasAfter: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.s.cancel()
	if w.start != (start{epoch: j.epoch, first: 2, last: 3, heartbeatMS: 5000}) {
		t.Errorf("start %+v", w.start)
	}
	ev, err := w.next()
	if err != nil || ev.kind != kindGap || ev.gapFrom != 1 || ev.gapTo != 1 {
		t.Fatalf("after Start: %+v, %v; want Gap 1..1", ev, err)
	}
	got, err := w.messagesUntil(3)
	if err != nil || len(got) != 2 || got[0].seq != 2 {
		t.Errorf("watched %v, %v; want 2, 3", got, err)
	}
	// A watch with no selection gets no Gap for what was dropped before.
	w2, err := c.watch(ctx, query{group: g})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.s.cancel()
	if ev, err := w2.next(); err != nil || ev.kind != kindMessages || ev.messages[0].seq != 2 {
		t.Errorf("a watch of everything held: %+v, %v; want Messages from 2", ev, err)
	}
}

func endOf(next uint64, more bool, first, last, epoch uint64) end {
	return end{next: next, more: more, first: first, last: last, epoch: epoch}
}

// testRate: a bucket of 4 refilled at one token per 100 s (so that a slow
// run cannot refill it); duplicates take tokens too (§8.5).
func testRate(t *testing.T, s *single) {
	g := s.groups["rated"].group
	ctx := ctxT(t)
	_, c, _ := s.member(t, "rated", "chatty")
	in, err := c.info(ctx, g)
	if err != nil || in.limits.sendRateMilli != 10 || in.limits.sendBurst != 4 || in.limits.maxBatch != 4 {
		t.Fatalf("limits %+v, %v; want rate 10 (a message per 100 s), burst 4, batch 4", in.limits, err)
	}
	one := outgoing{newID(), []byte("1")}
	for _, msgs := range [][]outgoing{{one, {newID(), []byte("2")}}, {{newID(), []byte("3")}}} {
		if _, err := c.send(ctx, g, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.send(ctx, g, one); err != nil || !s.acks[0].duplicate {
		t.Fatalf("a duplicate: %+v, %v", s, err)
	}
	_, err = c.send(ctx, g, one)
	pe := wantCode(t, "a fifth message (a duplicate) in a bucket of 4", err, codeRateLimited)
	if pe.retryAfter < 90000 || pe.retryAfter > 100000 {
		t.Errorf("retry_after_ms %d, want about 100000 (a token at one per 100 s)", pe.retryAfter)
	}
}

// testRequestDeadline: a request not finished within request_timeout_ms
// (300 ms here) is reset with 0x2 (§3 "Deadlines").
func testRequestDeadline(t *testing.T, s *single) {
	c := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	ctx := ctxT(t)
	qs, err := c.q.NewStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qs.SetReadContext(ctx)
	if _, err := qs.Write([]byte{0, 0, 0, 9, 0xa2}); err != nil {
		t.Fatal(err)
	}
	qs.Flush()
	_, err = qs.Read(make([]byte, 1))
	var se quic.StreamError
	if !errors.As(err, &se) || se != 2 {
		t.Errorf("a request never finished: %v; want the stream reset with 2 (timeout)", err)
	}
	qs.Reset(1)
}

// testShutdown: SIGTERM; a watch in flight ends with unavailable, then
// the connection is closed with 0x2 (§3 "Shutting down").
func testShutdown(t *testing.T, s *single, p *proc) {
	g := s.groups["rated"].group
	ctx := ctxT(t)
	_, c, _ := s.member(t, "rated", "stayer")
	w, err := c.watch(ctx, query{group: g, after: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The client learns of the stop "from an unavailable error or the
	// close code": the Error frame may be lost with the connection.
	ev, err := w.next()
	for err == nil && ev.kind == kindHeartbeat {
		ev, err = w.next()
	}
	if err == nil && (ev.kind != kindError || ev.err.code != codeUnavailable) {
		t.Errorf("the watch as the daemon stops: %+v; want Error unavailable", ev)
	} else if err != nil {
		t.Logf("the watch as the daemon stops: %v (no Error frame: the close must say it)", err)
	}
	select {
	case <-c.ended.Done():
	case <-ctx.Done():
		t.Fatal("the connection did not end with the daemon")
	}
	var ce *quic.ConnectionCloseError
	if cause := context.Cause(c.ended); !errors.As(cause, &ce) || ce.Code != 2 {
		t.Errorf("the connection ended with %v; want close code 0x2 (shutting down)", cause)
	}
}

// testRegistration: §7.1-7.4 from a key of our own: a registration, its
// listing, renewals, the owner's rights and deregistering.
func testRegistration(t *testing.T, s *single) {
	ctx := ctxT(t)
	owner, other := newPeer(t), newPeer(t)
	c := owner.mustDial(t, s.registry.addr, s.registry.fp)
	oc := other.mustDial(t, s.registry.addr, s.registry.fp)
	g := newUUID()
	lease := func(body cmap, err error) (epoch, ttl uint64) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		r := reader{m: body}
		epoch, ttl = r.uint(1), r.uint(2)
		if r.err != nil || epoch == 0 || ttl != 15000 {
			t.Fatalf("lease %v, %v; want an epoch and ttl_ms 15000", body, r.err)
		}
		return epoch, ttl
	}
	listed := func() *groupEntry { t.Helper(); return mustListed(t, c, g) }

	// Refused registrations.
	for _, tc := range []struct {
		name string
		args cmap
		code uint64
	}{
		{"neither addrs nor port", cmap{1: g, 2: "conformance"}, codeBadRequest},
		{"no name", cmap{1: g, 4: uint64(7000)}, codeBadRequest},
		{"an empty address", cmap{1: g, 2: "conformance", 3: []any{""}}, codeBadRequest},
		{"an address over 64 bytes", cmap{1: g, 2: "conformance", 3: []any{strings.Repeat("a", 60) + ":7000"}}, codeTooLarge},
		{"17 addresses", cmap{1: g, 2: "conformance", 3: func() (a []any) {
			for range 17 {
				a = append(a, "10.0.0.1:7000")
			}
			return a
		}()}, codeTooLarge},
		{"a port over 65535", cmap{1: g, 2: "conformance", 4: uint64(65536)}, codeBadRequest},
		// §7.1: each address is host:port.
		{"an address without a port", cmap{1: g, 2: "conformance", 3: []any{"10.0.0.1"}}, codeBadRequest},
		{"an address whose port is over 65535", cmap{1: g, 2: "conformance", 3: []any{"10.0.0.1:65536"}}, codeBadRequest},
		{"an address whose port is 0", cmap{1: g, 2: "conformance", 3: []any{"10.0.0.1:0"}}, codeBadRequest},
		{"an address with a blank", cmap{1: g, 2: "conformance", 3: []any{"box one:7000"}}, codeBadRequest},
		{"an address with a line break", cmap{1: g, 2: "conformance", 3: []any{"box\n1:7000"}}, codeBadRequest},
	} {
		_, err := c.call(ctx, 1, tc.args)
		wantCode(t, "register with "+tc.name, err, tc.code)
	}

	// Port only: listed at the connection's source address.
	epoch, _ := lease(c.call(ctx, 1, cmap{1: g, 2: "conformance", 4: uint64(7000), 5: uint64(2), 6: uint64(40)}))
	e := listed()
	if e == nil || e.name != "conformance" || !slices.Equal(e.addrs, []string{"127.0.0.1:7000"}) || e.fp != owner.fp ||
		e.members != 2 || e.lastSeq != 40 || e.expiresMS == 0 || e.expiresMS > 15000 {
		t.Fatalf("listed %+v; want conformance at 127.0.0.1:7000, our key, 2 members, last_seq 40", e)
	}
	// Renewals update the counters; another epoch is epoch_mismatch with
	// the current one; only the owner may renew, register or deregister.
	lease(c.call(ctx, 2, cmap{1: g, 2: epoch, 3: uint64(3), 4: uint64(41)}))
	if e := listed(); e == nil || e.members != 3 || e.lastSeq != 41 {
		t.Errorf("after renewing: %+v; want 3 members, last_seq 41", e)
	}
	_, err := c.call(ctx, 2, cmap{1: g, 2: epoch + 1})
	if pe := wantCode(t, "renew in another epoch", err, codeEpochMismatch); pe.epoch != epoch {
		t.Errorf("epoch_mismatch carries %d, want %d", pe.epoch, epoch)
	}
	for op, args := range map[uint64]cmap{1: {1: g, 2: "mine now", 4: uint64(1)}, 2: {1: g, 2: epoch}, 3: {1: g}} {
		_, err := oc.call(ctx, op, args)
		wantCode(t, fmt.Sprintf("op %d by another key", op), err, codeUnauthorized)
	}
	// Registering again replaces the listing.
	lease(c.call(ctx, 1, cmap{1: g, 2: "renamed", 3: []any{"10.0.0.1:7000", "[fd00::1]:7000"}}))
	if e := listed(); e == nil || e.name != "renamed" || !slices.Equal(e.addrs, []string{"10.0.0.1:7000", "[fd00::1]:7000"}) || e.members != 0 {
		t.Errorf("registered again: %+v; want renamed at the two addresses given, counters reset", e)
	}
	// Deregistering takes it out at once; again is no error; a renewal
	// then is not_found, and anyone may register the UUID.
	for range 2 {
		if body, err := c.call(ctx, 3, cmap{1: g}); err != nil || len(body) != 0 {
			t.Errorf("deregister: %v, %v; want {}", body, err)
		}
	}
	if e := listed(); e != nil {
		t.Errorf("listed after deregistering: %+v", e)
	}
	_, err = c.call(ctx, 2, cmap{1: g, 2: epoch})
	wantCode(t, "renew of a deregistered group", err, codeNotFound)
	lease(oc.call(ctx, 1, cmap{1: g, 2: "taken over", 4: uint64(1)}))
	if body, err := oc.call(ctx, 3, cmap{1: g}); err != nil || len(body) != 0 {
		t.Errorf("deregister: %v, %v", body, err)
	}
}

// mustListed returns the registry's entry for group, or nil if the whole
// listing has none.
func mustListed(t *testing.T, c *conn, group []byte) *groupEntry {
	t.Helper()
	all, err := c.listAll(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if bytes.Equal(e.group, group) {
			return &e
		}
	}
	return nil
}

// testStreamLimit: max_streams 2; a third stream is held back by QUIC's
// flow control, not refused, and opens once one of the two ends (§3).
func testStreamLimit(t *testing.T, s *single) {
	g := s.groups["retained"].group
	ctx := ctxT(t)
	_, c, _ := s.member(t, "retained", "streams")
	in, err := c.info(ctx, g)
	if err != nil || in.limits.maxStreams != 2 {
		t.Fatalf("max_streams %d, %v; want 2", in.limits.maxStreams, err)
	}
	var ws []*watch
	for range 2 {
		w, err := c.watch(ctx, query{group: g})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	held, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.q.NewStream(held); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third stream: %v; want it held back", err)
	}
	ws[0].s.cancel()
	if in, err := c.info(ctx, g); err != nil || in.name != "retained" {
		t.Errorf("info once a watch ended: %+v, %v", in, err)
	}
	ws[1].s.cancel()
}

// testListPaging: §7.4's pages, about 128 KiB each: 150 groups with 16
// addresses of 64 bytes take two pages or more, read with next, each
// group once, in name order.
func testListPaging(t *testing.T, s *single) {
	ctx := ctxT(t)
	c := newPeer(t).mustDial(t, s.registry.addr, s.registry.fp)
	var addrs []any
	for i := range 16 {
		addrs = append(addrs, fmt.Sprintf("%s.example:%d", strings.Repeat("h", 49), 7000+i)) // 64 bytes
	}
	want := map[string][]byte{}
	for i := range 150 {
		name, g := fmt.Sprintf("paged %03d %s", i, strings.Repeat("n", 50)), newUUID()
		if _, err := c.call(ctx, 1, cmap{1: g, 2: name, 3: addrs}); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
		want[name] = g
	}
	var names []string
	var after []byte
	pages, epoch := 0, uint64(0)
	for {
		p, err := c.list(ctx, after)
		if err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		pages++
		if pages > 1 && p.epoch != epoch {
			t.Fatalf("epoch %d, then %d", epoch, p.epoch)
		}
		epoch = p.epoch
		for _, e := range p.groups {
			if g, ok := want[e.name]; ok && bytes.Equal(e.group, g) {
				names = append(names, e.name)
			}
		}
		if p.next == nil {
			break
		}
		if len(p.next) > 256 || pages > 100 {
			t.Fatalf("page %d: next of %d bytes; want at most 256, and an end", pages, len(p.next))
		}
		after = p.next
	}
	if pages < 2 || len(names) != len(want) || !slices.IsSorted(names) {
		t.Errorf("%d pages, %d of our %d groups (sorted: %v); want 2 or more pages, each group once in name order", pages, len(names), len(want), slices.IsSorted(names))
	}
	t.Logf("%d groups read in %d pages", len(names), pages)
	for _, g := range want {
		if _, err := c.call(ctx, 3, cmap{1: g}); err != nil {
			t.Fatal(err)
		}
	}
}

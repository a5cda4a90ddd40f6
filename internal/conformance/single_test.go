//go:build linux

package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/quic"
)

// single is a `huddle up` (a registry and a group daemon) and the groups
// it hosts, each subtest using its own.
type single struct {
	registry server
	daemon   server
	groups   map[string]groupEntry // by name, from the registry's listing
	started  time.Time
}

// Limits given to the daemon so that the tests can reach them.
const (
	testMaxMessage = 4096
	testMaxBatch   = 8
	testFetchPage  = 5
)

var singleGroups = []string{"quiet", "members", "send", "fetch", "watch", "errors", "answers"}

func startSingle(t *testing.T) *single {
	t.Helper()
	started := time.Now()
	args := []string{"up", "--listen", "127.0.0.1:0", "--daemon-listen", "127.0.0.1:0", "--no-mdns",
		"--state-dir", t.TempDir(), "--max-message", fmt.Sprint(testMaxMessage), "--max-batch", fmt.Sprint(testMaxBatch),
		"--fetch-page", fmt.Sprint(testFetchPage)}
	for _, g := range singleGroups {
		args = append(args, "--group", g)
	}
	p := startHuddle(t, "huddle up", nil, args...)
	s := &single{
		registry: serverFrom(t, p.waitLine(t, registryLine)),
		daemon:   serverFrom(t, p.waitLine(t, daemonLine)),
		groups:   make(map[string]groupEntry),
		started:  started,
	}
	// The daemon registers its groups right after it prints its lines:
	// list until they are all there.
	c := newPeer(t).mustDial(t, s.registry.addr, s.registry.fp)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for len(s.groups) < len(singleGroups) {
		all, err := c.listAll(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, g := range all {
			s.groups[g.name] = g
		}
		if len(s.groups) < len(singleGroups) {
			select {
			case <-ctx.Done():
				t.Fatalf("the registry lists %d of the %d groups", len(s.groups), len(singleGroups))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	c.close()
	return s
}

// member makes a user that joined group g as name, on a connection of its own.
func (s *single) member(t *testing.T, g string, name string) (*peer, *conn, joined) {
	t.Helper()
	p := newPeer(t)
	c := p.mustDial(t, s.daemon.addr, s.daemon.fp)
	j, err := c.join(ctxT(t), s.groups[g].group, name)
	if err != nil {
		t.Fatalf("join %s as %s: %v", g, name, err)
	}
	return p, c, j
}

// ctxT is a context for one test's calls.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails t unless err is a protocol Error of code want.
func wantCode(t *testing.T, what string, err error, want uint64) *protoError {
	t.Helper()
	var pe *protoError
	if !errors.As(err, &pe) || pe.code != want {
		t.Fatalf("%s: %v, want error code %d", what, err, want)
	}
	if pe.message == "" {
		t.Errorf("%s: error %d with no message", what, pe.code)
	}
	return pe
}

// TestSingleDaemon runs the client against one `huddle up`: every
// operation of a registry and a group daemon, and their documented
// errors.
func TestSingleDaemon(t *testing.T) {
	t.Parallel()
	s := startSingle(t)
	t.Run("list", func(t *testing.T) { t.Parallel(); testList(t, s) })
	t.Run("info", func(t *testing.T) { t.Parallel(); testInfo(t, s) })
	t.Run("members", func(t *testing.T) { t.Parallel(); testMembers(t, s) })
	t.Run("send", func(t *testing.T) { t.Parallel(); testSend(t, s) })
	t.Run("fetch", func(t *testing.T) { t.Parallel(); testFetch(t, s) })
	t.Run("watch", func(t *testing.T) { t.Parallel(); testWatch(t, s) })
	t.Run("errors", func(t *testing.T) { t.Parallel(); testErrors(t, s) })
	t.Run("frames", func(t *testing.T) { t.Parallel(); testMalformed(t, s) })
	t.Run("answers", func(t *testing.T) { t.Parallel(); testAnswers(t, s) })
	t.Run("handshake", func(t *testing.T) { t.Parallel(); testHandshake(t, s) })
	t.Run("heartbeat", func(t *testing.T) { t.Parallel(); testHeartbeat(t, s) })
}

// testList: §7.4 on a registry of one daemon's groups.
func testList(t *testing.T, s *single) {
	c := newPeer(t).mustDial(t, s.registry.addr, s.registry.fp)
	ctx := ctxT(t)
	p, err := c.list(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.epoch == 0 || p.next != nil {
		t.Errorf("epoch %d, next %x; want a nonzero epoch and no next page", p.epoch, p.next)
	}
	var names []string
	for _, g := range p.groups {
		names = append(names, g.name)
		if !slices.Equal(g.addrs, []string{s.daemon.addr}) || g.fp != s.daemon.fp || len(g.group) != 16 || g.replicas != nil {
			t.Errorf("%s: addrs %v, fingerprint %s, replicas %v; want [%s], %s, none", g.name, g.addrs, g.fp, g.replicas, s.daemon.addr, s.daemon.fp)
		}
		if g.expiresMS == 0 || g.expiresMS > 15000 {
			t.Errorf("%s: expires_ms %d, want 1..15000 (the default TTL)", g.name, g.expiresMS)
		}
	}
	want := slices.Clone(singleGroups)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("groups %v, want %v in name order", names, want)
	}
	if q := s.groups["quiet"]; q.members != 0 || q.lastSeq != 0 {
		t.Errorf("quiet: members %d, last_seq %d; want 0, 0", q.members, q.lastSeq)
	}

	// §4, §5: a list with no args at all, with null args, with a key the
	// registry does not know, with keys out of order and with an op not in
	// its shortest form are all the same request.
	for _, raw := range [][]byte{
		frame([]byte{0xa1, 0x00, 0x04}),
		frame([]byte{0xa2, 0x00, 0x04, 0x01, 0xf6}),
		request(opList, cmap{99: "from the future"}),
		frame([]byte{0xa2, 0x01, 0xa0, 0x00, 0x04}),
		frame([]byte{0xa1, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x04}),
	} {
		body, err := c.roundTrip(ctx, raw)
		if err != nil {
			t.Fatalf("list %x: %v", raw, err)
		}
		if e, _ := body.uint(1); e != p.epoch {
			t.Errorf("list %x: epoch %d, want %d", raw, e, p.epoch)
		}
	}
	// A cursor the registry did not issue.
	_, err = c.list(ctx, []byte("not a cursor"))
	wantCode(t, "list after a made-up cursor", err, codeBadRequest)
	// A group operation sent to a registry.
	_, err = c.info(ctx, s.groups["quiet"].group)
	wantCode(t, "info sent to the registry", err, codeUnsupported)
}

// testInfo: §8.1 on a group nobody touches.
func testInfo(t *testing.T, s *single) {
	q := s.groups["quiet"]
	c := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	in, err := c.info(ctxT(t), q.group)
	if err != nil {
		t.Fatal(err)
	}
	want := info{group: q.group, name: "quiet", epoch: in.epoch, fp: s.daemon.fp, storage: "disk", fsync: "interval",
		fsyncIntervalMS: 1000,
		limits: limits{maxMessageBytes: testMaxMessage, maxBatch: testMaxBatch, maxMessages: 1000000, maxBytes: 256 << 20,
			fetchPage: testFetchPage, maxMembers: 8192, sendRateMilli: 100000, sendBurst: 1000, heartbeatMS: 5000,
			maxFrameBytes: 1 << 20, maxStreams: 1000, maxConnsPerAddr: 256, requestTimeoutMS: 10000, idleTimeoutMS: 30000}}
	if in.epoch == 0 {
		t.Error("epoch 0: §8 says a log's epoch is nonzero")
	}
	if fmt.Sprint(in) != fmt.Sprint(want) {
		t.Errorf("info:\n got %+v\nwant %+v", in, want)
	}
}

// testMembers: join (and again), members with presence, leave (and again).
func testMembers(t *testing.T, s *single) {
	g := s.groups["members"].group
	ctx := ctxT(t)
	before := time.Now().UnixNano()
	alice, ac, j := s.member(t, "members", "alice")
	in, err := ac.info(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if j != (joined{epoch: in.epoch}) || !in.member || in.members != 1 {
		t.Errorf("joined %+v, info member %v members %d; want {epoch %d}, true, 1", j, in.member, in.members, in.epoch)
	}
	// Joining again keeps the membership and takes the new name.
	if j, err := ac.join(ctx, g, "Alice 🐝"); err != nil || j != (joined{epoch: in.epoch, already: true}) {
		t.Errorf("join again: %+v, %v; want already", j, err)
	}
	bob, bc, _ := s.member(t, "members", "bob")
	after := time.Now().UnixNano()

	// Bob watches: he is online; alice is not.
	w, err := bc.watch(ctx, query{group: g})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ac.members(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]member{}
	for _, m := range ms {
		byName[m.name] = m
	}
	a, b := byName["Alice 🐝"], byName["bob"]
	if len(ms) != 2 || a.fp != alice.fp || b.fp != bob.fp {
		t.Fatalf("members %+v; want Alice 🐝 (%s) and bob (%s)", ms, alice.fp, bob.fp)
	}
	for _, m := range ms {
		if m.joined < before || m.joined > after || !m.seen || m.lastSeen < m.joined {
			t.Errorf("%s: joined %d, last_seen %d (present %v); want joined in [%d, %d], last_seen after it", m.name, m.joined, m.lastSeen, m.seen, before, after)
		}
	}
	if a.online || !b.online {
		t.Errorf("online: alice %v, bob %v; want false, true (bob watches)", a.online, b.online)
	}

	// Alice watches and cancels (§3, code 0x1): she is online, then not.
	aw, err := ac.watch(ctx, query{group: g})
	if err != nil {
		t.Fatal(err)
	}
	if !online(t, ac, g, alice.fp) {
		t.Error("alice watching: not online")
	}
	aw.s.cancel()
	deadline := time.Now().Add(waitTimeout)
	for online(t, ac, g, alice.fp) {
		if time.Now().After(deadline) {
			t.Fatal("alice cancelled her watch: still online")
		}
		time.Sleep(10 * time.Millisecond) // polling the daemon's view: there is no event to wait on
	}

	// Bob leaves: his watch ends with not_member; leaving again is no error.
	if was, err := bc.leave(ctx, g); err != nil || !was {
		t.Fatalf("leave: %v, %v; want was_member", was, err)
	}
	ev, err := w.next()
	if err != nil || ev.kind != kindError || ev.err.code != codeNotMember {
		t.Fatalf("bob's watch after he left: %+v, %v; want Error not_member", ev, err)
	}
	if was, err := bc.leave(ctx, g); err != nil || was {
		t.Errorf("leave again: %v, %v; want not was_member", was, err)
	}
	_, err = bc.members(ctx, g)
	wantCode(t, "members after leaving", err, codeNotMember)
	if ms, err := ac.members(ctx, g); err != nil || len(ms) != 1 || ms[0].fp != alice.fp {
		t.Errorf("members after bob left: %+v, %v; want alice alone", ms, err)
	}
}

// testSend: one message, a batch, retries of both, and the batch rules.
func testSend(t *testing.T, s *single) {
	g := s.groups["send"].group
	ctx := ctxT(t)
	_, c, j := s.member(t, "send", "sender")

	one := outgoing{id: newID(), body: []byte("hi")}
	first, err := c.send(ctx, g, one)
	if err != nil {
		t.Fatal(err)
	}
	if first.epoch != j.epoch || first.acks[0].seq != 1 || first.acks[0].duplicate || first.acks[0].ts <= 0 {
		t.Fatalf("sent %+v; want epoch %d, seq 1, not duplicate", first, j.epoch)
	}
	batch := []outgoing{{newID(), []byte("a")}, {newID(), []byte{}}, {newID(), bytes.Repeat([]byte{0xff}, testMaxMessage)}}
	sb, err := c.send(ctx, g, batch...)
	if err != nil {
		t.Fatal(err)
	}
	prev := first.acks[0].ts
	for i, a := range sb.acks {
		if a.seq != uint64(2+i) || a.ts <= prev || a.duplicate {
			t.Errorf("ack %d: %+v; want seq %d, ts after %d, not duplicate", i, a, 2+i, prev)
		}
		prev = a.ts
	}
	// Retries of the same IDs get their original acks, marked duplicate.
	again, err := c.send(ctx, g, one)
	if err != nil || again.acks[0] != (ack{seq: 1, ts: first.acks[0].ts, duplicate: true}) {
		t.Errorf("retry of message 1: %+v, %v; want its first ack, duplicate", again, err)
	}
	againB, err := c.send(ctx, g, batch...)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range againB.acks {
		if want := (ack{seq: sb.acks[i].seq, ts: sb.acks[i].ts, duplicate: true}); a != want {
			t.Errorf("retry of the batch, ack %d: %+v, want %+v", i, a, want)
		}
	}

	// Refused whole, nothing appended.
	refusals := []struct {
		name string
		msgs []outgoing
		code uint64
	}{
		{"a body over max_message_bytes", []outgoing{{newID(), []byte("ok")}, {newID(), make([]byte, testMaxMessage+1)}}, codeTooLarge},
		{"more than max_batch messages", func() (m []outgoing) {
			for range testMaxBatch + 1 {
				m = append(m, outgoing{newID(), []byte("x")})
			}
			return m
		}(), codeTooLarge},
		{"two messages of one ID", []outgoing{one, one}, codeBadRequest},
		{"an all-zero ID", []outgoing{{make([]byte, 16), []byte("x")}}, codeBadRequest},
		{"no messages", nil, codeBadRequest},
	}
	for _, r := range refusals {
		var raw []byte
		if r.msgs == nil {
			raw = request(opSend, cmap{1: g, 2: []any{}})
		} else {
			raw = sendRequest(g, r.msgs...)
		}
		_, err := c.roundTrip(ctx, raw)
		wantCode(t, r.name, err, r.code)
	}
	if in, err := c.info(ctx, g); err != nil || in.last != 4 {
		t.Errorf("info after the refusals: last %d, %v; want 4", in.last, err)
	}
}

// sendN sends n numbered messages in batches and returns their acks.
func sendN(t *testing.T, c *conn, g []byte, n int, prefix string) ([]outgoing, []ack) {
	t.Helper()
	var msgs []outgoing
	var acks []ack
	for i := 0; i < n; i += testMaxBatch {
		var batch []outgoing
		for k := i; k < min(n, i+testMaxBatch); k++ {
			batch = append(batch, outgoing{newID(), []byte(fmt.Sprintf("%s %d", prefix, k+1))})
		}
		s, err := c.send(ctxT(t), g, batch...)
		if err != nil {
			t.Fatal(err)
		}
		msgs, acks = append(msgs, batch...), append(acks, s.acks...)
	}
	return msgs, acks
}

// testFetch: §8.6's selections and paging over 12 messages, fetch_page 5.
func testFetch(t *testing.T, s *single) {
	g := s.groups["fetch"].group
	ctx := ctxT(t)
	p, c, j := s.member(t, "fetch", "reader")
	msgs, acks := sendN(t, c, g, 12, "message")
	want := func(seq uint64) message {
		return message{seq: seq, ts: acks[seq-1].ts, id: msgs[seq-1].id, from: p.fp, name: "reader", body: msgs[seq-1].body}
	}
	wantRange := func(from, to uint64) (out []message) {
		for seq := from; seq <= to; seq++ {
			out = append(out, want(seq))
		}
		return out
	}
	e := j.epoch
	cases := []struct {
		name string
		q    query
		msgs []message
		end  end
	}{
		{"everything, capped at fetch_page", query{}, wantRange(1, 5), end{next: 5, more: true, first: 1, last: 12, epoch: e}},
		{"after 0 with a limit", query{hasAfter: true, limit: 2}, wantRange(1, 2), end{next: 2, more: true, first: 1, last: 12, epoch: e}},
		{"after a cursor", query{after: 9, epoch: e}, wantRange(10, 12), end{next: 12, more: false, first: 1, last: 12, epoch: e}},
		{"a limit over fetch_page", query{after: 3, limit: 100}, wantRange(4, 8), end{next: 8, more: true, first: 1, last: 12, epoch: e}},
		{"after the last", query{after: 12}, nil, end{next: 12, first: 1, last: 12, epoch: e}},
		{"after 2^64-1", query{after: math.MaxUint64}, nil, end{next: math.MaxUint64, first: 1, last: 12, epoch: e}},
		{"since a message's time", query{since: acks[6].ts, limit: 3}, wantRange(7, 9), end{next: 9, more: true, first: 1, last: 12, epoch: e}},
		{"since just after it", query{since: acks[6].ts + 1, limit: 1}, wantRange(8, 8), end{next: 8, more: true, first: 1, last: 12, epoch: e}},
		{"since 0", query{hasSince: true, limit: 1}, wantRange(1, 1), end{next: 1, more: true, first: 1, last: 12, epoch: e}},
		{"since the future", query{since: acks[11].ts + 1}, nil, end{next: 12, first: 1, last: 12, epoch: e}},
	}
	for _, tc := range cases {
		q := tc.q
		q.group = g
		got, end, err := c.fetch(ctx, q)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.msgs) || end != tc.end {
			t.Errorf("%s:\n got %v %+v\nwant %v %+v", tc.name, got, end, tc.msgs, tc.end)
		}
	}

	// Paging to the end with End's next and epoch.
	var all []message
	q := query{group: g, hasAfter: true}
	for pages := 1; ; pages++ {
		got, end, err := c.fetch(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		if !end.more {
			if pages != 3 {
				t.Errorf("%d pages, want 3 of at most %d", pages, testFetchPage)
			}
			break
		}
		q.after, q.epoch = end.next, end.epoch
	}
	if fmt.Sprint(all) != fmt.Sprint(wantRange(1, 12)) {
		t.Errorf("paged: %v, want messages 1..12", all)
	}

	// Refusals.
	_, _, err := c.fetch(ctx, query{group: g, hasSince: true, hasAfter: true})
	wantCode(t, "fetch with since and after", err, codeBadRequest)
	_, _, err = c.fetch(ctx, query{group: g, after: 3, epoch: e + 1})
	if pe := wantCode(t, "fetch in another epoch", err, codeEpochMismatch); pe.epoch != e {
		t.Errorf("epoch_mismatch carries epoch %d, want %d", pe.epoch, e)
	}
	_, _, err = newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp).fetch(ctx, query{group: g})
	wantCode(t, "fetch by a non-member", err, codeNotMember)
}

// testWatch: history then live messages, resume from a cursor, and the
// end of a watch.
func testWatch(t *testing.T, s *single) {
	g := s.groups["watch"].group
	ctx := ctxT(t)
	p, c, j := s.member(t, "watch", "watcher")
	// An empty log: first and last 0 (§8).
	if msgs, end, err := c.fetch(ctx, query{group: g, hasAfter: true}); err != nil || len(msgs) != 0 || end != endOf(0, false, 0, 0, j.epoch) {
		t.Errorf("fetch of an empty log: %v %+v, %v; want End{0, false, 0, 0, epoch}", msgs, end, err)
	}
	w, err := c.watch(ctx, query{group: g})
	if err != nil || w.start != (start{epoch: j.epoch, heartbeatMS: 5000}) {
		t.Fatalf("watch of an empty log: %+v, %v", w, err)
	}
	w.s.cancel()
	_, acks := sendN(t, c, g, 3, "before")

	w, err = c.watch(ctx, query{group: g, hasAfter: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.start != (start{epoch: j.epoch, first: 1, last: 3, heartbeatMS: 5000}) {
		t.Errorf("start %+v; want epoch %d, 1..3, heartbeat 5000", w.start, j.epoch)
	}
	got, err := w.messagesUntil(3)
	if err != nil {
		t.Fatal(err)
	}
	// Live: sent on another connection of the same key.
	c2 := p.mustDial(t, s.daemon.addr, s.daemon.fp)
	_, live := sendN(t, c2, g, 2, "live")
	more, err := w.messagesUntil(5)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, more...)
	var seqs []uint64
	for i, m := range got {
		seqs = append(seqs, m.seq)
		wantTS := append(slices.Clone(acks), live...)[i].ts
		if m.ts != wantTS || m.from != p.fp || m.name != "watcher" {
			t.Errorf("message %d: %+v, want ts %d from %s", m.seq, m, wantTS, p.fp)
		}
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5}) {
		t.Errorf("watched %v, want 1..5 once each", seqs)
	}
	w.s.cancel()

	// Resume after 4 in this epoch: 5, then what is sent next.
	w, err = c.watch(ctx, query{group: g, after: 4, epoch: j.epoch})
	if err != nil {
		t.Fatal(err)
	}
	if w.start != (start{epoch: j.epoch, first: 1, last: 5, heartbeatMS: 5000}) {
		t.Errorf("resumed start %+v", w.start)
	}
	sendN(t, c2, g, 1, "after resuming")
	got, err = w.messagesUntil(6)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].seq != 5 || got[1].seq != 6 || string(got[1].body) != "after resuming 1" {
		t.Errorf("resumed watch: %v, want 5 and 6", got)
	}
	// The member leaves: the watch ends with not_member, then the stream.
	if _, err := c2.leave(ctx, g); err != nil {
		t.Fatal(err)
	}
	ev, err := w.next()
	if err != nil || ev.kind != kindError || ev.err.code != codeNotMember {
		t.Errorf("watch after leaving: %+v, %v; want Error not_member", ev, err)
	}

	// A watch in another epoch, and one by a non-member.
	if _, err := c.join(ctx, g, "watcher"); err != nil {
		t.Fatal(err)
	}
	_, err = c.watch(ctx, query{group: g, after: 1, epoch: j.epoch ^ 1})
	if pe := wantCode(t, "watch in another epoch", err, codeEpochMismatch); pe.epoch != j.epoch {
		t.Errorf("epoch_mismatch carries %d, want %d", pe.epoch, j.epoch)
	}
	_, err = newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp).watch(ctx, query{group: g})
	wantCode(t, "watch by a non-member", err, codeNotMember)

	// A cursor past last (6 here) selects no history, and live messages
	// only past it (§8.7): 7 and 8 are not delivered, 9 is.
	w, err = c.watch(ctx, query{group: g, after: 8, epoch: j.epoch})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, c2, g, 3, "past the cursor")
	if got, err := w.messagesUntil(9); err != nil || len(got) != 1 || got[0].seq != 9 {
		t.Errorf("a watch after 8 when last is 6: %v, %v; want message 9 alone", got, err)
	}
	w.s.cancel()
	// since after every message: no history, then the live messages,
	// whatever their time.
	w, err = c.watch(ctx, query{group: g, since: time.Now().Add(time.Hour).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	sendN(t, c2, g, 1, "before since")
	if got, err := w.messagesUntil(10); err != nil || len(got) != 1 || got[0].seq != 10 {
		t.Errorf("a watch since an hour from now: %v, %v; want message 10", got, err)
	}
	w.s.cancel()
}

// testErrors: §8's who-may-call-what and unknown groups.
func testErrors(t *testing.T, s *single) {
	g := s.groups["errors"].group
	ctx := ctxT(t)
	c := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	_, err := c.send(ctx, g, outgoing{newID(), []byte("let me in")})
	wantCode(t, "send by a non-member", err, codeNotMember)
	_, err = c.members(ctx, g)
	wantCode(t, "members by a non-member", err, codeNotMember)

	unknown := newUUID()
	_, err = c.info(ctx, unknown)
	wantCode(t, "info of an unknown group", err, codeNotFound)
	_, err = c.join(ctx, unknown, "x")
	wantCode(t, "join of an unknown group", err, codeNotFound)
	_, err = c.send(ctx, unknown, outgoing{newID(), []byte("x")})
	wantCode(t, "send to an unknown group", err, codeNotFound)
	_, _, err = c.fetch(ctx, query{group: unknown})
	wantCode(t, "fetch of an unknown group", err, codeNotFound)

	// Names (§6).
	for _, tc := range []struct {
		name string
		code uint64
	}{
		{"", codeBadRequest},
		{"tab\there", codeBadRequest},
		{"rtl\u202eevil", codeBadRequest},
		{"zero\u200bwidth", codeBadRequest},
		{strings.Repeat("n", 65), codeTooLarge},
	} {
		_, err := c.join(ctx, g, tc.name)
		wantCode(t, fmt.Sprintf("join as %q", tc.name), err, tc.code)
	}
	if j, err := c.join(ctx, g, strings.Repeat("n", 64)); err != nil || j.already {
		t.Errorf("join under a name of 64 bytes: %+v, %v", j, err)
	}
}

// testMalformed: each request of §4's and §5's refusals on its own stream
// of one connection, answered as documented; the connection serves on.
func testMalformed(t *testing.T, s *single) {
	g := s.groups["quiet"].group
	ctx := ctxT(t)
	c := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	info := encodeItem(cmap{0: uint64(opInfo), 1: cmap{1: g}})
	cases := []struct {
		name string
		raw  []byte
		code uint64
	}{
		{"an empty frame", []byte{0, 0, 0, 0}, codeBadRequest},
		{"a frame cut short", []byte{0, 0, 0, 10, 0xa2, 0x00}, codeBadRequest},
		{"a header cut short", []byte{0, 0}, codeBadRequest},
		{"a byte after the frame", append(frame(info), 0), codeBadRequest},
		{"a byte after the item", frame(append(slices.Clone(info), 0)), codeBadRequest},
		{"duplicate keys", frame([]byte{0xa2, 0x00, 0x10, 0x00, 0x10}), codeBadRequest},
		{"duplicate keys in args", frame([]byte{0xa2, 0x00, 0x10, 0x01, 0xa2, 0x05, 0x01, 0x05, 0x02}), codeBadRequest},
		{"an indefinite-length map", frame([]byte{0xbf, 0x00, 0x10, 0xff}), codeBadRequest},
		{"a tag", frame([]byte{0xa1, 0x00, 0xc1, 0x10}), codeBadRequest},
		{"a float op", frame([]byte{0xa1, 0x00, 0xf9, 0x4c, 0x00}), codeBadRequest},
		{"text that is not UTF-8", frame([]byte{0xa2, 0x00, 0x10, 0x01, 0xa1, 0x02, 0x62, 0xc3, 0x28}), codeBadRequest},
		{"nesting of 9 levels", frame(append([]byte{0xa2, 0x00, 0x10, 0x01, 0xa1, 0x09}, append(bytes.Repeat([]byte{0x81}, 7), 0x00)...)), codeBadRequest},
		{"an array of 8193 elements declared", frame([]byte{0xa2, 0x00, 0x10, 0x01, 0xa1, 0x09, 0x99, 0x20, 0x01}), codeBadRequest},
		{"a map of 33 pairs declared", frame([]byte{0xb8, 0x21, 0x00, 0x10}), codeBadRequest},
		{"an envelope without op", frame(encodeItem(cmap{1: cmap{1: g}})), codeBadRequest},
		{"args that are not a map", frame(encodeItem(cmap{0: uint64(opInfo), 1: uint64(5)})), codeBadRequest},
		{"a group of text", frame(encodeItem(cmap{0: uint64(opInfo), 1: cmap{1: "quiet"}})), codeBadRequest},
		{"a group of 15 bytes", frame(encodeItem(cmap{0: uint64(opInfo), 1: cmap{1: g[:15]}})), codeBadRequest},
		{"a negative limit", frame(encodeItem(cmap{0: uint64(opFetch), 1: cmap{1: g, 4: int64(-1)}})), codeBadRequest},
		{"op 0", frame(encodeItem(cmap{0: uint64(0)})), codeUnsupported},
		{"an op nobody knows", frame(encodeItem(cmap{0: uint64(99), 1: cmap{}})), codeUnsupported},
		{"a registry op", frame(encodeItem(cmap{0: uint64(opList)})), codeUnsupported},
	}
	for _, tc := range cases {
		s, werr, err := c.open(ctx, tc.raw)
		if err != nil || werr != nil {
			t.Fatalf("%s: %v, %v", tc.name, err, werr)
		}
		rep, err := s.next()
		if err != nil || rep.kind != kindError {
			t.Errorf("%s: %+v, %v; want one Error frame", tc.name, rep, err)
			continue
		}
		pe, err := decodeError(rep.body)
		if err != nil || pe.code != tc.code {
			t.Errorf("%s: %v, %v; want error code %d", tc.name, pe, err, tc.code)
		}
		if err := expectEOF(s); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// A stream ended before any byte gets no answer: the end of the stream.
	st, _, err := c.open(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := st.next(); err != io.EOF {
		t.Errorf("an empty stream: %+v, %v; want the end of the stream and nothing else", rep, err)
	}

	// A header declaring more than max_frame_bytes is refused before the
	// end (§3): STOP_SENDING 0x3 on our side, then too_large and FIN.
	big := binary32(maxFrameSize + 1)
	st, werr, err := c.open(ctx, append(big, make([]byte, 2*maxFrameSize)...))
	if err != nil {
		t.Fatal(err)
	}
	var se quic.StreamError
	if !errors.As(werr, &se) || se != 3 {
		t.Errorf("writing an oversized frame: %v; want the write stopped with code 3", werr)
	}
	rep, err := st.next()
	if err != nil || rep.kind != kindError {
		t.Fatalf("oversized frame: %+v, %v; want an Error frame", rep, err)
	}
	if pe, err := decodeError(rep.body); err != nil || pe.code != codeTooLarge {
		t.Errorf("oversized frame: %v, %v; want too_large", pe, err)
	}
	if err := expectEOF(st); err != nil {
		t.Errorf("oversized frame: %v", err)
	}

	// The connection still serves.
	if in, err := c.info(ctx, g); err != nil || in.name != "quiet" {
		t.Errorf("info after the malformed frames: %+v, %v", in, err)
	}
}

func binary32(n uint32) []byte { return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }

// testHandshake: §2's identity rules, seen from a client.
func testHandshake(t *testing.T, s *single) {
	ctx := ctxT(t)
	p := newPeer(t)
	// Another pinned key: our own check refuses the server.
	var wrong fingerprint
	if _, err := p.dial(ctx, s.daemon.addr, wrong); err == nil || !strings.Contains(err.Error(), errPinMismatch.Error()) {
		t.Errorf("dial with another pin: %v, want %v", err, errPinMismatch)
	}
	// Without huddle/1: alert 120, no_application_protocol (0x178).
	_, err := p.dialWith(ctx, s.daemon.addr, p.tlsConfig(s.daemon.fp, "huddle/0", "h3"))
	if err == nil || !strings.Contains(err.Error(), "CRYPTO_ERROR(120)") {
		t.Errorf("dial offering no huddle/1: %v; want CRYPTO_ERROR(120), transport error 0x178", err)
	}
	// huddle/1 among others, not first: selected.
	c, err := p.dialWith(ctx, s.daemon.addr, p.tlsConfig(s.daemon.fp, "huddle/2", alpn))
	if err != nil {
		t.Fatalf("dial offering huddle/2 then huddle/1: %v", err)
	}
	c.close()
	// Without a client certificate: alert 116 (0x174), perhaps only on
	// the first stream.
	tc := p.tlsConfig(s.daemon.fp, alpn)
	tc.Certificates = nil
	c, err = p.dialWith(ctx, s.daemon.addr, tc)
	if err == nil {
		_, err = c.info(ctx, s.groups["quiet"].group)
		c.close()
	}
	if err == nil || !strings.Contains(err.Error(), "CRYPTO_ERROR(116)") {
		t.Errorf("no client certificate: %v; want CRYPTO_ERROR(116), transport error 0x174", err)
	}
}

// online reports whether members lists fp as online.
func online(t *testing.T, c *conn, g []byte, fp fingerprint) bool {
	t.Helper()
	ms, err := c.members(ctxT(t), g)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.fp == fp {
			return m.online
		}
	}
	t.Fatalf("%s is not a member", fp)
	return false
}

// testHeartbeat: an idle watch gets a Heartbeat after heartbeat_ms (5 s),
// with the log's last sequence and the server's time (§8.7).
func testHeartbeat(t *testing.T, s *single) {
	g := s.groups["errors"].group
	ctx := ctxT(t)
	_, c, j := s.member(t, "errors", "idle watcher")
	before := time.Now()
	w, err := c.watch(ctx, query{group: g, after: j.last})
	if err != nil {
		t.Fatal(err)
	}
	defer w.s.cancel()
	ev, err := w.next()
	after := time.Now()
	if err != nil || ev.kind != kindHeartbeat || ev.last != j.last {
		t.Fatalf("an idle watch: %+v, %v; want a Heartbeat with last %d", ev, err, j.last)
	}
	if ev.now < before.Add(4*time.Second).UnixNano() || ev.now > after.UnixNano() {
		t.Errorf("heartbeat now %v; want about 5 s after the watch began at %v", time.Unix(0, ev.now), before)
	}
}

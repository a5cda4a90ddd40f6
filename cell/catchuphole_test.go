package cell

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// TestCatchUpServedToHole: a member serving a catch-up reads its log a
// page (catchUpChunk messages) at a time while the group's sends go on; if
// its retention drops the messages after the page it sent before it reads
// the next, the next page begins past a hole. It sent that page, and the
// asker's log refused it as out of order: the copy failed, tried again
// from another member or in the next round. Now it ends the copy ('e')
// before the hole, every batch it sent following the one before.
func TestCatchUpServedToHole(t *testing.T) {
	const limit = 1600 // retention: segments of limit/8 = 200 messages
	c := newTestCell(t, 3, false, func(cfg *Config) {
		cfg.Host.(*testHost).limits = store.Config{MaxMessages: limit}
	})
	l, f := c.leader(), c.follower()
	g := l.group("lobby")
	sent := 0
	send := func(n int) {
		t.Helper()
		ids := make([][16]byte, n)
		bodies := make([]string, n)
		for i := range ids {
			sent++
			ids[i], bodies[i] = newID(sent), fmt.Sprintf("%0200d", sent)
		}
		c.send(g.ID, alice, ids, bodies)
	}
	for sent < limit {
		send(400)
	}
	f.waitLast(g.ID, limit)
	first := func() uint64 {
		_, cur, _ := f.node.fsm.group(g.ID).log.After(0, 0, nil)
		return cur.First
	}

	// The leader's key, from a transport of the test's, whose small stream
	// window holds f's first page (catchUpChunk messages of 200 bytes)
	// unsent until the test reads it.
	tr, _ := newTransport(t, l.id, []Peer{{Addr: f.addr, Fingerprint: f.id.Fingerprint()}}, false)
	tr.quic.InitialStreamReceiveWindow = 16 << 10
	tr.quic.MaxStreamReceiveWindow = 16 << 10
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	str, _, err := tr.open(ctx, f.addr, []byte{kindCatchUp})
	if err != nil {
		t.Fatal(err)
	}
	defer str.CancelRead(streamClosed)
	req := catchUpRequest(g.ID, g.Epoch, 0, limit)
	str.Write(req[:])
	str.Close()
	str.SetReadDeadline(time.Now().Add(waitTimeout))
	frameHead := func() (kind byte, size int) {
		t.Helper()
		var h [5]byte
		if _, err := io.ReadFull(str, h[:]); err != nil {
			t.Fatalf("read a frame of the catch-up: %v", err)
		}
		return h[4], int(binary.LittleEndian.Uint32(h[:4])) - 1
	}
	body := func(size int) []byte {
		t.Helper()
		b := make([]byte, size)
		if _, err := io.ReadFull(str, b); err != nil {
			t.Fatalf("read a frame of the catch-up: %v", err)
		}
		return b
	}
	kind, size := frameHead()
	h := body(size)
	if kind != 'h' || size != 9 || h[0] != catchUpOK {
		t.Fatalf("catch-up header %q % x, want ok", kind, h)
	}
	next := binary.LittleEndian.Uint64(h[1:]) // the next message the asker takes
	// The first page's first batch has begun: f read the page.
	kind, size = frameHead()
	if kind != 'b' {
		t.Fatalf("a frame %q after the header, want a batch", kind)
	}
	// The sends go on; f's retention drops the messages after that page
	// (f's write of the page waits meanwhile, catchUpTimeout at most).
	for first() <= next+catchUpChunk {
		send(600)
		f.waitLast(g.ID, uint64(sent))
	}
	str.SetReadDeadline(time.Now().Add(waitTimeout))
	batches := 0
	for {
		if kind == 'e' {
			break
		}
		if kind != 'b' {
			t.Fatalf("a frame %q in the catch-up, want batches then the end", kind)
		}
		rd := reader{p: body(size)}
		entries := decodeEntries(&rd, nil)
		if rd.err != nil {
			t.Fatalf("batch %d: %v", batches, rd.err)
		}
		if entries[0].Seq != next {
			t.Fatalf("batch %d begins at message %d, the one before ended at %d: past a hole", batches, entries[0].Seq, next-1)
		}
		next = entries[len(entries)-1].Seq + 1
		batches++
		kind, size = frameHead()
	}
	if next > limit {
		t.Fatalf("the copy ended at %d, the end asked for: the hole was not reached (f's log begins at %d)", next-1, first())
	}
	t.Logf("the copy ended at %d in %d batches, f's log now begins at %d", next-1, batches, first())
}

// TestCatchUpAsksAgainAtHole: a member whose copy ended short of the
// messages asked for, at a hole its retention made as it sent them
// (serveCatchUp), is asked again at once, from where this log ends, and
// its next answer, whose header names where its log begins now, resets
// the log there and copies the rest. It is not shunned for it: until
// session 18 the catch-up failed there (no other member could serve).
// The same for a member before session 18, which sent the messages after
// the hole (old): they are not appended (the log refused them as out of
// order, and the copy failed).
func TestCatchUpAsksAgainAtHole(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("old=%v", old), func(t *testing.T) { testCatchUpAsksAgainAtHole(t, old) })
	}
}

func testCatchUpAsksAgainAtHole(t *testing.T, old bool) {
	_, f, other, g, held := tenSent(t, nil)
	entry := func(seq uint64) store.Entry {
		return store.Entry{Seq: seq, Time: held[9].Time + int64(seq), ID: newID(int(seq)), From: *held[0].From, Body: held[0].Body}
	}
	batch := func(from, to uint64) []byte {
		var entries []store.Entry
		for seq := from; seq <= to; seq++ {
			entries = append(entries, entry(seq))
		}
		return newEncoder().appendEntries(nil, entries)
	}
	asked := serveNumbered(impostor(t, f, other), func(nth int, after, upto uint64, frame func(byte, []byte) error, str *quic.Stream) {
		switch nth {
		case 1: // 11 and 12, then a hole: 13 to 15 dropped
			if !catchUpHeader(frame, after) || frame('b', batch(after+1, after+2)) != nil {
				return
			}
			if old && frame('b', batch(16, upto)) != nil {
				return
			}
			if frame('e', nil) == nil {
				str.Close()
			}
		default: // its log begins at 16
			if frame('h', binary.LittleEndian.AppendUint64([]byte{catchUpOK}, 16)) == nil &&
				frame('b', batch(16, upto)) == nil && frame('e', nil) == nil {
				str.Close()
			}
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	restore := newCatchUpRestore()
	if err := f.node.catchUp(ctx, f.node.fsm.group(g.ID), 20, 0, false, restore); err != nil {
		t.Fatalf("catch up to 20 from a member whose retention dropped 13 to 15 as it sent them: %v", err)
	}
	if got := fmt.Sprint(asked()); got != "[10 12]" {
		t.Fatalf("the member was asked after %s, want after 10, then after 12", got)
	}
	if restore.shun[other.id.Fingerprint()] {
		t.Error("the member whose copy ended at a hole was shunned")
	}
	msgs := f.messages(g.ID)
	var seqs []string
	for _, m := range msgs {
		seqs = append(seqs, fmt.Sprint(m.Seq))
	}
	if s := strings.Join(seqs, " "); s != "16 17 18 19 20" {
		t.Fatalf("f holds messages %s after the catch-up, want 16 to 20 (reset past the hole)", s)
	}
	if _, cur, _ := f.node.fsm.group(g.ID).log.After(0, 0, nil); cur.First != 16 {
		t.Fatalf("f's log begins at %d, want 16", cur.First)
	}
}

// TestCatchUpHolesWhileTheCopyKeepsPace: a member whose retention drops
// messages again and again while it serves a copy (the group's sends go
// on, or retention by age drops a burst sent long ago) ends each copy at a
// hole, and is asked again from where the log ends, as long as the copy,
// across the times it is asked, keeps the least pace. (A catch-up asked a
// member again at most 3 times, a number nothing measured: a fourth hole
// counted as a failed copy, and with no other member to serve, the
// catch-up failed.) Here the member's log drops two messages past each
// copy's end, seven times.
func TestCatchUpHolesWhileTheCopyKeepsPace(t *testing.T) {
	const holes = 7
	c := newPaceCell(t, 0, time.Hour) // no window ends: no move to the other member, which cannot serve
	asked := serveNumbered(c.slow, func(nth int, after, upto uint64, frame func(byte, []byte) error, str *quic.Stream) {
		first := after + 1
		if nth > 1 {
			first = after + 3 // the two after the copy's end were dropped
		}
		last := first + 1 // two messages, then the hole
		if nth > holes {
			last = upto
		}
		if frame('h', binary.LittleEndian.AppendUint64([]byte{catchUpOK}, first)) == nil &&
			frame('b', c.batch(first, last)) == nil && frame('e', nil) == nil {
			str.Close()
		}
	})
	serveBehind(c.other)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	const upto = 100
	if err := c.f.node.catchUp(ctx, c.f.node.fsm.group(c.g.ID), upto, 0, false, nil); err != nil {
		t.Fatalf("catch up to %d from a member whose retention made %d holes as it served: %v", upto, holes, err)
	}
	if n := len(asked()); n != holes+1 {
		t.Fatalf("the member was asked %d times, want %d", n, holes+1)
	}
	if last, _ := c.f.node.fsm.group(c.g.ID).log.Tail(); last != upto {
		t.Fatalf("f's log ends at %d, want %d", last, upto)
	}
}

// TestCatchUpFalseHole: a member whose copy ended at a hole is asked
// again from where the log ends, and must answer that its log begins
// past it: retention drops messages, never brings them back. One that
// then has the next message said falsely that its copy could go no
// further (a key asked again without end, each time sending nothing) and
// its copy counts as failed: it is shunned. (It was asked again, up to 3
// times, and served.)
func TestCatchUpFalseHole(t *testing.T) {
	c := newPaceCell(t, 0, time.Hour) // no window ends: no move to the other member, which cannot serve
	serveNumbered(c.slow, func(nth int, after, upto uint64, frame func(byte, []byte) error, str *quic.Stream) {
		last := upto
		if nth == 1 {
			last = after + 2 // then an end, as at a hole
		}
		if catchUpHeader(frame, after) && frame('b', c.batch(after+1, last)) == nil && frame('e', nil) == nil {
			str.Close()
		}
	})
	serveBehind(c.other)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	restore := newCatchUpRestore()
	const upto = 20
	if err := c.f.node.catchUp(ctx, c.f.node.fsm.group(c.g.ID), upto, 0, false, restore); err != nil {
		t.Fatalf("catch up to %d: %v (the member, shunned, is still asked as a last resort)", upto, err)
	}
	if !restore.shun[c.slowKey] {
		t.Fatal("the member that said its log dropped messages, then had them, was not shunned")
	}
}

// serveNumbered has tr answer each catch-up request with serve, told which
// it is (1 for the first) and what it asks (frame writes a frame of the
// answer on str); asked returns the after of each request so far.
func serveNumbered(tr *Transport, serve func(nth int, after, upto uint64, frame func(byte, []byte) error, str *quic.Stream)) (asked func() []uint64) {
	var mu sync.Mutex
	var afters []uint64
	tr.handle(kindCatchUp, func(_ context.Context, _ wire.Fingerprint, str *quic.Stream) {
		after, upto, frame, ok := readCatchUpRequest(str)
		if !ok {
			return
		}
		mu.Lock()
		afters = append(afters, after)
		nth := len(afters)
		mu.Unlock()
		serve(nth, after, upto, frame, str)
	})
	return func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(afters)
	}
}

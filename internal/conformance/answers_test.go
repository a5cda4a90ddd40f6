//go:build linux

package conformance

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/net/quic"
)

// Operations of a cell's members (§13), which a daemon that is not one
// answers unsupported.
const (
	opCellAdd    = 24
	opCellRemove = 25
)

// testAnswers: what a group daemon answers to requests §4-§9 and §13 name
// an answer for, beyond each operation's own subtest: op numbers past
// 16 bits, unknown groups and keys at every level, required fields of
// other types than the tables', and cell operations sent to a daemon
// that is no member of a cell.
func testAnswers(t *testing.T, s *single) {
	g := s.groups["answers"].group
	ctx := ctxT(t)
	p, c, _ := s.member(t, "answers", "answerer")

	// §5: an op the server does not know is unsupported, however large;
	// 0x10010 is not info (16) cut to 16 bits.
	for _, op := range []uint64{0x10010, 0x10014, 1<<32 + 16, 1<<64 - 1} {
		_, err := c.call(ctx, op, cmap{1: g})
		wantCode(t, fmt.Sprintf("op %#x", op), err, codeUnsupported)
	}

	// §8: a group the daemon does not host is not_found, for every
	// operation on a group.
	unknown := newUUID()
	for _, op := range []uint64{opInfo, opLeave, opMembers, opWatch, opFetch} {
		_, err := c.call(ctx, op, cmap{1: unknown})
		wantCode(t, fmt.Sprintf("op %d on a group not hosted", op), err, codeNotFound)
	}

	// §5: keys a receiver does not know are ignored at every level:
	// the args, an Outgoing, and a value that is itself a map or array.
	future := cmap{1: []any{uint64(1), "two"}, 2: cmap{3: []byte{4}}}
	if _, err := c.call(ctx, opInfo, cmap{1: g, 30: future}); err != nil {
		t.Errorf("info with a key from the future: %v", err)
	}
	id := newID()
	body, err := c.call(ctx, opSend, cmap{1: g, 2: []any{cmap{1: id, 2: []byte("x"), 9: future}}, 31: uint64(1)})
	if s, derr := decodeSent(body); err != nil || derr != nil || len(s.acks) != 1 || s.acks[0].duplicate {
		t.Errorf("send with keys from the future: %+v, %v, %v; want one message stored", s, err, derr)
	}
	// §6: an absent field takes its zero value: an Outgoing without a
	// body is an empty message.
	body, err = c.call(ctx, opSend, cmap{1: g, 2: []any{cmap{1: newID()}}})
	if s, derr := decodeSent(body); err != nil || derr != nil || len(s.acks) != 1 {
		t.Fatalf("send of a message without a body: %+v, %v, %v", s, err, derr)
	}
	msgs, _, err := c.fetch(ctx, query{group: g, after: 1})
	if err != nil || len(msgs) != 1 || len(msgs[0].body) != 0 || msgs[0].from != p.fp {
		t.Errorf("the message without a body: %+v, %v; want it stored, empty", msgs, err)
	}
	// §13: min_seq is a cell's; a daemon of no cell ignores it, and
	// answers at once with what it holds.
	if msgs, end, err := c.fetch(ctx, query{group: g, hasAfter: true, minSeq: 1 << 40}); err != nil || len(msgs) != 2 || end.last != 2 {
		t.Errorf("fetch with a min_seq past the log: %v %+v, %v; want messages 1 and 2 at once", msgs, end, err)
	}
	// Map keys that are text or negative integers are keys the receiver
	// does not know; a key of any other type is malformed (§4).
	infoWith := func(key ...byte) []byte {
		item := []byte{0xa2, 0x00, 0x10, 0x01, 0xa2, 0x01, 0x50}
		item = append(item, g...)
		return frame(append(append(item, key...), 0x00))
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		code uint64 // 0: answered
	}{
		{"a text key", infoWith(0x61, 'k'), 0},
		{"a negative key", infoWith(0x20), 0},
		{"a byte-string key", infoWith(0x41, 'k'), codeBadRequest},
		{"a boolean key", infoWith(0xf5), codeBadRequest},
		{"an array key", infoWith(0x80), codeBadRequest},
	} {
		_, err := c.roundTrip(ctx, tc.raw)
		if tc.code == 0 {
			if err != nil {
				t.Errorf("info with %s: %v; want it ignored", tc.name, err)
			}
			continue
		}
		wantCode(t, "info with "+tc.name, err, tc.code)
	}

	// §4: decoders do not require deterministic encoding: lengths and
	// counts in longer forms than needed are the same request.
	long := []byte{0xb8, 0x02, 0x00, 0x19, 0x00, 0x10, 0x01, 0xb9, 0x00, 0x01, 0x01, 0x58, 0x10}
	if _, err := c.roundTrip(ctx, frame(append(long, g...))); err != nil {
		t.Errorf("info with its map counts and the group's length in longer forms: %v", err)
	}

	// §4: N = 1,048,576 is a frame; the limit is inclusive. An info
	// padded to it with a key the daemon does not know is answered.
	head := encodeItem(cmap{0: uint64(opInfo), 1: cmap{1: g, 30: []byte{}}})
	pad := maxFrameSize - len(head) - 4 // the byte string's head grows from 1 byte to 5
	padded := encodeItem(cmap{0: uint64(opInfo), 1: cmap{1: g, 30: make([]byte, pad)}})
	if len(padded) != maxFrameSize {
		t.Fatalf("padded info of %d bytes, want %d", len(padded), maxFrameSize)
	}
	if _, err := c.roundTrip(ctx, frame(padded)); err != nil {
		t.Errorf("an info of exactly %d bytes: %v", maxFrameSize, err)
	}

	// Fields of the wrong shape (§4, §6, §8.5-8.7).
	for _, tc := range []struct {
		name string
		op   uint64
		args cmap
		code uint64
	}{
		{"an all-zero group", opInfo, cmap{1: make([]byte, 16)}, codeBadRequest},
		{"no group", opMembers, cmap{}, codeBadRequest},
		{"a message ID of 15 bytes", opSend, cmap{1: g, 2: []any{cmap{1: id[:15], 2: []byte("x")}}}, codeBadRequest},
		{"a message without an ID", opSend, cmap{1: g, 2: []any{cmap{2: []byte("x")}}}, codeBadRequest},
		{"messages that are not an array", opSend, cmap{1: g, 2: cmap{1: id}}, codeBadRequest},
		{"more messages than any send may carry (1024)", opSend, cmap{1: g, 2: func() (a []any) {
			for range 1025 {
				a = append(a, cmap{1: newID()})
			}
			return a
		}()}, codeTooLarge},
		{"a watch with since and after", opWatch, cmap{1: g, 2: int64(0), 3: uint64(0)}, codeBadRequest},
		{"a negative after", opWatch, cmap{1: g, 3: int64(-1)}, codeBadRequest},
		{"an epoch of text", opFetch, cmap{1: g, 5: "1"}, codeBadRequest},
		{"a join secret of text", opJoin, cmap{1: g, 2: "answerer", 3: "secret"}, codeBadRequest},
	} {
		_, err := c.call(ctx, tc.op, tc.args)
		wantCode(t, tc.name, err, tc.code)
	}
	if in, err := c.info(ctx, g); err != nil || in.last != 2 {
		t.Errorf("info after the refusals: last %d, %v; want the 2 messages sent", in.last, err)
	}

	// §9 "Which refusal comes first".
	sc := newPeer(t).mustDial(t, s.daemon.addr, s.daemon.fp)
	many := func(n int) (m []outgoing) {
		for range n {
			m = append(m, outgoing{newID(), []byte("x")})
		}
		return m
	}
	_, err = sc.send(ctx, g, many(testMaxBatch+1)...)
	wantCode(t, "a stranger's send over max_batch", err, codeNotMember)
	_, err = sc.send(ctx, g, many(1025)...)
	wantCode(t, "a stranger's send over 1024 messages", err, codeTooLarge)
	_, err = sc.send(ctx, unknown, many(testMaxBatch+1)...)
	wantCode(t, "a stranger's send over max_batch to a group not hosted", err, codeNotFound)
	_, _, err = sc.fetch(ctx, query{group: g, after: 1, epoch: 1})
	wantCode(t, "a stranger's fetch in another epoch", err, codeNotMember)
	_, _, err = c.fetch(ctx, query{group: unknown, hasSince: true, hasAfter: true})
	wantCode(t, "a fetch with since and after of a group not hosted", err, codeBadRequest)
	_, err = c.send(ctx, g, append(many(testMaxBatch), outgoing{newID(), make([]byte, testMaxMessage+1)})...)
	wantCode(t, "a member's send over max_batch, one body too large", err, codeTooLarge)

	// §3 "Server stream errors": a request the client resets half-way
	// cannot be read; the server cancels the stream's other direction
	// with 0x3, answering nothing. The connection serves on.
	qs, err := c.q.NewStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qs.SetReadContext(ctx)
	if _, err := qs.Write([]byte{0, 0, 0, 40, 0xa2, 0x00}); err != nil {
		t.Fatal(err)
	}
	qs.Flush()
	qs.Reset(1)
	var se quic.StreamError
	if _, err := qs.Read(make([]byte, 1)); !errors.As(err, &se) || se != 3 {
		t.Errorf("a request reset half-way: %v; want the stream reset with 3 (protocol violation)", err)
	}
	if _, err := c.info(ctx, g); err != nil {
		t.Errorf("info after a reset request: %v", err)
	}

	// §6: a name holds no filler (drawn as nothing, or as a blank), while a
	// variation selector is allowed.
	for _, name := range []string{"hangul\u3164filler", "braille\u2800blank", "\u115f", "cgj\u034fjoin"} {
		_, err := sc.join(ctx, g, name)
		wantCode(t, fmt.Sprintf("join as %+q", name), err, codeBadRequest)
	}
	if _, err := sc.join(ctx, g, "peace \u270c\ufe0f"); err != nil {
		t.Errorf("join under a name with a variation selector: %v", err)
	}

	// §13: a daemon that is not a member of a cell answers the cell's
	// operations unsupported, whatever their args.
	for _, tc := range []struct {
		name string
		op   uint64
		args cmap
	}{
		{"cell_status", opCellStatus, cmap{}},
		{"cell_add", opCellAdd, cmap{1: "127.0.0.1:7000", 2: p.fp[:]}},
		{"cell_add without args", opCellAdd, cmap{}},
		{"cell_remove", opCellRemove, cmap{2: p.fp[:]}},
	} {
		_, err := c.call(ctx, tc.op, tc.args)
		wantCode(t, tc.name+" to a daemon of no cell", err, codeUnsupported)
	}
}

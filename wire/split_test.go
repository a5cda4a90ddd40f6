package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// typesForSplit are the args and body types a frame's body can be decoded
// into; FuzzSplitFrame picks one by index.
var typesForSplit = []func() any{
	func() any { return new(Register) }, func() any { return new(Renew) },
	func() any { return new(Deregister) }, func() any { return new(List) },
	func() any { return new(GroupRef) }, func() any { return new(Join) },
	func() any { return new(Send) }, func() any { return new(Fetch) },
	func() any { return new(Watch) }, func() any { return new(Error) },
	func() any { return new(Messages) }, func() any { return new(End) },
	func() any { return new(Heartbeat) }, func() any { return new(Gap) },
	func() any { return new(Start) }, func() any { return new(Lease) },
	func() any { return new(Groups) }, func() any { return new(Info) },
	func() any { return new(Joined) }, func() any { return new(Left) },
	func() any { return new(MemberList) }, func() any { return new(Sent) },
}

// errorClass is what a peer learns of a decode error: its code.
func errorClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrBadRequest):
		return "bad_request"
	}
	return "other: " + err.Error()
}

// checkSplit holds SplitFrame, Frame.Decode, Frame.Check and
// MessagesDecoder to the two-pass path they replace (DecodeFrame, then
// Raw.Decode): the same accept or reject, the same error code, the same
// type and the same decoded value.
func checkSplit(t *testing.T, item []byte, sel int) {
	t.Helper()
	newV := typesForSplit[sel%len(typesForSplit)]

	typ1, raw, err1 := DecodeFrame(item)
	f, err2 := SplitFrame(item)
	if err2 == nil {
		err2 = f.Check()
	}
	if errorClass(err1) != errorClass(err2) {
		t.Fatalf("%x: DecodeFrame: %v; SplitFrame+Check: %v", item, err1, err2)
	}
	if err1 != nil {
		// SplitFrame may pass what Check or Decode rejects, never the
		// other way round.
		if f2, err := SplitFrame(item); err == nil {
			if err := f2.Decode(newV()); err == nil {
				t.Fatalf("%x: DecodeFrame rejects it (%v), SplitFrame+Decode accepts it", item, err1)
			}
		}
		return
	}
	if typ1 != f.Type {
		t.Fatalf("%x: type %d, SplitFrame says %d", item, typ1, f.Type)
	}
	v1, v2 := newV(), newV()
	err1, err2 = raw.Decode(v1), f.Decode(v2)
	if errorClass(err1) != errorClass(err2) {
		t.Fatalf("%x into %T: two-pass: %v; one pass: %v", item, v1, err1, err2)
	}
	if err1 == nil && !reflect.DeepEqual(v1, v2) {
		t.Fatalf("%x into %T: two-pass %+v; one pass %+v", item, v1, v1, v2)
	}

	var ms Messages
	errM := raw.Decode(&ms)
	var d MessagesDecoder
	// A decoder that has decoded another frame first must not leak it
	// into this one.
	if _, err := d.Decode(goldenMessagesFrame(t), nil); err != nil {
		t.Fatal(err)
	}
	got, errD := d.Decode(f, make([]Message, 3))
	if errorClass(errM) != errorClass(errD) {
		t.Fatalf("%x as Messages: Raw.Decode: %v; MessagesDecoder: %v", item, errM, errD)
	}
	if errM == nil && (len(got) != len(ms.Messages) || len(got) > 0 && !reflect.DeepEqual(got, ms.Messages)) {
		t.Fatalf("%x as Messages: Raw.Decode %+v; MessagesDecoder %+v", item, ms.Messages, got)
	}
}

// goldenMessagesFrame is the golden Messages frame, split.
func goldenMessagesFrame(t *testing.T) Frame {
	t.Helper()
	var buf bytes.Buffer
	err := WriteResponse(&buf, KindMessages, &Messages{Messages: []Message{
		{Seq: 7, Time: tT0, ID: tID1, From: tAlice, Name: "alice", Body: []byte("stale body")},
		{Seq: 8, Time: tT0 + 1, ID: tID2, From: tBob, Name: "bob", Body: []byte("another")},
		{Seq: 9, Time: tT0 + 2, ID: tID3, From: tBob, Name: "bob", Body: []byte("and one more")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := SplitFrame(buf.Bytes()[headerSize:])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// splitSeeds are every golden and malformed frame's item, and a few shapes
// the fast path must hand back to the two-pass one, or reject as it would.
func splitSeeds(f testing.TB) [][]byte {
	f.Helper()
	reqs, resps := seedFrames(f)
	var items [][]byte
	for _, s := range append(reqs, resps...) {
		if len(s.frame) > headerSize {
			items = append(items, s.frame[headerSize:])
		}
	}
	return append(items,
		[]byte{0xa2, 0x01, 0xa0, 0x00, 0x14},                               // key 1 first
		[]byte{0xa2, 0x00, 0x18, 0x14, 0x01, 0xa0},                         // the op in two bytes
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xf6},                               // a null body
		[]byte{0xa2, 0x00, 0x14, 0x01, 0x80},                               // an array body
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa0, 0x00},                         // a byte after the item
		[]byte{0xa1, 0x00, 0x14, 0x00},                                     // a byte after the item
		[]byte{0xa2, 0x00, 0x14, 0x00, 0x15},                               // key 0 twice
		[]byte{0xa3, 0x00, 0x14, 0x01, 0xa0, 0x02, 0x00},                   // an unknown key
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x01, 0x81, 0xa1, 0x06, 0x40}, // an empty body
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x01, 0x81, 0xa1, 0x06, 0x82, 0x01, 0x02},
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x01, 0x81, 0xa2, 0x05, 0x61, 0xff, 0x06, 0xf6},
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x01, 0x81, 0xa1, 0x05, 0x41, 0x61},
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x01, 0x81, 0xf6},
		// Nesting: 8 levels with the envelope, then 9.
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x09, 0x81, 0x81, 0x81, 0x81, 0x81, 0x80},
		[]byte{0xa2, 0x00, 0x14, 0x01, 0xa1, 0x09, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x80},
	)
}

func TestSplitFrame(t *testing.T) {
	for _, item := range splitSeeds(t) {
		for sel := range typesForSplit {
			checkSplit(t, item, sel)
		}
	}
}

// FuzzSplitFrame is the differential test of the one-pass decoding: see
// checkSplit.
func FuzzSplitFrame(f *testing.F) {
	for _, item := range splitSeeds(f) {
		for sel := range typesForSplit {
			f.Add(item, uint8(sel))
		}
	}
	f.Fuzz(func(t *testing.T, item []byte, sel uint8) {
		checkSplit(t, item, int(sel))
	})
}

// checkAppendMessages holds appendMessages to the deterministic encoder.
func checkAppendMessages(t *testing.T, ms []Message) {
	t.Helper()
	want, err := encMode.Marshal(envelope{Type: uint64(KindMessages), Body: Messages{Messages: ms}})
	if err != nil {
		t.Fatal(err)
	}
	if got := appendMessages(nil, ms); !bytes.Equal(got, want) {
		t.Fatalf("appendMessages:\n got %x\nwant %x", got, want)
	}
}

func TestAppendMessages(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, 70000)
	for _, ms := range [][]Message{
		nil, {},
		{{}},
		{{Seq: 1, Time: -1, Name: "a", Body: []byte{}}, {Seq: 23, Time: -24, ID: tID1, From: tAlice}},
		{{Seq: 24, Time: -25, Name: string(long[:24]), Body: long[:255]}, {Seq: 255, Time: 256, Body: long[:256]}},
		{{Seq: 65535, Time: -65537, Body: long[:65535]}, {Seq: 65536, Time: 1 << 32, Body: long}},
		{{Seq: 1<<64 - 1, Time: -1 << 63}, {Seq: 1 << 32, Time: 1<<63 - 1}},
		make([]Message, 24), make([]Message, 256),
	} {
		checkAppendMessages(t, ms)
	}
}

func FuzzAppendMessages(f *testing.F) {
	f.Add(uint64(1), int64(tT0), "alice", []byte("hi"), uint16(1))
	f.Add(uint64(1<<40), int64(-1<<40), "", []byte{}, uint16(300))
	f.Fuzz(func(t *testing.T, seq uint64, ts int64, name string, body []byte, n uint16) {
		ms := make([]Message, n%1100)
		for i := range ms {
			ms[i] = Message{Seq: seq + uint64(i), Time: ts - int64(i), ID: tID2, From: tBob, Name: name, Body: body[:i%(len(body)+1)]}
		}
		checkAppendMessages(t, ms)
	})
}

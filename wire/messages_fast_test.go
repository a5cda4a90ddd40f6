package wire

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"testing"
	"unsafe"
)

// fastSeedMessages are batches of messages whose appendMessages frames seed
// FuzzMessagesDecoder: every head length of every field, empty lists, names
// and bodies, negative times, the largest sequence.
func fastSeedMessages() [][]Message {
	long := bytes.Repeat([]byte{'x'}, 70000)
	many := make([]Message, 40)
	for i := range many {
		many[i] = Message{Seq: uint64(i + 1), Time: tT0 + int64(i), ID: tID1, From: tAlice,
			Name: []string{"alice", "bob", "carol", "dave"}[i%4], Body: long[:i%300]}
	}
	return [][]Message{
		nil,
		{{}},
		{{Seq: 1, Time: tT0, ID: tID1, From: tAlice, Name: "alice", Body: []byte("hi")}},
		{{Seq: 1, Time: -1, Name: "", Body: []byte{}}, {Seq: 23, Time: -24, ID: tID2, From: tBob, Name: "é"}},
		{{Seq: 24, Time: -25, Name: string(long[:24]), Body: long[:255]}, {Seq: 255, Time: 256, Body: long[:256]}},
		{{Seq: 65535, Time: -65537, Body: long[:65535]}, {Seq: 65536, Time: 1 << 32, Name: "日本語", Body: long[:24]}},
		{{Seq: math.MaxUint64, Time: math.MinInt64}, {Seq: 1 << 32, Time: math.MaxInt64}, {Seq: 1<<32 - 1, Time: -1 << 32}},
		make([]Message, 24),
		many,
	}
}

// fastCases are Messages frames' items beside whether decodeByHand takes
// them; every other one is for decodeGeneric, accepted or not. Each is
// {0: 3, 1: body} with the body in hex.
var fastCases = []struct {
	name string
	body string
	fast bool
}{
	{"empty list", "a1 01 80", true},
	{"one empty message", "a1 01 81 a0", true},
	{"only seq", "a1 01 81 a1 01 18 2a", true},
	{"no name", "a1 01 81 a5 01 01 02 01 03 50" + strings.Repeat("11", 16) + "04 58 20" + strings.Repeat("22", 32) + "06 41 62", true},
	{"no body", "a1 01 81 a2 01 01 05 61 61", true},
	{"empty name and body", "a1 01 81 a2 05 60 06 40", true},
	{"negative time", "a1 01 81 a1 02 3b 7f ff ff ff ff ff ff ff", true},
	{"empty map", "a0", false},
	{"null list", "a1 01 f6", false},
	{"null message", "a1 01 81 f6", false},
	{"keys out of order", "a1 01 81 a2 02 01 01 01", false},
	{"key 0", "a1 01 81 a1 00 01", false},
	{"unknown key", "a1 01 81 a1 07 01", false},
	{"key twice", "a1 01 81 a2 01 01 01 02", false},
	{"a pair short, the next message read as its key", "a1 01 82 a2 01 01 a0", false},
	{"seq in two bytes", "a1 01 81 a1 01 18 01", false},
	{"list count in two bytes", "a1 01 98 01 a0", false},
	{"body length in three bytes", "a1 01 81 a1 06 59 00 01 62", false},
	{"time in nine bytes", "a1 01 81 a1 02 1b 00 00 00 00 ff ff ff ff", false},
	{"negative seq", "a1 01 81 a1 01 20", false},
	{"null seq", "a1 01 81 a1 01 f6", false},
	{"float time", "a1 01 81 a1 02 f9 3c 00", false},
	{"time over int64", "a1 01 81 a1 02 1b 80 00 00 00 00 00 00 00", false},
	{"time under int64", "a1 01 81 a1 02 3b 80 00 00 00 00 00 00 00", false},
	{"short id", "a1 01 81 a1 03 4f" + strings.Repeat("11", 15), false},
	{"id in a long head", "a1 01 81 a1 03 58 10" + strings.Repeat("11", 16), false},
	{"from as text", "a1 01 81 a1 04 78 20" + strings.Repeat("61", 32), false},
	{"body as text", "a1 01 81 a1 06 61 62", false},
	{"name as bytes", "a1 01 81 a1 05 41 62", false},
	{"null body", "a1 01 81 a1 06 f6", false},
	{"invalid UTF-8 name", "a1 01 81 a1 05 61 ff", false},
	{"indefinite body", "a1 01 81 a1 06 5f 41 62 ff", false},
	{"indefinite list", "a1 01 9f a0 ff", false},
	{"body longer than the frame", "a1 01 81 a1 06 45 62", false},
	{"count over the bytes", "a1 01 83 a0", false},
	{"count over MaxArrayItems", "a1 01 99 20 01", false},
	{"byte after the body", "a1 01 80 00", false},
	{"seven pairs", "a1 01 81 a7 01 01 02 01 03 01 04 01 05 01 06 01 07 01", false},
}

// fastCaseItem is the frame item of a fastCases body.
func fastCaseItem(t testing.TB, body string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(body, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return messagesItem(b)
}

// messagesItem is the frame item {0: KindMessages, 1: body}, as huddle
// peers write its envelope.
func messagesItem(body []byte) []byte {
	return append([]byte{0xa2, 0x00, byte(KindMessages), 0x01}, body...)
}

// checkMessagesDecoder holds MessagesDecoder.Decode, and decodeByHand
// when it takes the frame, to Frame.Decode into a Messages: the same accept
// or reject, the same error code, the same messages.
func checkMessagesDecoder(t *testing.T, item []byte) {
	t.Helper()
	f, err := SplitFrame(item)
	if err != nil {
		return // not a frame MessagesDecoder is given
	}
	var want Messages
	errW := f.Decode(&want)

	var d MessagesDecoder
	// A decoder that has decoded another frame first, into the same
	// slice, must not leak it into this one.
	stale, err := d.Decode(goldenMessagesFrame(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, errG := d.Decode(f, stale)
	var dg MessagesDecoder
	gen, errGen := dg.decodeGeneric(f, nil)
	if errorClass(errW) != errorClass(errG) || errorClass(errW) != errorClass(errGen) {
		t.Fatalf("%x: Frame.Decode: %v; Decode: %v; decodeGeneric: %v", item, errW, errG, errGen)
	}

	var dc MessagesDecoder
	fast, took := dc.decodeByHand(f.body, nil)
	if took && errW != nil {
		t.Fatalf("%x: decodeByHand takes what Frame.Decode rejects (%v)", item, errW)
	}
	if errW != nil {
		return
	}
	// The decoded bodies are copies, empty ones included: none points into
	// the frame, and scribbling over the frame changes none of them.
	for _, ms := range [][]Message{got, fast} {
		for i, m := range ms {
			if p := uintptr(unsafe.Pointer(unsafe.SliceData(m.Body))); m.Body != nil &&
				p >= uintptr(unsafe.Pointer(unsafe.SliceData(item))) && p <= uintptr(unsafe.Pointer(unsafe.SliceData(item)))+uintptr(len(item)) {
				t.Fatalf("%x: message %d: body points into the frame", item, i)
			}
		}
	}
	for i := range item {
		item[i] = 0xff
	}
	for _, c := range []struct {
		name string
		ms   []Message
	}{{"Decode", got}, {"decodeGeneric", gen}, {"decodeByHand", fast}} {
		if c.name == "decodeByHand" && !took {
			continue
		}
		if err := sameMessages(c.ms, want.Messages); err != "" {
			t.Fatalf("%s: %s", c.name, err)
		}
	}
}

// sameMessages says how got differs from want, field by field, a nil
// body from an empty one included; "" if it does not.
func sameMessages(got, want []Message) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Time != w.Time || g.ID != w.ID || g.From != w.From || g.Name != w.Name ||
			!bytes.Equal(g.Body, w.Body) || (g.Body == nil) != (w.Body == nil) {
			return fmt.Sprintf("message %d: got %+v (nil body %v), want %+v (nil body %v)", i, g, g.Body == nil, w, w.Body == nil)
		}
	}
	return ""
}

func TestMessagesDecoderFastPath(t *testing.T) {
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			item := fastCaseItem(t, tc.body)
			f, err := SplitFrame(item)
			if err != nil {
				t.Fatal(err)
			}
			var d MessagesDecoder
			if _, got := d.decodeByHand(f.body, nil); got != tc.fast {
				t.Errorf("decodeByHand takes it: %v, want %v", got, tc.fast)
			}
			checkMessagesDecoder(t, item)
		})
	}
	// At MaxArrayItems empty messages both paths decode them; one more,
	// the generic path rejects the frame and the fast path leaves it.
	for _, n := range []int{MaxArrayItems, MaxArrayItems + 1} {
		item := append(appendHead([]byte{0xa2, 0x00, 0x03, 0x01, 0xa1, 0x01}, 4, uint64(n)), bytes.Repeat([]byte{0xa0}, n)...)
		f, err := SplitFrame(item)
		if err != nil {
			t.Fatal(err)
		}
		var d MessagesDecoder
		if _, got := d.decodeByHand(f.body, nil); got != (n <= MaxArrayItems) {
			t.Errorf("%d empty messages: decodeByHand takes them: %v", n, got)
		}
		checkMessagesDecoder(t, item)
	}
	for _, ms := range fastSeedMessages() {
		item := appendMessages(nil, ms)
		f, err := SplitFrame(item)
		if err != nil {
			t.Fatal(err)
		}
		var d MessagesDecoder
		if _, ok := d.decodeByHand(f.body, nil); !ok {
			t.Errorf("decodeByHand does not take appendMessages' frame of %d messages", len(ms))
		}
		// Through DecodeFrame, as a frame SplitFrame cannot split cheaply
		// is, the body is the same and so is the path.
		_, raw, err := DecodeFrame(item)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.decodeByHand(raw, nil); !ok {
			t.Errorf("decodeByHand does not take a checked frame of %d messages", len(ms))
		}
		checkMessagesDecoder(t, item)
	}
}

// TestMessagesDecoderSlab holds the fast path to what decodeGeneric does
// with memory: a frame's bodies in one allocation, each capped at its
// length, and a name shared by every message of its sender.
func TestMessagesDecoderSlab(t *testing.T) {
	seeds := fastSeedMessages()
	ms := seeds[len(seeds)-1] // 40 messages from 4 senders
	f, err := SplitFrame(appendMessages(nil, ms))
	if err != nil {
		t.Fatal(err)
	}
	var d MessagesDecoder
	got, ok := d.decodeByHand(f.body, nil)
	if !ok {
		t.Fatal("decodeByHand does not take the frame")
	}
	var next uintptr // where the next body should start
	names := map[string]*byte{}
	for i, m := range got {
		if cap(m.Body) != len(m.Body) {
			t.Errorf("message %d: body of cap %d, len %d", i, cap(m.Body), len(m.Body))
		}
		if len(m.Body) > 0 {
			p := uintptr(unsafe.Pointer(unsafe.SliceData(m.Body)))
			if next != 0 && p != next {
				t.Fatalf("message %d: body does not follow the one before it", i)
			}
			next = p + uintptr(len(m.Body))
		}
		if p, ok := names[m.Name]; ok && p != unsafe.StringData(m.Name) {
			t.Errorf("message %d: name %q not shared", i, m.Name)
		}
		names[m.Name] = unsafe.StringData(m.Name)
	}
}

// TestMessagesHaveNoCheck: the fast path calls no check() after decoding
// because neither type the generic path decodes into has one. Whoever adds
// one must make decodeByHand's result go through it too.
func TestMessagesHaveNoCheck(t *testing.T) {
	for _, v := range []any{new(Messages), new(messagesIn)} {
		if _, ok := v.(interface{ check() error }); ok {
			t.Errorf("%T has a check method that MessagesDecoder.decodeByHand does not call", v)
		}
	}
}

// FuzzMessagesDecoder is the differential test of MessagesDecoder's
// hand-written path (see checkMessagesDecoder) on arbitrary bodies of a
// Messages frame. The envelope is fixed so that the fuzzer's mutations land
// in the body; FuzzSplitFrame varies envelopes.
func FuzzMessagesDecoder(f *testing.F) {
	envelope := len(messagesItem(nil))
	for _, ms := range fastSeedMessages() {
		f.Add(appendMessages(nil, ms)[envelope:])
	}
	for _, tc := range fastCases {
		f.Add(fastCaseItem(f, tc.body)[envelope:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkMessagesDecoder(t, messagesItem(body))
	})
}

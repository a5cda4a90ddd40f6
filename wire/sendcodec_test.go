package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"testing"
)

// checkAppendFrame holds AppendFrame of body, given as a value and as a
// pointer, to encMode byte for byte, after bytes already in the buffer.
func checkAppendFrame(t *testing.T, typ uint64, body, ptr any) {
	t.Helper()
	item, err := encMode.Marshal(envelope{Type: typ, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	want := append(binary.BigEndian.AppendUint32([]byte("x"), uint32(len(item))), item...)
	for _, b := range []any{body, ptr} {
		got, err := AppendFrame([]byte("x"), typ, b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendFrame(%d, %T):\n got %x\nwant %x", typ, b, got, want)
		}
	}
}

func checkAppendSend(t *testing.T, s Send) {
	t.Helper()
	checkAppendFrame(t, uint64(OpSend), s, &s)
}

func checkAppendSent(t *testing.T, s Sent) {
	t.Helper()
	checkAppendFrame(t, uint64(KindResult), s, &s)
}

func TestAppendSend(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, 70000)
	for _, ms := range [][]Outgoing{
		nil, {},
		{{}},
		{{ID: tID1, Body: nil}, {ID: tID2, Body: []byte{}}, {ID: tID3, Body: []byte("hi")}},
		{{ID: tID1, Body: long[:23]}, {ID: tID2, Body: long[:24]}, {Body: long[:255]}, {Body: long[:256]}},
		{{ID: tID1, Body: long[:65535]}, {ID: tID2, Body: long[:65536]}, {Body: long}},
		make([]Outgoing, 23), make([]Outgoing, 24), make([]Outgoing, 255), make([]Outgoing, 256),
	} {
		checkAppendSend(t, Send{Group: tGroup, Messages: ms})
	}
	checkAppendSend(t, Send{})
	// A nil *Send is null, as encMode writes it.
	checkAppendFrame(t, uint64(OpSend), (*Send)(nil), (*Send)(nil))
	// Under another op a Send is encoded by reflection, the same.
	checkAppendFrame(t, uint64(OpFetch), Send{Group: tGroup}, &Send{Group: tGroup})
}

func TestAppendSent(t *testing.T) {
	for _, acks := range [][]Ack{
		nil, {},
		{{}},
		{{Seq: 1, Time: tT0}, {Seq: 2, Time: tT0, Duplicate: true}, {Seq: 3, Time: -1}},
		{{Seq: 23, Time: 23}, {Seq: 24, Time: 24, Duplicate: true}, {Seq: 255, Time: -24}, {Seq: 256, Time: -25}},
		{{Seq: 65535, Time: -256}, {Seq: 65536, Time: -257}, {Seq: math.MaxUint32, Time: -65537}},
		{{Seq: math.MaxUint32 + 1, Time: math.MinInt64}, {Seq: math.MaxUint64, Time: math.MaxInt64, Duplicate: true}},
		make([]Ack, 23), make([]Ack, 24), make([]Ack, 255), make([]Ack, 256),
	} {
		for _, epoch := range []uint64{0, 23, 24, tEpoch, math.MaxUint64} {
			checkAppendSent(t, Sent{Epoch: epoch, Acks: acks})
		}
	}
	checkAppendFrame(t, uint64(KindResult), (*Sent)(nil), (*Sent)(nil))
	// KindResult carries every single-reply result: the others go by
	// reflection.
	checkAppendFrame(t, uint64(KindResult), Joined{Epoch: tEpoch, Last: 7}, &Joined{Epoch: tEpoch, Last: 7})
	checkAppendFrame(t, uint64(KindEnd), Sent{Epoch: 1}, &Sent{Epoch: 1})
}

// FuzzAppendSend builds a Send from the fuzzer's input: n messages (up to
// a little over MaxBatch), their IDs counting up from id, their bodies
// prefixes of body of every length, some nil.
func FuzzAppendSend(f *testing.F) {
	f.Add(tGroup[:], tID1[:], []byte("hi"), uint16(1))
	f.Add([]byte{}, []byte{}, []byte{}, uint16(300))
	f.Add(bytes.Repeat([]byte{0xff}, 16), []byte{1}, bytes.Repeat([]byte{'m'}, 300), uint16(30))
	f.Fuzz(func(t *testing.T, group, id, body []byte, n uint16) {
		s := Send{Messages: make([]Outgoing, n%1100)}
		copy(s.Group[:], group)
		var first ID
		copy(first[:], id)
		for i := range s.Messages {
			m := &s.Messages[i]
			m.ID = first
			binary.BigEndian.PutUint16(m.ID[14:], binary.BigEndian.Uint16(first[14:])+uint16(i))
			if i%7 != 3 {
				m.Body = body[:i%(len(body)+1)]
			}
		}
		checkAppendSend(t, s)
	})
}

// FuzzAppendSent builds a Sent of n acks from seq and ts, counting up and
// down from them; bit i%64 of dups marks ack i a duplicate.
func FuzzAppendSent(f *testing.F) {
	f.Add(tEpoch, uint64(1), tT0, uint64(0), uint16(1))
	f.Add(uint64(0), uint64(1<<40), int64(-1<<40), uint64(0xaaaa), uint16(300))
	f.Add(uint64(math.MaxUint64), uint64(math.MaxUint64-3), int64(math.MinInt64+2), uint64(math.MaxUint64), uint16(9))
	f.Fuzz(func(t *testing.T, epoch, seq uint64, ts int64, dups uint64, n uint16) {
		s := Sent{Epoch: epoch, Acks: make([]Ack, n%1100)}
		for i := range s.Acks {
			s.Acks[i] = Ack{Seq: seq + uint64(i), Time: ts - int64(i), Duplicate: dups>>(i%64)&1 == 1}
		}
		checkAppendSent(t, s)
	})
}

// decodeCase is an item to decode as a Send or a Sent, and whether the
// hand-written decoder must take it (false: the reflective decoder must
// decide it).
type decodeCase struct {
	name  string
	item  []byte
	canon bool
}

// itemOf is the CBOR item of the frame AppendFrame writes.
func itemOf(t testing.TB, typ uint64, body any) []byte {
	t.Helper()
	frame, err := AppendFrame(nil, typ, body)
	if err != nil {
		t.Fatal(err)
	}
	return frame[headerSize:]
}

// edit returns a copy of b with b[i:j] replaced by with.
func edit(b []byte, i, j int, with ...byte) []byte {
	return append(append(append([]byte(nil), b[:i]...), with...), b[j:]...)
}

// sendTargets make the values a Send is decoded into: the zero value, and
// values a caller might reuse, whose slices the reflective decoder reuses
// when they are large enough (and then overwrites only the fields present).
var sendTargets = []func() *Send{
	func() *Send { return new(Send) },
	func() *Send {
		return &Send{Group: tGroup2, Messages: []Outgoing{{ID: tID3, Body: []byte("old")}, {ID: tID2}, {ID: tID1, Body: []byte{}}}}
	},
	func() *Send { return &Send{Messages: make([]Outgoing, 0, 40)} },
	func() *Send { return &Send{Messages: []Outgoing{{ID: tID3, Body: []byte("old")}}} },
}

var sentTargets = []func() *Sent{
	func() *Sent { return new(Sent) },
	func() *Sent {
		return &Sent{Epoch: 9, Acks: []Ack{{Seq: 1, Time: 1, Duplicate: true}, {Seq: 2, Time: -2, Duplicate: true}, {Seq: 3}}}
	},
	func() *Sent {
		acks := make([]Ack, 40)
		for i := range acks {
			acks[i] = Ack{Seq: uint64(i), Time: int64(i), Duplicate: i%2 == 0}
		}
		return &Sent{Acks: acks[:0]}
	},
	func() *Sent { return &Sent{Epoch: 1, Acks: []Ack{{Seq: 5, Duplicate: true}}} },
}

// checkDecode holds Frame.Decode of item into a *Send or *Sent (from
// newV) to what it did before the hand-written decoders: the reflective
// decoder with the same mode. Both must give the same error class and leave
// the same value in the target, reusing its slice's array or not alike;
// and both must agree with DecodeFrame then Raw.Decode. It reports whether
// the hand-written decoder took the item.
func checkDecode[T any](t *testing.T, item []byte, newV func() *T, elems func(*T) any) bool {
	t.Helper()
	f, err := SplitFrame(item)
	if err != nil {
		return false
	}
	fast, slow := newV(), newV()
	fastArr, slowArr := arrayOf(elems(fast)), arrayOf(elems(slow))
	errF := f.Decode(fast)
	var errS error
	if f.unchecked {
		errS = decodeBody(bodyDecMode, f.body, slow)
	} else {
		errS = Raw(f.body).Decode(slow)
	}
	if errorClass(errF) != errorClass(errS) {
		t.Fatalf("%x into %T: reflective: %v; Frame.Decode: %v", item, slow, errS, errF)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%x into %T (%v):\nreflective   %+v\nFrame.Decode %+v", item, slow, errS, slow, fast)
	}
	if (arrayOf(elems(fast)) == fastArr) != (arrayOf(elems(slow)) == slowArr) {
		t.Fatalf("%x into %T: the reflective decoder reused the target's array: %v; Frame.Decode: %v",
			item, slow, arrayOf(elems(slow)) == slowArr, arrayOf(elems(fast)) == fastArr)
	}
	if _, raw, err := DecodeFrame(item); err == nil {
		two := newV()
		if err := raw.Decode(two); errorClass(err) != errorClass(errF) || !reflect.DeepEqual(two, fast) {
			t.Fatalf("%x into %T: two-pass: %v %+v; Frame.Decode: %v %+v", item, two, err, two, errF, fast)
		}
	} else if errF == nil {
		t.Fatalf("%x into %T: DecodeFrame rejects it (%v), Frame.Decode accepts it", item, fast, err)
	}
	return f.unchecked && decodeCanonical(f.body, newV())
}

// arrayOf is the address of a slice's array, or 0 for a slice with none.
func arrayOf(s any) uintptr {
	v := reflect.ValueOf(s)
	if v.Cap() == 0 {
		return 0
	}
	return v.Pointer()
}

func sendMessages(s *Send) any { return s.Messages }
func sentAcks(s *Sent) any     { return s.Acks }

// checkDecodeAll runs checkDecode into each of targets and reports whether
// the hand-written decoder took the item.
func checkDecodeAll[T any](t *testing.T, item []byte, targets []func() *T, elems func(*T) any) bool {
	t.Helper()
	var canon bool
	for _, newV := range targets {
		canon = checkDecode(t, item, newV, elems)
	}
	return canon
}

func checkDecodeSend(t *testing.T, item []byte) bool {
	t.Helper()
	return checkDecodeAll(t, item, sendTargets, sendMessages)
}

func checkDecodeSent(t *testing.T, item []byte) bool {
	t.Helper()
	return checkDecodeAll(t, item, sentTargets, sentAcks)
}

// sendCases are Send args the hand-written decoder takes (each way
// appendSend writes them), and valid or invalid variants it must leave to
// the reflective decoder.
func sendCases(t testing.TB) []decodeCase {
	t.Helper()
	long := bytes.Repeat([]byte{'b'}, 70000)
	one := itemOf(t, uint64(OpSend), &Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: []byte("hi")}}})
	// one: a2 00 14 01 | a2 01 50 <group> 02 81 | a2 01 50 <id> 02 42 68 69
	const arr, msg = 24, 25 // offsets of the array's head and of the message
	many := func(n int) []Outgoing {
		ms := make([]Outgoing, n)
		for i := range ms {
			binary.BigEndian.PutUint16(ms[i].ID[:], uint16(i+1))
		}
		return ms
	}
	cases := []decodeCase{{"one", one, true}}
	for _, c := range []struct {
		name string
		ms   []Outgoing
	}{
		{"nil messages", nil},
		{"nil body", []Outgoing{{ID: tID1}}},
		{"bodies at head widths", []Outgoing{{ID: tID1, Body: long[:23]}, {ID: tID2, Body: long[:24]}, {ID: tID3, Body: long[:256]}}},
		{"long bodies", []Outgoing{{ID: tID1, Body: long[:65536]}, {ID: tID2, Body: long}}},
		{"no id", []Outgoing{{ID: tID1}, {}}},
		{"a repeated id", []Outgoing{{ID: tID1}, {ID: tID2}, {ID: tID1}}},
		{"23 messages", many(23)}, {"24 messages", many(24)}, {"256 messages", many(256)},
		{"MaxBatch messages", many(MaxBatch)}, {"MaxBatch+1 messages", many(MaxBatch + 1)},
		{"MaxArrayItems messages", many(MaxArrayItems)},
	} {
		cases = append(cases, decodeCase{c.name, itemOf(t, uint64(OpSend), &Send{Group: tGroup, Messages: c.ms}), true})
	}
	over := itemOf(t, uint64(OpSend), &Send{Group: tGroup, Messages: many(MaxArrayItems + 1)})
	return append(cases,
		decodeCase{"MaxArrayItems+1 messages", over, false},
		decodeCase{"a byte after", append(bytes.Clone(one), 0x00), false},
		decodeCase{"one byte short", one[:len(one)-1], false},
		decodeCase{"a long array head", edit(one, arr, arr+1, 0x98, 0x01), false},
		decodeCase{"a long body head", edit(one, len(one)-3, len(one)-2, 0x58, 0x02), false},
		decodeCase{"a long group head", edit(one, 6, 7, 0x58, 0x10), false},
		decodeCase{"a long id head", edit(one, msg+2, msg+3, 0x58, 0x10), false},
		decodeCase{"a text body", edit(one, len(one)-3, len(one)-2, 0x62), false},
		decodeCase{"a null body", edit(one, len(one)-3, len(one), 0xf6), false},
		decodeCase{"a short id", edit(one, msg+2, msg+4, 0x4f), false},
		decodeCase{"keys swapped", edit(one, 4, len(one), append(append([]byte{0xa2, 0x02}, one[arr:]...), one[5:arr-1]...)...), false},
		decodeCase{"an unknown key", edit(one, 4, 5, 0xa3, 0x00, 0x00), false},
		decodeCase{"a message's unknown key", edit(one, msg, msg+1, 0xa3, 0x00, 0x00), false},
		decodeCase{"no group", edit(one, 4, arr-1, 0xa1), false},
		decodeCase{"a message without its body", edit(one, msg, len(one), append([]byte{0xa1}, one[msg+1:msg+19]...)...), false},
		decodeCase{"an indefinite array", edit(one, arr, arr+1, 0x9f), false},
		decodeCase{"an empty map", []byte{0xa2, 0x00, 0x14, 0x01, 0xa0}, false},
		decodeCase{"no body", []byte{0xa1, 0x00, 0x14}, false},
		decodeCase{"key 1 first", append([]byte{0xa2, 0x01}, append(bytes.Clone(one[4:]), 0x00, 0x14)...), false},
	)
}

// sentCases are the same for Sent.
func sentCases(t testing.TB) []decodeCase {
	t.Helper()
	one := itemOf(t, uint64(KindResult), &Sent{Epoch: 7, Acks: []Ack{{Seq: 1, Time: 2}}})
	// one: a2 00 01 01 | a2 01 07 02 81 | a2 01 01 02 02
	dup := itemOf(t, uint64(KindResult), &Sent{Epoch: 7, Acks: []Ack{{Seq: 1, Time: 2, Duplicate: true}}})
	const ack = 9
	many := func(n int) []Ack {
		acks := make([]Ack, n)
		for i := range acks {
			acks[i] = Ack{Seq: uint64(i), Time: -int64(i), Duplicate: i%3 == 0}
		}
		return acks
	}
	cases := []decodeCase{{"one", one, true}, {"a duplicate", dup, true}}
	for _, c := range []struct {
		name string
		s    Sent
	}{
		{"nil acks", Sent{Epoch: tEpoch}},
		{"zero", Sent{Acks: []Ack{{}}}},
		{"head widths", Sent{Epoch: 24, Acks: []Ack{{Seq: 23, Time: -24}, {Seq: 255, Time: -25}, {Seq: 256, Time: 65536, Duplicate: true}}}},
		{"extremes", Sent{Epoch: math.MaxUint64, Acks: []Ack{{Seq: math.MaxUint64, Time: math.MinInt64}, {Seq: 1 << 32, Time: math.MaxInt64}}}},
		{"24 acks", Sent{Acks: many(24)}}, {"MaxArrayItems acks", Sent{Acks: many(MaxArrayItems)}},
	} {
		cases = append(cases, decodeCase{c.name, itemOf(t, uint64(KindResult), &c.s), true})
	}
	over := itemOf(t, uint64(KindResult), &Sent{Acks: many(MaxArrayItems + 1)})
	return append(cases,
		decodeCase{"MaxArrayItems+1 acks", over, false},
		decodeCase{"a byte after", append(bytes.Clone(one), 0x00), false},
		decodeCase{"one byte short", one[:len(one)-1], false},
		decodeCase{"duplicate false", edit(dup, len(dup)-1, len(dup), 0xf4), false},
		decodeCase{"duplicate 1", append(edit(dup, len(dup)-1, len(dup)), 0x01), false},
		decodeCase{"a duplicate's key 3 missing", dup[:len(dup)-2], false},
		decodeCase{"key 3 without its map saying so", edit(dup, ack, ack+1, 0xa2), false},
		decodeCase{"a long epoch", edit(one, 6, 7, 0x18, 0x07), false},
		decodeCase{"a long seq", edit(one, ack+2, ack+3, 0x18, 0x01), false},
		decodeCase{"a long time", edit(one, ack+4, ack+5, 0x19, 0x00, 0x02), false},
		decodeCase{"a negative seq", edit(one, ack+2, ack+3, 0x20), false},
		decodeCase{"a negative epoch", edit(one, 6, 7, 0x20), false},
		decodeCase{"a time past int64", edit(one, ack+4, ack+5, 0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0), false},
		decodeCase{"a time before int64", edit(one, ack+4, ack+5, 0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0), false},
		decodeCase{"a float time", edit(one, ack+4, ack+5, 0xf9, 0x40, 0x00), false},
		decodeCase{"an ack without its time", edit(one, ack, len(one), 0xa1, 0x01, 0x01), false},
		decodeCase{"an empty ack", edit(one, ack, len(one), 0xa0), false},
		decodeCase{"no epoch", edit(one, 4, 7, 0xa1), false},
		decodeCase{"an unknown key", edit(one, 4, 5, 0xa3, 0x00, 0x00), false},
		decodeCase{"an indefinite array", append(edit(one, 8, 9, 0x9f), 0xff), false},
		decodeCase{"an array of 2 holding 1", edit(one, 8, 9, 0x82), false},
		decodeCase{"an empty map", []byte{0xa2, 0x00, 0x01, 0x01, 0xa0}, false},
	)
}

func TestDecodeSend(t *testing.T) {
	for _, c := range sendCases(t) {
		if got := checkDecodeSend(t, c.item); got != c.canon {
			t.Errorf("%s: read by hand: %v, want %v", c.name, got, c.canon)
		}
	}
}

func TestDecodeSent(t *testing.T) {
	for _, c := range sentCases(t) {
		if got := checkDecodeSent(t, c.item); got != c.canon {
			t.Errorf("%s: read by hand: %v, want %v", c.name, got, c.canon)
		}
	}
}

// TestDecodeSentInto pins down what decoding into a value in use does, by
// hand as by reflection: fields present are set, the acks' array is reused
// when it is large enough, and there an absent key 3 leaves an old
// Duplicate true.
func TestDecodeSentInto(t *testing.T) {
	item := itemOf(t, uint64(KindResult), &Sent{Epoch: 5, Acks: []Ack{{Seq: 7, Time: -7}}})
	for _, c := range []struct {
		name   string
		into   func() *Sent
		want   Sent
		reused bool
	}{
		{"zero", func() *Sent { return new(Sent) }, Sent{Epoch: 5, Acks: []Ack{{Seq: 7, Time: -7}}}, false},
		{"an array large enough", func() *Sent { return &Sent{Epoch: 9, Acks: []Ack{{Seq: 1, Time: 1, Duplicate: true}, {Seq: 2}}} },
			Sent{Epoch: 5, Acks: []Ack{{Seq: 7, Time: -7, Duplicate: true}}}, true},
		{"an array too small", func() *Sent { return &Sent{Epoch: 9, Acks: make([]Ack, 3)[:0:0]} },
			Sent{Epoch: 5, Acks: []Ack{{Seq: 7, Time: -7}}}, false},
	} {
		f, err := SplitFrame(item)
		if err != nil {
			t.Fatal(err)
		}
		for _, decode := range []func(*Sent) error{
			func(s *Sent) error { return f.Decode(s) },
			func(s *Sent) error { return decodeBody(bodyDecMode, f.body, s) },
		} {
			s := c.into()
			before := arrayOf(s.Acks)
			if err := decode(s); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if !reflect.DeepEqual(*s, c.want) {
				t.Errorf("%s: got %+v, want %+v", c.name, *s, c.want)
			}
			if reused := before != 0 && arrayOf(s.Acks) == before; reused != c.reused {
				t.Errorf("%s: array reused: %v, want %v", c.name, reused, c.reused)
			}
		}
	}
}

// TestDecodeSendInto: a Send's canonical encoding sets every field of every
// message, so a value in use decodes to what a zero one would, in the
// target's array when it is large enough.
func TestDecodeSendInto(t *testing.T) {
	want := Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: []byte("hi")}, {ID: tID2, Body: []byte{}}}}
	f, err := SplitFrame(itemOf(t, uint64(OpSend), &want))
	if err != nil {
		t.Fatal(err)
	}
	old := []Outgoing{{ID: tID3, Body: []byte("old")}, {ID: tID3, Body: []byte("older")}, {}}
	s := &Send{Group: tGroup2, Messages: old}
	if err := f.Decode(s); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*s, want) || &s.Messages[0] != &old[0] {
		t.Errorf("got %+v (array reused: %v), want %+v in the old array", *s, &s.Messages[0] == &old[0], want)
	}
}

// TestDecodeSendAliases: the bodies of a Send read by hand are the frame's
// bytes, capped so that appending to one cannot write over the next.
func TestDecodeSendAliases(t *testing.T) {
	item := itemOf(t, uint64(OpSend), &Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: []byte("hi")}, {ID: tID2, Body: []byte("yo")}}})
	f, err := SplitFrame(item)
	if err != nil {
		t.Fatal(err)
	}
	var s Send
	if err := f.Decode(&s); err != nil {
		t.Fatal(err)
	}
	b := s.Messages[0].Body
	if cap(b) != len(b) {
		t.Errorf("body of len %d has cap %d", len(b), cap(b))
	}
	i := bytes.Index(item, []byte("hi"))
	item[i] = 'H'
	if string(b) != "Hi" {
		t.Errorf("body %q does not alias the frame", b)
	}
}

// sendFromFuzz builds a valid Send from fuzz input: a group from data's
// first bytes, up to 39 messages (sel picks how many) whose bodies are
// prefixes of data, some nil; sel's low bits give one message no ID or
// a repeated one, so the checks have something to reject.
func sendFromFuzz(data []byte, sel uint8) *Send {
	s := &Send{Messages: make([]Outgoing, int(sel>>2)%40)}
	copy(s.Group[:], data)
	for i := range s.Messages {
		m := &s.Messages[i]
		binary.BigEndian.PutUint16(m.ID[:], uint16(i+1))
		if i%5 != 4 {
			m.Body = data[:(i*37)%(len(data)+1)]
		}
	}
	if len(s.Messages) > 1 {
		switch sel & 3 {
		case 1:
			s.Messages[1].ID = ID{}
		case 2:
			s.Messages[1].ID = s.Messages[0].ID
		}
	}
	return s
}

// sentFromFuzz builds a Sent from fuzz input: epoch, seqs and times from
// data's bytes, up to 39 acks (sel picks how many), every third (shifted
// by sel) a duplicate.
func sentFromFuzz(data []byte, sel uint8) *Sent {
	word := func(i int) uint64 {
		var w [8]byte
		for j := range w {
			if len(data) > 0 {
				w[j] = data[(i*8+j)%len(data)]
			}
		}
		return binary.BigEndian.Uint64(w[:])
	}
	s := &Sent{Epoch: word(0), Acks: make([]Ack, int(sel>>2)%40)}
	for i := range s.Acks {
		s.Acks[i] = Ack{Seq: word(2*i + 1), Time: int64(word(2*i + 2)), Duplicate: (i+int(sel))%3 == 0}
		if sel&1 == 1 { // small values, for the short heads
			s.Acks[i].Seq >>= 8 * (i % 8)
			s.Acks[i].Time >>= 8 * (i % 8)
		}
	}
	return s
}

// mutate changes one byte of b, inserts or deletes one, as m says.
func mutate(b []byte, m uint32) []byte {
	pos := int(m>>8) % (len(b) + 1)
	c := byte(m >> 24)
	switch {
	case m&3 == 0 && pos < len(b):
		return edit(b, pos, pos+1, b[pos]^1<<(m>>2&7))
	case m&3 == 1:
		return edit(b, pos, pos, c)
	case m&3 == 2 && pos < len(b):
		return edit(b, pos, pos+1)
	case pos < len(b):
		return edit(b, pos, pos+1, c)
	}
	return b
}

// addDecodeSeeds seeds a decoder's fuzz target with the small items of its
// table cases and the envelopes of FuzzSplitFrame, each with a mutation and
// a selector of its own.
func addDecodeSeeds(f *testing.F, cases []decodeCase) {
	var seeds [][]byte
	for _, c := range cases {
		if len(c.item) < 4096 {
			seeds = append(seeds, c.item)
		}
	}
	seeds = append(seeds, splitSeeds(f)...)
	for i, item := range seeds {
		f.Add(item, uint32(i*0x01010101), uint8(i))
	}
}

// FuzzDecodeSend is the differential test of decodeSend (see checkDecode):
// on data as a frame's item, on a valid Send built from data, which the
// hand-written decoder must take, and on that Send's encoding mutated.
func FuzzDecodeSend(f *testing.F) {
	addDecodeSeeds(f, sendCases(f))
	f.Fuzz(func(t *testing.T, data []byte, mut uint32, sel uint8) {
		checkDecodeSend(t, data)
		item := itemOf(t, uint64(OpSend), sendFromFuzz(data, sel))
		if len(item) <= MaxFrameSize && !checkDecodeSend(t, item) {
			t.Fatalf("%x: not read by hand", item)
		}
		checkDecodeSend(t, mutate(item, mut))
	})
}

// FuzzDecodeSent is FuzzDecodeSend for decodeSent.
func FuzzDecodeSent(f *testing.F) {
	addDecodeSeeds(f, sentCases(f))
	f.Fuzz(func(t *testing.T, data []byte, mut uint32, sel uint8) {
		checkDecodeSent(t, data)
		item := itemOf(t, uint64(KindResult), sentFromFuzz(data, sel))
		if !checkDecodeSent(t, item) {
			t.Fatalf("%x: not read by hand", item)
		}
		checkDecodeSent(t, mutate(item, mut))
	})
}

// TestRepeatedID finds a repeated ID wherever it is, on both sides of the
// batch size where repeatedID stops comparing pairs and builds a set.
func TestRepeatedID(t *testing.T) {
	batch := func(n int) []Outgoing {
		msgs := make([]Outgoing, n)
		for i := range msgs {
			msgs[i].ID = ID{0x01, byte(i >> 8), byte(i), 0x70}
		}
		return msgs
	}
	for _, n := range []int{0, 1, 2, 16, pairwiseIDs, pairwiseIDs + 1, MaxBatch} {
		if got := repeatedID(batch(n)); got != 0 {
			t.Errorf("%d distinct IDs: repeatedID = %d, want 0", n, got)
		}
		for _, at := range [][2]int{{0, 1}, {0, n - 1}, {n / 2, n - 1}, {n - 2, n - 1}} {
			first, second := at[0], at[1]
			if n < 2 || first >= second {
				continue
			}
			msgs := batch(n)
			msgs[second].ID = msgs[first].ID
			if got := repeatedID(msgs); got != second {
				t.Errorf("%d messages, message %d repeating message %d: repeatedID = %d, want %d", n, second, first, got, second)
			}
		}
	}
}

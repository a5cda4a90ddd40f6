package wire

import (
	"bytes"
	"encoding/binary"
	"math"
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

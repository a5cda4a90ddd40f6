package cell

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/store"
)

// BenchmarkApplyBatch applies sends of 256-byte messages, as a replica's
// state machine does under load, to a group logged on disk with the
// default dedup window: entries per ApplyBatch x messages per entry (the
// send-batched load gathers about 36 messages per entry, from clients'
// batches of 16 from one sender each).
func BenchmarkApplyBatch(b *testing.B) {
	for _, c := range []struct{ entries, msgs int }{{1, 36}, {4, 36}, {1, 256}} {
		b.Run(fmt.Sprintf("entries=%d/msgs=%d", c.entries, c.msgs), func(b *testing.B) {
			host := newTestHost(b.TempDir())
			defer host.close()
			x := newFSMFixture(b, host)
			x.spec = GroupSpec{ID: uuid.New(), Name: "bench", Epoch: 7}
			if r := x.apply(1, encodeCreate(nil, x.spec)); r[0] != nil {
				b.Fatal(r[0])
			}
			cmds := make([]sendTemplate, c.entries)
			for i := range cmds {
				cmds[i] = newSendTemplate(b, x, c.msgs)
			}
			data := make([][]byte, c.entries)
			seq, t := uint64(1), int64(1)
			b.ReportAllocs()
			b.SetBytes(int64(c.entries * c.msgs * 256))
			for b.Loop() {
				for i := range cmds {
					data[i] = cmds[i].at(seq, t)
					seq, t = seq+uint64(c.msgs), t+int64(c.msgs)*1000
				}
				for i, r := range x.apply(2, data...) {
					if r != nil {
						b.Fatalf("entry %d: %v", i, r)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq-1), "ns/msg")
		})
	}
}

// sendTemplate is an encoded send whose stamps and IDs are rewritten in
// place for each use, so that the benchmark's loop does not encode.
type sendTemplate struct {
	data  []byte
	seqAt int
	idAt  []int
}

// newSendTemplate encodes a send of n 256-byte messages, 1 µs apart, from
// one sender per 16.
func newSendTemplate(b *testing.B, x *fsmFixture, n int) sendTemplate {
	entries := make([]store.Entry, n)
	body := make([]byte, 256)
	for i := range entries {
		s := store.Sender{Fingerprint: [32]byte{byte(i / 16)}, Name: fmt.Sprintf("sender-%d", i/16)}
		entries[i] = store.Entry{Seq: 1 + uint64(i), Time: 1 + int64(i)*1000, ID: [16]byte{0xee, 0xee, byte(i), byte(i >> 8)}, From: s, Body: body}
	}
	tpl := sendTemplate{data: x.enc.encodeSend(nil, x.spec.ID, 2, entries)}
	tpl.seqAt = 1 + 16 + 8 + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(n))
	for i := range entries {
		at := bytes.Index(tpl.data, entries[i].ID[:])
		if at < 0 {
			b.Fatal("message ID not found in its send")
		}
		tpl.idAt = append(tpl.idAt, at)
	}
	return tpl
}

// at stamps the template's messages from seq and t on, with new IDs.
func (s *sendTemplate) at(seq uint64, t int64) []byte {
	binary.LittleEndian.PutUint64(s.data[s.seqAt:], seq)
	binary.LittleEndian.PutUint64(s.data[s.seqAt+8:], uint64(t))
	for i, at := range s.idAt {
		binary.LittleEndian.PutUint64(s.data[at+8:], seq+uint64(i))
	}
	return s.data
}

// BenchmarkDecodeSend decodes a send of 36 messages of 256 bytes from
// three senders, as every replica does for each entry it applies.
func BenchmarkDecodeSend(b *testing.B) {
	entries := make([]store.Entry, 36)
	body := make([]byte, 256)
	for i := range entries {
		s := store.Sender{Fingerprint: [32]byte{byte(i / 16)}, Name: fmt.Sprintf("sender-%d", i/16)}
		entries[i] = store.Entry{Seq: 1 + uint64(i), Time: 1 + int64(i)*1000, ID: [16]byte{0xee, 0xee, byte(i), byte(i >> 8)}, From: s, Body: body}
	}
	data := newEncoder().encodeSend(nil, uuid.New(), 2, entries)
	dst := make([]store.Entry, 0, len(entries))
	b.ReportAllocs()
	for b.Loop() {
		c, err := decodeCommand(data, dst[:0])
		if err != nil || len(c.entries) != len(entries) {
			b.Fatalf("%d entries, %v", len(c.entries), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/msg")
}

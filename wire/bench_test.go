package wire

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkSend is the cost per operation of a send request with one
// 256-byte message: the client's encode and the server's read and decode
// (in one pass, as the daemon does; decode-two-pass is DecodeFrame then
// Raw.Decode, for comparison).
func BenchmarkSend(b *testing.B) { benchSend(b, 1) }

// BenchmarkSend16 is BenchmarkSend for a batch of 16 messages of 256 bytes,
// as a batching client sends them under load.
func BenchmarkSend16(b *testing.B) { benchSend(b, 16) }

// BenchmarkSent is the same for the one-ack reply of BenchmarkSend.
func BenchmarkSent(b *testing.B) { benchSent(b, 1) }

// BenchmarkSent16 is the reply of BenchmarkSend16: 16 acks.
func BenchmarkSent16(b *testing.B) { benchSent(b, 16) }

func benchSend(b *testing.B, n int) {
	req := &Send{Group: tGroup, Messages: make([]Outgoing, n)}
	for i := range req.Messages {
		id := tID1
		id[15] += byte(i)
		req.Messages[i] = Outgoing{ID: id, Body: bytes.Repeat([]byte{'m'}, 256)}
	}
	buf := make([]byte, 0, 512*n)
	benchFrame(b, func(w *bytes.Buffer) error { return WriteRequest(w, OpSend, req) },
		func(r *bytes.Reader) error {
			item, err := ReadFrame(r, buf, 0)
			if err != nil {
				return err
			}
			_, f, err := SplitRequest(item)
			if err != nil {
				return err
			}
			var s Send
			return f.Decode(&s)
		},
		func(r *bytes.Reader) error {
			_, raw, err := ReadRequest(r, 0)
			if err != nil {
				return err
			}
			var s Send
			return raw.Decode(&s)
		})
}

func benchSent(b *testing.B, n int) {
	ack := &Sent{Epoch: tEpoch, Acks: make([]Ack, n)}
	for i := range ack.Acks {
		ack.Acks[i] = Ack{Seq: 1<<20 + uint64(i), Time: tT0 + int64(i)}
	}
	buf := make([]byte, 0, 64*n)
	benchFrame(b, func(w *bytes.Buffer) error { return WriteResponse(w, KindResult, ack) },
		func(r *bytes.Reader) error {
			item, err := ReadFrame(r, buf, 0)
			if err != nil {
				return err
			}
			_, f, err := SplitResponse(item)
			if err != nil {
				return err
			}
			var s Sent
			return f.Decode(&s)
		},
		func(r *bytes.Reader) error {
			_, raw, err := ReadResponse(r, buf)
			if err != nil {
				return err
			}
			var s Sent
			return raw.Decode(&s)
		})
}

// BenchmarkMessages is a client's cost per Messages frame as a fetch sends
// them: 1,000 messages of 256 bytes from 4 senders (about 256 KiB). decode
// is MessagesDecoder; decode-two-pass is DecodeFrame then Raw.Decode into
// a Messages.
func BenchmarkMessages(b *testing.B) {
	ms := &Messages{Messages: make([]Message, 1000)}
	names := []string{"alice", "bob", "carol", "dave"}
	for i := range ms.Messages {
		ms.Messages[i] = Message{Seq: uint64(i + 1), Time: tT0 + int64(i), ID: tID1, From: tAlice,
			Name: names[i%len(names)], Body: bytes.Repeat([]byte{'m'}, 256)}
	}
	buf := make([]byte, 0, 512<<10)
	var md MessagesDecoder
	var msgs []Message
	benchFrame(b, func(w *bytes.Buffer) error { return WriteResponse(w, KindMessages, ms) },
		func(r *bytes.Reader) error {
			item, err := ReadFrame(r, buf, 0)
			if err != nil {
				return err
			}
			_, f, err := SplitResponse(item)
			if err != nil {
				return err
			}
			msgs, err = md.Decode(f, msgs)
			return err
		},
		func(r *bytes.Reader) error {
			_, raw, err := ReadResponse(r, buf)
			if err != nil {
				return err
			}
			var got Messages
			return raw.Decode(&got)
		})
}

func benchFrame(b *testing.B, encode func(*bytes.Buffer) error, decode, decodeTwoPass func(*bytes.Reader) error) {
	var w bytes.Buffer
	if err := encode(&w); err != nil {
		b.Fatal(err)
	}
	frame := bytes.Clone(w.Bytes())
	b.Logf("frame of %d bytes", len(frame))
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Reset()
			if err := encode(&w); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, d := range []struct {
		name string
		dec  func(*bytes.Reader) error
	}{{"decode", decode}, {"decode-two-pass", decodeTwoPass}} {
		dec := d.dec
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(frame)
			for b.Loop() {
				r.Reset(frame)
				if err := dec(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("encode+decode", func(b *testing.B) {
		b.ReportAllocs()
		var r bytes.Reader
		for b.Loop() {
			w.Reset()
			if err := encode(&w); err != nil {
				b.Fatal(err)
			}
			r.Reset(w.Bytes())
			if err := decode(&r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	})
}

// BenchmarkMessagesDecoder is MessagesDecoder.Decode alone, per frame: a
// fetch's frame of 1,000 messages of 256 bytes from 4 senders, and a
// watcher's frame of one message.
func BenchmarkMessagesDecoder(b *testing.B) {
	names := []string{"alice", "bob", "carol", "dave"}
	for _, n := range []int{1000, 1} {
		ms := make([]Message, n)
		for i := range ms {
			ms[i] = Message{Seq: uint64(i + 1), Time: tT0 + int64(i), ID: tID1, From: tAlice,
				Name: names[i%len(names)], Body: bytes.Repeat([]byte{'m'}, 256)}
		}
		item := appendMessages(nil, ms)
		f, err := SplitFrame(item)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("msgs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(item)))
			var d MessagesDecoder
			var got []Message
			for b.Loop() {
				if got, err = d.Decode(f, got); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

package wire

import (
	"bytes"
	"testing"
)

// BenchmarkSend is the cost per operation of a send request with one
// 256-byte message: the client's encode and the server's read and decode.
func BenchmarkSend(b *testing.B) {
	req := &Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: bytes.Repeat([]byte{'m'}, 256)}}}
	benchFrame(b, func(w *bytes.Buffer) error { return WriteRequest(w, OpSend, req) },
		func(r *bytes.Reader) error {
			_, raw, err := ReadRequest(r, 0)
			if err != nil {
				return err
			}
			var s Send
			return raw.Decode(&s)
		})
}

// BenchmarkSent is the same for its one-ack reply.
func BenchmarkSent(b *testing.B) {
	ack := &Sent{Epoch: tEpoch, Acks: []Ack{{Seq: 1 << 20, Time: tT0}}}
	buf := make([]byte, 0, 64)
	benchFrame(b, func(w *bytes.Buffer) error { return WriteResponse(w, KindResult, ack) },
		func(r *bytes.Reader) error {
			_, raw, err := ReadResponse(r, buf)
			if err != nil {
				return err
			}
			var s Sent
			return raw.Decode(&s)
		})
}

func benchFrame(b *testing.B, encode func(*bytes.Buffer) error, decode func(*bytes.Reader) error) {
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
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(frame)
		for b.Loop() {
			r.Reset(frame)
			if err := decode(r); err != nil {
				b.Fatal(err)
			}
		}
	})
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

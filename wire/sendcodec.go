package wire

import (
	"math"
	"slices"
)

// The send path without reflection.
//
// Every message goes through a Send request and a Sent reply, and
// reflective CBOR on that path was a large share of both ends' CPU
// (BENCHMARKS.md, "Measurements behind the code"). So AppendFrame encodes
// these two bodies by hand (appendSend, appendSent), and Frame.Decode reads
// them by hand
// (decodeSend, decodeSent) when they are encoded exactly as those write
// them, which is how encMode writes them too.
//
// Neither changes a byte or a verdict: the encoders are held to encMode
// byte for byte (TestAppendSend, FuzzAppendSend and the Sent ones); the
// decoders accept only the canonical encoding, hand anything else, valid or
// not, to the reflective decoder, and for what they accept produce what it
// would, in the same target (FuzzDecodeSend, FuzzDecodeSent). One thing
// differs, by design: a Send's bodies are not copied out of the frame but
// alias it (see Frame.Decode), which spares an allocation and a copy per
// message on the daemon, whose log copies them anyway.
//
// A field added to Send, Outgoing, Sent or Ack (or to Messages and Message,
// see messages.go) must be carried by these hand-written paths too:
// TestFastPathsCarryEveryField fills every field of every struct they carry
// and fails until they do.

// Smallest encodings of one element, for bounding a declared count by the
// bytes left before looking at the elements.
const (
	minOutgoingBytes = 21 // a2 01 50 <16 bytes> 02 40
	minAckBytes      = 5  // a2 01 00 02 00
)

// sendBody returns a send request's args, which appendSend encodes
// without reflection. A nil *Send (encoded as null) is left to encMode.
func sendBody(typ uint64, body any) (Send, bool) {
	if typ != uint64(OpSend) {
		return Send{}, false
	}
	switch b := body.(type) {
	case Send:
		return b, true
	case *Send:
		if b != nil {
			return *b, true
		}
	}
	return Send{}, false
}

// sentBody returns the fields of a send's result. KindResult carries the
// result of every single-reply operation; only a Sent is encoded by
// appendSent.
func sentBody(typ uint64, body any) (uint64, []Ack, bool) {
	if typ != uint64(KindResult) {
		return 0, nil, false
	}
	switch b := body.(type) {
	case Sent:
		return b.Epoch, b.Acks, true
	case *Sent:
		if b != nil {
			return b.Epoch, b.Acks, true
		}
	}
	return 0, nil, false
}

// appendSend appends the envelope {0: OpSend, 1: {1: group, 2: ms, 3:
// after, 4: after_epoch}} as the deterministic encoder writes it: both keys
// of every Outgoing, keys 3 and 4 only when not zero (omitempty), in key
// order, shortest heads, a nil slice or body as an empty one.
func appendSend(dst []byte, s Send) []byte {
	group, ms := s.Group, s.Messages
	size := 32
	for i := range ms {
		size += 32 + len(ms[i].Body) // 32: more than a message's heads and ID take
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, 0xa2, 0x00)
	dst = appendHead(dst, 0, uint64(OpSend))
	pairs := byte(2)
	if s.After != 0 {
		pairs++
	}
	if s.AfterEpoch != 0 {
		pairs++
	}
	dst = append(dst, 0x01, 0xa0|pairs, 0x01, 0x50)
	dst = append(dst, group[:]...)
	dst = append(dst, 0x02)
	dst = appendHead(dst, 4, uint64(len(ms)))
	for i := range ms {
		m := &ms[i]
		dst = append(dst, 0xa2, 0x01, 0x50)
		dst = append(dst, m.ID[:]...)
		dst = append(dst, 0x02)
		dst = appendHead(dst, 2, uint64(len(m.Body)))
		dst = append(dst, m.Body...)
	}
	if s.After != 0 {
		dst = appendHead(append(dst, 0x03), 0, s.After)
	}
	if s.AfterEpoch != 0 {
		dst = appendHead(append(dst, 0x04), 0, s.AfterEpoch)
	}
	return dst
}

// appendSent appends the envelope {0: KindResult, 1: {1: epoch, 2: acks}}
// as the deterministic encoder writes it; an Ack's key 3 only when it is a
// duplicate (omitempty).
func appendSent(dst []byte, epoch uint64, acks []Ack) []byte {
	dst = slices.Grow(dst, 16+24*len(acks)) // 24: more than an ack takes
	dst = append(dst, 0xa2, 0x00)
	dst = appendHead(dst, 0, uint64(KindResult))
	dst = append(dst, 0x01, 0xa2, 0x01)
	dst = appendHead(dst, 0, epoch)
	dst = append(dst, 0x02)
	dst = appendHead(dst, 4, uint64(len(acks)))
	for i := range acks {
		a := &acks[i]
		if a.Duplicate {
			dst = append(dst, 0xa3, 0x01)
		} else {
			dst = append(dst, 0xa2, 0x01)
		}
		dst = appendHead(dst, 0, a.Seq)
		dst = append(dst, 0x02)
		dst = appendInt(dst, a.Time)
		if a.Duplicate {
			dst = append(dst, 0x03, 0xf5)
		}
	}
	return dst
}

// decodeCanonical decodes body into v, if v is a *Send or a *Sent and body
// is its encoding exactly as appendSend or appendSent writes it, and
// nothing after it. It reports false, with v untouched, for anything else,
// which the reflective decoder then decides: other encodings it accepts
// (longer heads, other key orders, unknown or missing keys), and all it
// rejects, such as an array over MaxArrayItems. (The shapes read here nest
// four deep with the envelope, within MaxNesting; their maps have at most
// three pairs.) It does not check the fields.
func decodeCanonical(body []byte, v any) bool {
	switch v := v.(type) {
	case *Send:
		return v != nil && decodeSend(body, v)
	case *Sent:
		return v != nil && decodeSent(body, v)
	}
	return false
}

// decodeSend decodes a Send's args in two passes: the first checks the
// encoding without touching s, the second fills s as cbor's decoder would.
// The bodies alias b.
func decodeSend(b []byte, s *Send) bool {
	n, after, afterEpoch, ok := scanSend(b)
	if !ok {
		return false
	}
	// As cbor's decoder: a key absent leaves the field as it was.
	if after != 0 {
		s.After = after
	}
	if afterEpoch != 0 {
		s.AfterEpoch = afterEpoch
	}
	copy(s.Group[:], b[3:19])
	ms := reuse(s.Messages, n)
	_, off, _ := canonHead(b, 20, 4)
	for i := range ms {
		copy(ms[i].ID[:], b[off+3:off+19])
		l, start, _ := canonHead(b, off+20, 2)
		off = start + int(l)
		ms[i].Body = b[start:off:off]
	}
	s.Messages = ms
	return true
}

// scanSend reports whether b is exactly a Send's args as appendSend writes
// them, how many messages they carry, and their after and after_epoch.
//
//	(a2|a3|a4) 01 50 <group> 02 <array head> (a2 01 50 <id> 02 <bytes head> <body>)* [03 <uint>] [04 <uint>]
func scanSend(b []byte) (n int, after, afterEpoch uint64, ok bool) {
	if len(b) < 21 || b[0] < 0xa2 || b[0] > 0xa4 || b[1] != 0x01 || b[2] != 0x50 || b[19] != 0x02 {
		return 0, 0, 0, false
	}
	count, off, ok := canonHead(b, 20, 4)
	// An array over MaxArrayItems is the reflective decoder's to reject.
	if !ok || count > MaxArrayItems || count > uint64(len(b)-off)/minOutgoingBytes {
		return 0, 0, 0, false
	}
	for range count {
		if len(b)-off < minOutgoingBytes || b[off] != 0xa2 || b[off+1] != 0x01 || b[off+2] != 0x50 || b[off+19] != 0x02 {
			return 0, 0, 0, false
		}
		l, start, ok := canonHead(b, off+20, 2)
		if !ok || l > uint64(len(b)-start) {
			return 0, 0, 0, false
		}
		off = start + int(l)
	}
	// Keys 3 and 4, each once, in order, never zero (omitempty), as many
	// as the map's head counts beyond 1 and 2.
	for extra := int(b[0] - 0xa2); extra > 0; extra-- {
		if off >= len(b) || (b[off] != 0x03 && b[off] != 0x04) || (b[off] == 0x03 && (after != 0 || afterEpoch != 0)) || (b[off] == 0x04 && afterEpoch != 0) {
			return 0, 0, 0, false
		}
		key := b[off]
		v, next, ok := canonHead(b, off+1, 0)
		if !ok || v == 0 {
			return 0, 0, 0, false
		}
		if key == 0x03 {
			after = v
		} else {
			afterEpoch = v
		}
		off = next
	}
	return int(count), after, afterEpoch, off == len(b)
}

// decodeSent is decodeSend for a Sent.
func decodeSent(b []byte, s *Sent) bool {
	n, ok := scanSent(b)
	if !ok {
		return false
	}
	epoch, off, _ := canonHead(b, 2, 0)
	_, off, _ = canonHead(b, off+1, 4)
	acks := reuse(s.Acks, n)
	for i := range acks {
		var a Ack
		a, off, _ = readAck(b, off)
		acks[i].Seq, acks[i].Time = a.Seq, a.Time
		// cbor's decoder sets only the fields present: in an element of a
		// reused array, an absent key 3 leaves Duplicate as it was.
		if a.Duplicate {
			acks[i].Duplicate = true
		}
	}
	s.Epoch, s.Acks = epoch, acks
	return true
}

// scanSent reports whether b is exactly a Sent as appendSent writes it,
// and how many acks it carries.
//
//	a2 01 <uint> 02 <array head> ((a2|a3) 01 <uint> 02 <int> [03 f5])*
func scanSent(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != 0xa2 || b[1] != 0x01 {
		return 0, false
	}
	_, off, ok := canonHead(b, 2, 0)
	if !ok || off >= len(b) || b[off] != 0x02 {
		return 0, false
	}
	count, off, ok := canonHead(b, off+1, 4)
	if !ok || count > MaxArrayItems || count > uint64(len(b)-off)/minAckBytes {
		return 0, false
	}
	for range count {
		if _, off, ok = readAck(b, off); !ok {
			return 0, false
		}
	}
	return int(count), off == len(b)
}

// readAck reads an Ack as appendSent writes it, at b[off:].
func readAck(b []byte, off int) (a Ack, next int, ok bool) {
	if len(b)-off < minAckBytes || (b[off] != 0xa2 && b[off] != 0xa3) || b[off+1] != 0x01 {
		return Ack{}, 0, false
	}
	dup := b[off] == 0xa3
	if a.Seq, off, ok = canonHead(b, off+2, 0); !ok || off >= len(b) || b[off] != 0x02 {
		return Ack{}, 0, false
	}
	if a.Time, off, ok = canonInt(b, off+1); !ok {
		return Ack{}, 0, false
	}
	if dup {
		if len(b)-off < 2 || b[off] != 0x03 || b[off+1] != 0xf5 {
			return Ack{}, 0, false
		}
		a.Duplicate, off = true, off+2
	}
	return a, off, true
}

// reuse returns s with length n as cbor's decoder makes a slice it decodes
// an array into: the same backing array when it is large enough and n > 0,
// else a new one.
func reuse[T any](s []T, n int) []T {
	if s == nil || cap(s) < n || n == 0 {
		return make([]T, n)
	}
	return s[:n]
}

// canonHead reads the shortest head of a definite-length item of the given
// major type at b[off:]: its argument and the offset after the head.
func canonHead(b []byte, off int, major byte) (v uint64, next int, ok bool) {
	m, v, next, ok := shortHead(b, off)
	if !ok || m != major {
		return 0, 0, false
	}
	return v, next, true
}

// canonInt reads a shortest-form CBOR integer (major type 0 or 1) that fits
// an int64, as cbor's decoder decodes into one; any other is its to reject.
func canonInt(b []byte, off int) (int64, int, bool) {
	if off >= len(b) {
		return 0, 0, false
	}
	major := b[off] >> 5
	if major > 1 {
		return 0, 0, false
	}
	v, next, ok := canonHead(b, off, major)
	if !ok || v > math.MaxInt64 {
		return 0, 0, false
	}
	if major == 1 {
		return -1 - int64(v), next, true
	}
	return int64(v), next, true
}

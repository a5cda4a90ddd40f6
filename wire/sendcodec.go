package wire

import "slices"

// The send path without reflection.
//
// Every message goes through a Send request and a Sent reply. Profiled
// under `huddle bench send` (16 connections x 16 sends in flight), the
// reflective CBOR work on that path was ~12% of the daemon's CPU (decoding
// Send ~6-8%, encoding Sent ~5%) and ~11% of the load generator's (encoding
// Send ~5.6%, decoding Sent ~5.7%). So AppendFrame encodes these two bodies
// by hand (appendSend, appendSent), as encMode would, byte for byte
// (TestAppendSend, FuzzAppendSend and the Sent ones hold them to it).

// sendBody returns the fields of a send request's args, which appendSend
// encodes without reflection. A nil *Send (encoded as null) is left to
// encMode.
func sendBody(typ uint64, body any) (UUID, []Outgoing, bool) {
	if typ != uint64(OpSend) {
		return UUID{}, nil, false
	}
	switch b := body.(type) {
	case Send:
		return b.Group, b.Messages, true
	case *Send:
		if b != nil {
			return b.Group, b.Messages, true
		}
	}
	return UUID{}, nil, false
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

// appendSend appends the envelope {0: OpSend, 1: {1: group, 2: ms}} as the
// deterministic encoder writes it: both keys of every map, in key order,
// shortest heads, a nil slice or body as an empty one.
func appendSend(dst []byte, group UUID, ms []Outgoing) []byte {
	size := 32
	for i := range ms {
		size += 32 + len(ms[i].Body) // 32: more than a message's heads and ID take
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, 0xa2, 0x00)
	dst = appendHead(dst, 0, uint64(OpSend))
	dst = append(dst, 0x01, 0xa2, 0x01, 0x50)
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
		if a.Time >= 0 {
			dst = appendHead(dst, 0, uint64(a.Time))
		} else {
			dst = appendHead(dst, 1, uint64(-(a.Time + 1)))
		}
		if a.Duplicate {
			dst = append(dst, 0x03, 0xf5)
		}
	}
	return dst
}

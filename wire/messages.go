package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"
)

// MessagesDecoder decodes Messages frames as Frame.Decode into a Messages
// would, with the same checks and errors, but without an allocation per
// message: a fetching client decodes 10,000 messages from thirteen 256 KiB
// frames, and an allocation per body and name (and the garbage collector
// collecting them) was most of its CPU. Here a frame's bodies share one
// allocation, names are shared between the messages (and frames) of one
// sender, and the decoder's scratch space is reused from one frame to the
// next.
//
// A frame as huddle's own encoder writes it (appendMessages) is read by
// hand (decodeByHand), about four times faster than walking each message's
// map by reflection (BenchmarkMessagesDecoder; BENCHMARKS.md). Any other
// encoding, valid or not, goes through the reflective decoder as before;
// FuzzMessagesDecoder holds the two to the same result.
//
// A MessagesDecoder is meant for one stream; it is not safe for concurrent
// use. Its zero value is ready.
type MessagesDecoder struct {
	in    messagesIn
	names map[string]string
}

// messagesIn is Messages as it is decoded, names and bodies as their
// encodings within the frame.
type messagesIn struct {
	Messages []messageIn `cbor:"1,keyasint"`
}

type messageIn struct {
	Seq  uint64      `cbor:"1,keyasint"`
	Time int64       `cbor:"2,keyasint"`
	ID   ID          `cbor:"3,keyasint"`
	From Fingerprint `cbor:"4,keyasint"`
	Name rawItem     `cbor:"5,keyasint"`
	Body rawItem     `cbor:"6,keyasint"`
}

// rawItem is a CBOR item as it appears within the frame being decoded.
type rawItem []byte

func (r *rawItem) UnmarshalCBOR(b []byte) error {
	*r = b
	return nil
}

// maxNames bounds the names a MessagesDecoder remembers.
const maxNames = 256

// Decode decodes the Messages frame f, appending its messages to dst[:0].
// The messages' bodies share one new allocation, which they keep alive
// together; they belong to the caller. Errors are those of Frame.Decode.
func (d *MessagesDecoder) Decode(f Frame, dst []Message) ([]Message, error) {
	if ms, ok := d.decodeByHand(f.body, dst); ok {
		return ms, nil
	}
	return d.decodeGeneric(f, dst)
}

// decodeGeneric is Decode by reflection, for a frame in any encoding
// Frame.Decode accepts.
func (d *MessagesDecoder) decodeGeneric(f Frame, dst []Message) ([]Message, error) {
	dst = dst[:0]
	in := &d.in
	// The decoder fills the elements of a slice it reuses field by field:
	// clear them so that a key one message lacks does not keep the value
	// of an earlier frame's.
	clear(in.Messages[:cap(in.Messages)])
	in.Messages = in.Messages[:0]
	err := f.Decode(in)
	defer clear(in.Messages) // drop the references into the frame
	if err != nil {
		return dst, err
	}
	size := 0
	for i := range in.Messages {
		size += len(in.Messages[i].Body)
	}
	slab := make([]byte, 0, size)
	for i := range in.Messages {
		m := &in.Messages[i]
		name, err := d.name(m.Name)
		if err != nil {
			return dst[:0], err
		}
		var body []byte
		if b, ok := itemContent(m.Body, 2); ok {
			start := len(slab)
			slab = append(slab, b...)
			body = slab[start:len(slab):len(slab)]
		} else if m.Body != nil {
			if body, err = otherBody(m.Body); err != nil {
				return dst[:0], fmt.Errorf("%w: message %d: body: %v", ErrMalformed, i, err)
			}
		}
		dst = append(dst, Message{Seq: m.Seq, Time: m.Time, ID: m.ID, From: m.From, Name: name, Body: body})
	}
	return dst, nil
}

// decodeByHand decodes body, a Messages frame's body, if it is in the
// form appendMessages writes: {1: [message...]} and nothing after it, each
// message a map {1: seq, 2: ts, 3: id, 4: from, 5: name, 6: body}, with
// definite lengths and shortest-form heads. A message may leave keys out
// (other encoders omit an empty name, say) as long as those it has come in
// increasing order: the reflective decoder then leaves the missing fields
// zero and a missing body nil, as this does. It appends the messages to
// dst[:0], their bodies copied into one new allocation and their names
// interned, as decodeGeneric does. For anything else, whether the
// reflective decoder accepts it or not, it returns false and keeps no
// reference into body, so that Decode can hand the frame to decodeGeneric:
// this never rejects a frame itself. There are no field checks to call
// after it: neither Messages nor messagesIn has a check method
// (TestMessagesHaveNoCheck).
func (d *MessagesDecoder) decodeByHand(body []byte, dst []Message) ([]Message, bool) {
	if len(body) < 3 || body[0] != 0xa1 || body[1] != 0x01 {
		return dst, false
	}
	major, n, i, ok := shortHead(body, 2)
	// Every message takes at least a byte, so a count beyond the bytes
	// left is malformed and must not size an allocation.
	if !ok || major != 4 || n > MaxArrayItems || n > uint64(len(body)-i) {
		return dst, false
	}
	dst = slices.Grow(dst[:0], int(n))[:n]
	size := 0
	for k := range dst {
		m := &dst[k]
		*m = Message{}
		if i, ok = d.messageByHand(body, i, m); !ok {
			break
		}
		size += len(m.Body) // m.Body aliases the frame until it is copied below
	}
	if !ok || i != len(body) {
		clear(dst)
		return dst[:0], false
	}
	slab := make([]byte, size)
	off := 0
	for k := range dst {
		if b := dst[k].Body; b != nil {
			end := off + copy(slab[off:], b)
			dst[k].Body = slab[off:end:end]
			off = end
		}
	}
	return dst, true
}

// messageByHand decodes the message at b[i:] into m, which is zero, if
// it is in decodeByHand's form, and returns the index after it. Its Body
// aliases b.
func (d *MessagesDecoder) messageByHand(b []byte, i int, m *Message) (next int, ok bool) {
	if i >= len(b) || b[i] < 0xa0 || b[i] > 0xa6 { // a map of at most 6 pairs
		return 0, false
	}
	pairs := int(b[i] - 0xa0)
	i++
	// Keys 1 to 6 are one byte each. Each is taken if it comes next, in
	// increasing order: a key out of order, repeated or unknown is left
	// over, and the frame is left to decodeGeneric.
	key := func(k byte) bool {
		if pairs > 0 && i < len(b) && b[i] == k {
			pairs--
			i++
			return true
		}
		return false
	}
	var major byte
	if key(1) {
		if major, m.Seq, i, ok = shortHead(b, i); !ok || major != 0 {
			return 0, false
		}
	}
	if key(2) {
		var v uint64
		if major, v, i, ok = shortHead(b, i); !ok || major > 1 || v > math.MaxInt64 {
			return 0, false
		}
		m.Time = int64(v)
		if major == 1 {
			m.Time = -1 - int64(v)
		}
	}
	if key(3) { // exactly what ID.UnmarshalCBOR accepts
		if len(b)-i < 1+len(m.ID) || b[i] != 0x40|byte(len(m.ID)) {
			return 0, false
		}
		m.ID = ID(b[i+1:])
		i += 1 + len(m.ID)
	}
	if key(4) { // exactly what Fingerprint.UnmarshalCBOR accepts
		if len(b)-i < 2+len(m.From) || b[i] != 0x58 || b[i+1] != byte(len(m.From)) {
			return 0, false
		}
		m.From = Fingerprint(b[i+2:])
		i += 2 + len(m.From)
	}
	if key(5) {
		var name []byte
		if name, i, ok = shortString(b, i, 3); !ok {
			return 0, false
		}
		if m.Name, ok = d.intern(name); !ok { // invalid UTF-8
			return 0, false
		}
	}
	if key(6) {
		if m.Body, i, ok = shortString(b, i, 2); !ok {
			return 0, false
		}
	}
	return i, pairs == 0
}

// shortHead reads the head at b[i:] if it is definite and in shortest form:
// its major type, its argument and the index after it.
func shortHead(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	major, ai := b[i]>>5, b[i]&0x1f
	rest := b[i+1:]
	switch {
	case ai < 24:
		return major, uint64(ai), i + 1, true
	case ai == 24 && len(rest) >= 1 && rest[0] >= 24:
		return major, uint64(rest[0]), i + 2, true
	case ai == 25 && len(rest) >= 2:
		arg, next = uint64(binary.BigEndian.Uint16(rest)), i+3
		ok = arg > 0xff
	case ai == 26 && len(rest) >= 4:
		arg, next = uint64(binary.BigEndian.Uint32(rest)), i+5
		ok = arg > 0xffff
	case ai == 27 && len(rest) >= 8:
		arg, next = binary.BigEndian.Uint64(rest), i+9
		ok = arg > 0xffffffff
	}
	if !ok {
		return 0, 0, 0, false
	}
	return major, arg, next, true
}

// shortString returns the content of the definite-length byte string
// (major 2) or text string (major 3) at b[i:] whose head is in shortest
// form, and the index after it. The content is never nil.
func shortString(b []byte, i int, major byte) (content []byte, next int, ok bool) {
	mj, n, next, ok := shortHead(b, i)
	if !ok || mj != major || n > uint64(len(b)-next) {
		return nil, 0, false
	}
	end := next + int(n)
	return b[next:end:end], end, true
}

// otherBody decodes a body that is not a byte string as the field of a
// Messages would be decoded: null and undefined are an absent body, and
// anything else is of the wrong type (an array of small integers too,
// which the decoder would read as bytes: checkByteStrings).
func otherBody(item rawItem) ([]byte, error) {
	if len(item) == 1 && (item[0] == cborNull || item[0] == cborUndefined) {
		return nil, nil
	}
	return nil, fmt.Errorf("%s, want a byte string", majorName(item[0]>>5))
}

// name returns the text of a name's encoding, shared with earlier messages
// of the same name.
func (d *MessagesDecoder) name(item rawItem) (string, error) {
	if item == nil {
		return "", nil
	}
	b, ok := itemContent(item, 3)
	if !ok {
		var s string
		if err := decMode.Unmarshal(item, &s); err != nil {
			return "", fmt.Errorf("%w: name: %v", ErrMalformed, err)
		}
		return s, nil
	}
	s, ok := d.intern(b)
	if !ok {
		return "", fmt.Errorf("%w: name: invalid UTF-8 string", ErrMalformed)
	}
	return s, nil
}

// intern returns b as a string shared with earlier messages of the same
// name, or false if b is not valid UTF-8.
func (d *MessagesDecoder) intern(b []byte) (string, bool) {
	if s, ok := d.names[string(b)]; ok {
		return s, true
	}
	if !utf8.Valid(b) {
		return "", false
	}
	if d.names == nil || len(d.names) >= maxNames {
		d.names = make(map[string]string)
	}
	s := string(b)
	d.names[s] = s
	return s, true
}

// itemContent returns the content of a well-formed, definite-length CBOR
// byte string (major 2) or text string (major 3), or false if item is not
// one.
func itemContent(item []byte, major byte) ([]byte, bool) {
	if len(item) == 0 || item[0]>>5 != major {
		return nil, false
	}
	hdr := 0
	switch ai := item[0] & 0x1f; {
	case ai < 24:
		hdr = 1
	case ai == 24:
		hdr = 2
	case ai == 25:
		hdr = 3
	case ai == 26:
		hdr = 5
	case ai == 27:
		hdr = 9
	}
	if hdr == 0 || len(item) < hdr {
		return nil, false
	}
	return item[hdr:], true
}

// appendMessages appends the envelope {0: KindMessages, 1: ms} as the
// deterministic encoder writes it. Fetch sends 10,000 messages as forty
// 256 KiB frames and watch sends one frame per wake-up per watcher;
// encoding them by reflection was most of the daemon's CPU per fetch.
// TestAppendMessages and FuzzAppendMessages hold it to encMode byte for
// byte.
func appendMessages(dst []byte, ms []Message) []byte {
	size := 16
	for i := range ms {
		size += 96 + len(ms[i].Name) + len(ms[i].Body) // 96: more than a message's heads and fixed fields take
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, 0xa2, 0x00)
	dst = appendHead(dst, 0, uint64(KindMessages))
	dst = append(dst, 0x01, 0xa1, 0x01)
	dst = appendHead(dst, 4, uint64(len(ms)))
	for i := range ms {
		m := &ms[i]
		dst = append(dst, 0xa6, 0x01)
		dst = appendHead(dst, 0, m.Seq)
		dst = append(dst, 0x02)
		dst = appendInt(dst, m.Time)
		dst = append(dst, 0x03, 0x50)
		dst = append(dst, m.ID[:]...)
		dst = append(dst, 0x04, 0x58, 0x20)
		dst = append(dst, m.From[:]...)
		dst = append(dst, 0x05)
		dst = appendHead(dst, 3, uint64(len(m.Name)))
		dst = append(dst, m.Name...)
		dst = append(dst, 0x06)
		dst = appendHead(dst, 2, uint64(len(m.Body)))
		dst = append(dst, m.Body...)
	}
	return dst
}

// appendInt appends v as the shortest CBOR integer: major type 0, or 1 for a
// negative v (encoded as -1 - v).
func appendInt(dst []byte, v int64) []byte {
	if v >= 0 {
		return appendHead(dst, 0, uint64(v))
	}
	return appendHead(dst, 1, uint64(-(v + 1)))
}

// appendHead appends the shortest head of a CBOR item of the given major
// type and argument.
func appendHead(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= 0xff:
		return append(dst, m|24, byte(v))
	case v <= 0xffff:
		return append(dst, m|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(dst, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(dst, m|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

package wire

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// MessagesDecoder decodes Messages frames as Frame.Decode into a Messages
// would, with the same checks and errors, but without an allocation per
// message: a fetching client decodes 10,000 messages from forty 256 KiB
// frames, and decoding each body and name into an allocation of its own
// (then collecting them) was a fifth of its CPU, and GC another fifth.
// Here a frame's bodies share one allocation, names are shared between the
// messages (and frames) of one sender, and the decoder's scratch space is
// reused from one frame to the next.
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

// otherBody decodes a body that is not a byte string as the field of a
// Messages would be decoded.
func otherBody(item rawItem) ([]byte, error) {
	var b []byte
	err := decMode.Unmarshal(item, &b)
	return b, err
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
	if s, ok := d.names[string(b)]; ok {
		return s, nil
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: name: invalid UTF-8 string", ErrMalformed)
	}
	if d.names == nil || len(d.names) >= maxNames {
		d.names = make(map[string]string)
	}
	s := string(b)
	d.names[s] = s
	return s, nil
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
// encoding them by reflection was most of the daemon's CPU per fetch
// (1.5 ms per frame of 1,000 messages). TestAppendMessages and
// FuzzAppendMessages hold it to encMode byte for byte.
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
		if m.Time >= 0 {
			dst = appendHead(dst, 0, uint64(m.Time))
		} else {
			dst = appendHead(dst, 1, uint64(-(m.Time + 1)))
		}
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

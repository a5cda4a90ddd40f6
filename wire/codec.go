package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// ALPN is the TLS application protocol every huddle peer offers and requires.
// A future incompatible protocol gets a new ALPN; within huddle/1, peers
// ignore map keys they do not know and answer unknown operations with
// CodeUnsupported.
const ALPN = "huddle/1"

// DefaultRegistryPort is the UDP port a registry listens on unless told
// otherwise, and the port clients assume when an address has none.
const DefaultRegistryPort = 7373

// Limits of the codec. They bound what a peer can make us allocate before any
// operation-level check runs.
const (
	// MaxFrameSize is the largest CBOR item a frame may carry, in bytes.
	MaxFrameSize = 1 << 20
	// MaxNesting is the deepest nesting of arrays and maps accepted.
	MaxNesting = 8
	// MaxArrayItems is the most elements an array may declare.
	MaxArrayItems = 8192
	// MaxMapPairs is the most pairs a map may declare.
	MaxMapPairs = 32
	// headerSize is the length prefix of every frame.
	headerSize = 4
)

// Codec errors.
var (
	// ErrFrameTooLarge: a frame's declared length exceeds the limit.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrEmptyFrame: a frame declared length zero.
	ErrEmptyFrame = errors.New("empty frame")
	// ErrMalformed: a frame is not one well-formed, strictly encoded CBOR
	// item of the expected shape. The wrapped error says what was wrong.
	ErrMalformed = errors.New("malformed frame")
)

// The modes are built once and shared; cbor's EncMode and DecMode are
// immutable and safe for concurrent use.
var (
	encMode = mustEncMode()
	decMode = mustDecMode(MaxNesting)
	// bodyDecMode decodes a body cut out of its envelope (see SplitFrame):
	// the envelope is one level of the frame's nesting.
	bodyDecMode = mustDecMode(MaxNesting - 1)
)

// mustEncMode builds the deterministic encoder. It fails only on invalid
// options, a programming error every test run would catch.
func mustEncMode() cbor.UserBufferEncMode {
	eo := cbor.CoreDetEncOptions()
	eo.IndefLength = cbor.IndefLengthForbidden
	// A nil slice is an empty array or byte string, never null: the format
	// says [..] or bytes, and a peer may reject null there.
	eo.NilContainers = cbor.NilContainerAsEmpty
	em, err := eo.UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	return em
}

// mustDecMode builds the strict decoder every peer byte goes through, for
// items nested at most nesting levels deep.
func mustDecMode(nesting int) cbor.DecMode {
	dm, err := cbor.DecOptions{
		// Only false, true, null and undefined: the decoder took any other
		// simple value (simple(16), f0; simple(255), f8 ff) for an
		// unsigned integer of its number, so a send with after: simple(16)
		// was read as after 16 (PROTOCOL.md §4: a value of the wrong type).
		SimpleValues:      unassignedSimpleValues,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   nesting,
		MaxArrayElements:  MaxArrayItems,
		MaxMapPairs:       MaxMapPairs,
		UTF8:              cbor.UTF8RejectInvalid,
		IntDec:            cbor.IntDecConvertNone,
		ExtraReturnErrors: cbor.ExtraDecErrorNone,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

// unassignedSimpleValues rejects every simple value RFC 8949 leaves
// unassigned (0..19, 32..255; 24..31 are not well-formed anyway), wherever
// it stands: huddle/1 gives none a meaning (PROTOCOL.md §4).
var unassignedSimpleValues = func() *cbor.SimpleValueRegistry {
	var rejects []func(*cbor.SimpleValueRegistry) error
	for sv := range 256 {
		if sv < 20 || sv >= 32 {
			rejects = append(rejects, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
		}
	}
	r, err := cbor.NewSimpleValueRegistryFromDefaults(rejects...)
	if err != nil {
		panic(err)
	}
	return r
}()

// envelope is the outer map of every frame: {0: op or kind, 1: args or body}.
type envelope struct {
	Type uint64 `cbor:"0,keyasint"`
	Body any    `cbor:"1,keyasint,omitempty"`
}

// envelopeIn is an envelope as received: Type is nil when key 0 is absent.
type envelopeIn struct {
	Type *uint64 `cbor:"0,keyasint"`
	Body rawBody `cbor:"1,keyasint,omitempty"`
}

// rawBody is an envelope's body as it was received. Unlike cbor.RawMessage
// it aliases the frame instead of copying it: a fetch reply's frames are
// 256 KiB, and the copy, and the garbage it made, showed in a fetching
// client's CPU.
type rawBody []byte

// UnmarshalCBOR keeps b, the body's encoding within the frame being decoded.
func (r *rawBody) UnmarshalCBOR(b []byte) error {
	*r = b
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// AppendFrame appends the frame {0: typ, 1: body} (length prefix included)
// to dst. It returns ErrFrameTooLarge if the encoding exceeds MaxFrameSize.
func AppendFrame(dst []byte, typ uint64, body any) ([]byte, error) {
	start := len(dst)
	if ms, ok := messagesBody(typ, body); ok {
		return finishFrame(appendMessages(append(dst, 0, 0, 0, 0), ms), start)
	}
	if s, ok := sendBody(typ, body); ok {
		return finishFrame(appendSend(append(dst, 0, 0, 0, 0), s), start)
	}
	if epoch, acks, ok := sentBody(typ, body); ok {
		return finishFrame(appendSent(append(dst, 0, 0, 0, 0), epoch, acks), start)
	}
	// Encoding straight into dst's spare capacity spares a buffer the size
	// of the frame and a copy of it (Marshal returns a fresh slice).
	buf := bytes.NewBuffer(append(dst, 0, 0, 0, 0))
	if err := encMode.MarshalToBuffer(envelope{Type: typ, Body: body}, buf); err != nil {
		return dst[:start], fmt.Errorf("encode frame: %w", err)
	}
	return finishFrame(buf.Bytes(), start)
}

// messagesBody returns the messages of a Messages frame's body, which
// appendMessages encodes without reflection.
func messagesBody(typ uint64, body any) ([]Message, bool) {
	if typ != uint64(KindMessages) {
		return nil, false
	}
	switch b := body.(type) {
	case Messages:
		return b.Messages, true
	case *Messages:
		if b != nil {
			return b.Messages, true
		}
	}
	return nil, false
}

// finishFrame writes the length prefix of the frame encoded at out[start:],
// or returns out[:start] and ErrFrameTooLarge if it is over the limit.
func finishFrame(out []byte, start int) ([]byte, error) {
	n := len(out) - start - headerSize
	if n > MaxFrameSize {
		return out[:start], fmt.Errorf("encode frame of %d bytes: %w", n, ErrFrameTooLarge)
	}
	binary.BigEndian.PutUint32(out[start:], uint32(n))
	return out, nil
}

// writeFrame encodes one frame and writes it with a single Write call, so a
// frame is never interleaved with another writer's bytes.
func writeFrame(w io.Writer, typ uint64, body any) error {
	bp := bufPool.Get().(*[]byte)
	buf, err := AppendFrame((*bp)[:0], typ, body)
	if err == nil {
		_, err = w.Write(buf)
	}
	if cap(buf) <= 64<<10 {
		*bp = buf[:0]
		bufPool.Put(bp)
	}
	return err
}

// WriteRequest writes the request frame for op with its args.
func WriteRequest(w io.Writer, op Op, args any) error {
	return writeFrame(w, uint64(op), args)
}

// WriteResponse writes one response frame of the given kind.
//
// WriteResponse, ReadRequest and ReadResponse are the plain forms of a
// peer's framing over any io.Reader or io.Writer, for tools that speak
// huddle/1, and what huddle's tests read and write raw frames with. The
// daemon and the client have faster paths of their own (a request reader
// that takes its memory from budgets, pooled buffers, AppendFrame) that
// make the same checks.
func WriteResponse(w io.Writer, kind Kind, body any) error {
	return writeFrame(w, uint64(kind), body)
}

// WriteError writes err as an Error frame, mapping it to its code with
// ToError. It is the last frame a server writes on a stream.
func WriteError(w io.Writer, err error) error {
	return writeFrame(w, uint64(KindError), ToError(err))
}

// ReadFrame reads one frame from r and returns its CBOR item, using buf if it
// is large enough. max bounds the declared length (0 means MaxFrameSize); the
// length is checked before any allocation. It returns io.EOF if r ends before
// the first byte of a frame; an error matching both io.ErrUnexpectedEOF and
// ErrMalformed if it ends inside one (a peer that closes mid-frame sent a bad
// frame, so ToError answers bad_request); ErrEmptyFrame or ErrFrameTooLarge
// for a bad length.
func ReadFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	if max <= 0 || max > MaxFrameSize {
		max = MaxFrameSize
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = truncated(err)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > uint32(max):
		return nil, fmt.Errorf("frame declares %d bytes, limit %d: %w", n, max, ErrFrameTooLarge)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = truncated(io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return buf, nil
}

// truncated is the error of a frame cut short by the end of its stream.
func truncated(eof error) error { return fmt.Errorf("%w: truncated frame: %w", ErrMalformed, eof) }

// Raw is the undecoded args or body of a frame.
type Raw []byte

// Decode strictly decodes the raw args or body into v (a pointer to one of
// this package's frame types) and checks the fields' protocol limits. An
// absent body decodes as an empty map, and is checked like one. A body that is not valid CBOR of the
// right shape gives an error wrapping ErrMalformed; a field over its limit,
// ErrTooLarge; any other invalid field, ErrBadRequest.
func (r Raw) Decode(v any) error { return decodeBody(decMode, r, v) }

// decodeBody is Raw.Decode with the decoding mode to use.
func decodeBody(dm cbor.DecMode, body []byte, v any) error {
	if len(body) > 0 {
		if err := dm.Unmarshal(body, v); err != nil {
			return malformed(err)
		}
		if err := checkStrict(body); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err := checkByteStrings(body, v); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return checkFields(v)
}

// checkFields checks a decoded value's protocol limits, if its type has
// any.
func checkFields(v any) error {
	if c, ok := v.(interface{ check() error }); ok {
		if err := c.check(); err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	return nil
}

// DecodeFrame splits a frame's CBOR item into its type (op or kind) and its
// raw args or body. The whole item is checked for well-formedness, strict
// encoding and trailing bytes first. An item without key 0 (no op or kind)
// is malformed; args or a body of null or undefined are absent, as any
// field's are (PROTOCOL.md §4). Errors wrap ErrMalformed.
func DecodeFrame(item []byte) (uint64, Raw, error) {
	var env envelopeIn
	if err := decMode.Unmarshal(item, &env); err != nil {
		return 0, nil, malformed(err)
	}
	if env.Type == nil {
		return 0, nil, fmt.Errorf("%w: no key 0 (the op or kind)", ErrMalformed)
	}
	if len(env.Body) == 1 && (env.Body[0] == cborNull || env.Body[0] == cborUndefined) {
		env.Body = nil
	}
	if err := checkStrict(item); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(env.Body) > 0 && env.Body[0]>>5 != 5 { // major type 5: map
		return 0, nil, fmt.Errorf("%w: key 1 (args or body) is not a map", ErrMalformed)
	}
	return *env.Type, Raw(env.Body), nil
}

// The simple values null and undefined, which a decoder takes for an
// absent field.
const (
	cborNull      = 0xf6
	cborUndefined = 0xf7
)

// ReadRequest reads and splits one request frame (see WriteResponse for
// who uses it). An op number too large for
// an Op is returned as 0, which no operation uses, so it is answered
// CodeUnsupported like any other unknown op. Errors are those of ReadFrame
// and DecodeFrame.
func ReadRequest(r io.Reader, max int) (Op, Raw, error) {
	item, err := ReadFrame(r, nil, max)
	if err != nil {
		return 0, nil, err
	}
	typ, raw, err := DecodeFrame(item)
	if typ > math.MaxUint16 {
		typ = 0 // not Op(typ): truncation could turn an unknown op into a known one
	}
	return Op(typ), raw, err
}

// ReadResponse reads and splits one response frame (see WriteResponse for
// who uses it), reusing buf when it is
// large enough (the returned Raw aliases buf: decode it before the next
// read). A kind number too large for a Kind is returned as 0, an unknown
// kind. An Error frame is returned as its *Error (which matches the
// code's sentinel with errors.Is), with kind KindError. Other errors are
// those of ReadFrame and DecodeFrame.
func ReadResponse(r io.Reader, buf []byte) (Kind, Raw, error) {
	item, err := ReadFrame(r, buf, 0)
	if err != nil {
		return 0, nil, err
	}
	typ, raw, err := DecodeFrame(item)
	if err != nil {
		return 0, nil, err
	}
	if typ > math.MaxUint16 {
		typ = 0 // an unknown kind, as for ops in ReadRequest
	}
	if Kind(typ) == KindError {
		var e Error
		if err := raw.Decode(&e); err != nil {
			return 0, nil, err
		}
		return KindError, raw, &e
	}
	return Kind(typ), raw, nil
}

// Frame is a frame's CBOR item split into its type (an op or a kind) and
// its args or body, which Decode decodes.
//
// A request or reply used to be decoded twice: DecodeFrame checked the whole
// item and cut the body out, then Raw.Decode checked and decoded the body
// again. SplitFrame does that only for an item it cannot split cheaply; for
// the envelope as every huddle peer writes it ({0: type, 1: body}, key 0
// first) it reads the type from the first bytes and leaves every check of
// the body to Decode (or Check), which then reads it once. Either way a
// frame is accepted or rejected exactly as DecodeFrame and Raw.Decode would
// (FuzzSplitFrame holds the two paths to that).
type Frame struct {
	Type uint64 // the op or kind
	body []byte // the args or body within the frame, nil if absent
	// unchecked says body was cut out without being checked: Decode and
	// Check check it as a body nested in its envelope.
	unchecked bool
}

// SplitFrame splits a frame's CBOR item into its type and its args or body.
// Errors wrap ErrMalformed; an item SplitFrame accepts may still be
// malformed in its body, which Decode and Check report.
func SplitFrame(item []byte) (Frame, error) {
	if typ, body, ok := splitEnvelope(item); ok {
		return Frame{Type: typ, body: body, unchecked: body != nil}, nil
	}
	typ, raw, err := DecodeFrame(item)
	if err != nil {
		return Frame{}, err
	}
	return Frame{Type: typ, body: raw}, nil
}

// splitEnvelope splits item if it is an envelope as deterministic encoders
// write it: a map of the one pair {0: type}, or of the two pairs {0: type,
// 1: body} in that order, with one-byte keys, an unsigned type and a body
// that starts as a map. It checks nothing past the body's first byte. Any
// other item, well-formed or not, is left to DecodeFrame (ok false).
func splitEnvelope(item []byte) (typ uint64, body []byte, ok bool) {
	if len(item) < 3 || (item[0] != 0xa1 && item[0] != 0xa2) || item[1] != 0x00 {
		return 0, nil, false
	}
	typ, n, ok := uintHead(item[2:])
	if !ok {
		return 0, nil, false
	}
	rest := item[2+n:]
	if item[0] == 0xa1 {
		return typ, nil, len(rest) == 0
	}
	if len(rest) < 2 || rest[0] != 0x01 || rest[1]>>5 != 5 { // key 1, then major type 5: a map
		return 0, nil, false
	}
	return typ, rest[1:], true
}

// uintHead reads the head of a CBOR unsigned integer (major type 0) at the
// start of b: its value and length in bytes.
func uintHead(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 || b[0]>>5 != 0 {
		return 0, 0, false
	}
	switch ai := b[0] & 0x1f; {
	case ai < 24:
		return uint64(ai), 1, true
	case ai == 24 && len(b) >= 2:
		return uint64(b[1]), 2, true
	case ai == 25 && len(b) >= 3:
		return uint64(binary.BigEndian.Uint16(b[1:])), 3, true
	case ai == 26 && len(b) >= 5:
		return uint64(binary.BigEndian.Uint32(b[1:])), 5, true
	case ai == 27 && len(b) >= 9:
		return binary.BigEndian.Uint64(b[1:]), 9, true
	}
	return 0, 0, false
}

// Decode decodes the frame's args or body into v and checks its fields, as
// Raw.Decode does, with the same errors; for a frame SplitFrame did not
// check, the checks of DecodeFrame come first (errors wrapping
// ErrMalformed).
//
// A Send or a Sent encoded as huddle's encoder writes it is read by hand,
// not by reflection (see decodeCanonical), to the same value. The bodies of
// a Send so read are not copied: a decoded Send's bodies may alias the
// frame's item, so the caller must keep the item alive and unmodified for
// as long as it uses them (the daemon's send handler copies them into its
// log before it returns).
func (f Frame) Decode(v any) error {
	if f.unchecked {
		if decodeCanonical(f.body, v) {
			return checkFields(v)
		}
		return decodeBody(bodyDecMode, f.body, v)
	}
	return Raw(f.body).Decode(v)
}

// Check checks what DecodeFrame would have checked of a frame whose body
// will not be decoded (an op a server does not serve, a kind a client does
// not know). Errors wrap ErrMalformed.
func (f Frame) Check() error {
	if f.unchecked {
		if err := bodyDecMode.Wellformed(f.body); err != nil {
			return malformed(err)
		}
		if err := checkStrict(f.body); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return nil
}

// SplitRequest is ReadRequest's second half, for a request frame's item a
// caller has read: its op (0 for one too large for an Op) and its args, to
// decode with Frame.Decode. Errors are those of SplitFrame.
func SplitRequest(item []byte) (Op, Frame, error) {
	f, err := SplitFrame(item)
	if err != nil {
		return 0, Frame{}, err
	}
	if f.Type > math.MaxUint16 {
		return 0, f, f.Check() // an unknown op, as in ReadRequest
	}
	return Op(f.Type), f, nil
}

// SplitResponse is ReadResponse's second half, for a response frame's item
// a caller has read (with ReadFrame): its kind (0 for one too large for a
// Kind) and its body, to decode with Frame.Decode. An Error frame is
// returned as its *Error, with kind KindError. Other errors are those of
// SplitFrame and Frame.Decode.
func SplitResponse(item []byte) (Kind, Frame, error) {
	f, err := SplitFrame(item)
	if err != nil {
		return 0, Frame{}, err
	}
	if f.Type > math.MaxUint16 {
		return 0, f, f.Check() // an unknown kind, as in ReadResponse
	}
	if Kind(f.Type) == KindError {
		var e Error
		if err := f.Decode(&e); err != nil {
			return 0, Frame{}, err
		}
		return KindError, f, &e
	}
	return Kind(f.Type), f, nil
}

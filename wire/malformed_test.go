package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// malformedCases says, for each file of testdata/malformed, the error its
// frame must give and the code ToError must put on the wire. Files named
// resp-* are response frames (read as a client reads them, on a stream of
// op); the others are requests (read as a server reads them).
var malformedCases = map[string]struct {
	want error
	code Code
	op   Op // for responses: the operation of the stream
}{
	"duplicate-map-key":                     {want: ErrMalformed, code: CodeBadRequest},
	"duplicate-envelope-key":                {want: ErrMalformed, code: CodeBadRequest},
	"indefinite-length-map":                 {want: ErrMalformed, code: CodeBadRequest},
	"indefinite-length-array":               {want: ErrMalformed, code: CodeBadRequest},
	"indefinite-length-string":              {want: ErrMalformed, code: CodeBadRequest},
	"tag":                                   {want: ErrMalformed, code: CodeBadRequest},
	"invalid-utf8-name":                     {want: ErrMalformed, code: CodeBadRequest},
	"nesting-too-deep":                      {want: ErrMalformed, code: CodeBadRequest},
	"array-declares-too-many":               {want: ErrMalformed, code: CodeBadRequest},
	"array-declares-more-than-present":      {want: ErrMalformed, code: CodeBadRequest},
	"map-too-many-pairs":                    {want: ErrMalformed, code: CodeBadRequest},
	"trailing-bytes":                        {want: ErrMalformed, code: CodeBadRequest},
	"frame-too-large":                       {want: ErrFrameTooLarge, code: CodeTooLarge},
	"zero-length":                           {want: ErrEmptyFrame, code: CodeBadRequest},
	"truncated-body":                        {want: io.ErrUnexpectedEOF, code: CodeBadRequest},
	"truncated-header":                      {want: io.ErrUnexpectedEOF, code: CodeBadRequest},
	"args-not-map":                          {want: ErrMalformed, code: CodeBadRequest},
	"no-op":                                 {want: ErrMalformed, code: CodeBadRequest},
	"args-without-op":                       {want: ErrMalformed, code: CodeBadRequest},
	"op-null":                               {want: ErrMalformed, code: CodeBadRequest},
	"map-key-bytes":                         {want: ErrMalformed, code: CodeBadRequest},
	"frame-not-map":                         {want: ErrMalformed, code: CodeBadRequest},
	"op-as-text":                            {want: ErrMalformed, code: CodeBadRequest},
	"text-for-uint":                         {want: ErrMalformed, code: CodeBadRequest},
	"negative-for-uint":                     {want: ErrMalformed, code: CodeBadRequest},
	"int-overflows-int64":                   {want: ErrMalformed, code: CodeBadRequest},
	"uint-overflows-port":                   {want: ErrMalformed, code: CodeBadRequest},
	"message-id-15-bytes":                   {want: ErrMalformed, code: CodeBadRequest},
	"message-id-17-bytes":                   {want: ErrMalformed, code: CodeBadRequest},
	"message-id-as-array":                   {want: ErrMalformed, code: CodeBadRequest},
	"group-uuid-15-bytes":                   {want: ErrMalformed, code: CodeBadRequest},
	"group-uuid-as-text":                    {want: ErrMalformed, code: CodeBadRequest},
	"since-and-after":                       {want: ErrBadRequest, code: CodeBadRequest},
	"watch-since-and-after":                 {want: ErrBadRequest, code: CodeBadRequest},
	"send-zero-messages":                    {want: ErrBadRequest, code: CodeBadRequest},
	"send-without-args":                     {want: ErrBadRequest, code: CodeBadRequest},
	"send-1025-messages":                    {want: ErrTooLarge, code: CodeTooLarge},
	"zero-message-id":                       {want: ErrBadRequest, code: CodeBadRequest},
	"name-65-bytes":                         {want: ErrTooLarge, code: CodeTooLarge},
	"name-control-character":                {want: ErrBadRequest, code: CodeBadRequest},
	"name-bidi-override":                    {want: ErrBadRequest, code: CodeBadRequest},
	"send-duplicate-ids":                    {want: ErrBadRequest, code: CodeBadRequest},
	"name-empty":                            {want: ErrBadRequest, code: CodeBadRequest},
	"secret-257-bytes":                      {want: ErrTooLarge, code: CodeTooLarge},
	"register-17-addrs":                     {want: ErrTooLarge, code: CodeTooLarge},
	"register-without-address":              {want: ErrBadRequest, code: CodeBadRequest},
	"register-empty-address":                {want: ErrBadRequest, code: CodeBadRequest},
	"register-65-byte-address":              {want: ErrTooLarge, code: CodeTooLarge},
	"info-without-group":                    {want: ErrBadRequest, code: CodeBadRequest},
	"members-zero-group":                    {want: ErrBadRequest, code: CodeBadRequest},
	"leave-without-group":                   {want: ErrBadRequest, code: CodeBadRequest},
	"join-without-group":                    {want: ErrBadRequest, code: CodeBadRequest},
	"send-without-group":                    {want: ErrBadRequest, code: CodeBadRequest},
	"fetch-without-group":                   {want: ErrBadRequest, code: CodeBadRequest},
	"watch-without-group":                   {want: ErrBadRequest, code: CodeBadRequest},
	"renew-without-epoch":                   {want: ErrBadRequest, code: CodeBadRequest},
	"renew-without-group":                   {want: ErrBadRequest, code: CodeBadRequest},
	"deregister-without-group":              {want: ErrBadRequest, code: CodeBadRequest},
	"duplicate-key-under-unknown-key":       {want: ErrMalformed, code: CodeBadRequest},
	"duplicate-key-in-unknown-envelope-key": {want: ErrMalformed, code: CodeBadRequest},
	"invalid-utf8-under-unknown-key":        {want: ErrMalformed, code: CodeBadRequest},
	"invalid-utf8-unknown-map-key":          {want: ErrMalformed, code: CodeBadRequest},
	"duplicate-text-key-under-unknown-key":  {want: ErrMalformed, code: CodeBadRequest},
	"duplicate-key-non-shortest":            {want: ErrMalformed, code: CodeBadRequest},
	"array-key-under-unknown-key":           {want: ErrMalformed, code: CodeBadRequest},
	"duplicate-key-in-unknown-message-key":  {want: ErrMalformed, code: CodeBadRequest},
	"indefinite-length-bytes":               {want: ErrMalformed, code: CodeBadRequest},
	"self-describe-tag":                     {want: ErrMalformed, code: CodeBadRequest},
	"tag-under-unknown-key":                 {want: ErrMalformed, code: CodeBadRequest},
	"send-tagged-message-id":                {want: ErrMalformed, code: CodeBadRequest},
	"float-for-uint":                        {want: ErrMalformed, code: CodeBadRequest},
	"simple-value-two-byte-below-32":        {want: ErrMalformed, code: CodeBadRequest},
	"simple-value-for-uint":                 {want: ErrMalformed, code: CodeBadRequest},
	"simple-value-255-for-uint":             {want: ErrMalformed, code: CodeBadRequest},
	"simple-value-under-unknown-key":        {want: ErrMalformed, code: CodeBadRequest},
	"group-uuid-as-array":                   {want: ErrMalformed, code: CodeBadRequest},
	"group-uuid-as-array-of-32":             {want: ErrMalformed, code: CodeBadRequest},
	"secret-as-array":                       {want: ErrMalformed, code: CodeBadRequest},
	"send-body-as-array":                    {want: ErrMalformed, code: CodeBadRequest},
	"list-after-as-array":                   {want: ErrMalformed, code: CodeBadRequest},
	"resp-message-body-as-array":            {want: ErrMalformed, code: CodeBadRequest, op: OpFetch},
	"map-key-over-int64":                    {want: ErrMalformed, code: CodeBadRequest},
	"map-key-under-int64":                   {want: ErrMalformed, code: CodeBadRequest},
	"reserved-additional-information":       {want: ErrMalformed, code: CodeBadRequest},
	"stray-break":                           {want: ErrMalformed, code: CodeBadRequest},
	"bytes-declare-2-63":                    {want: ErrMalformed, code: CodeBadRequest},
	"text-declares-2-32":                    {want: ErrMalformed, code: CodeBadRequest},
	"map-declares-2-64":                     {want: ErrMalformed, code: CodeBadRequest},
	"send-message-duplicate-key":            {want: ErrMalformed, code: CodeBadRequest},
	"send-message-indefinite-map":           {want: ErrMalformed, code: CodeBadRequest},
	"send-body-indefinite-bytes":            {want: ErrMalformed, code: CodeBadRequest},
	"send-nesting-under-unknown-key":        {want: ErrMalformed, code: CodeBadRequest},
	"float-map-key-under-unknown-key":       {want: ErrMalformed, code: CodeBadRequest},
	"bool-for-group":                        {want: ErrMalformed, code: CodeBadRequest},
	"resp-fingerprint-31-bytes":             {want: ErrMalformed, code: CodeBadRequest, op: OpMembers},
	"resp-error-without-code":               {want: ErrBadRequest, code: CodeBadRequest, op: OpSend},
	"resp-body-not-map":                     {want: ErrMalformed, code: CodeBadRequest, op: OpJoin},
}

// decodeRequest is what a server does with a request stream's bytes: read
// the frame, then decode the args of the op it names.
func decodeRequest(r io.Reader) (Op, any, error) {
	op, raw, err := ReadRequest(r, 0)
	if err != nil {
		return op, nil, err
	}
	v := argsFor(op)
	if v == nil {
		return op, nil, fmt.Errorf("%v: %w", op, ErrUnsupported)
	}
	return op, v, raw.Decode(v)
}

// splitRequest is what a server does (daemon/server): read the frame's
// item, split it without decoding, then decode the args of its op, by hand
// for a canonical send (decodeCanonical), strictly otherwise.
func splitRequest(r io.Reader) (Op, any, error) {
	item, err := ReadFrame(r, nil, 0)
	if err != nil {
		return 0, nil, err
	}
	op, f, err := SplitRequest(item)
	if err != nil {
		return op, nil, err
	}
	v := argsFor(op)
	if v == nil {
		return op, nil, fmt.Errorf("%v: %w", op, ErrUnsupported)
	}
	return op, v, f.Decode(v)
}

// decodeResponse is what a client does with one frame of a stream of op.
func decodeResponse(r io.Reader, op Op) (Kind, any, error) {
	kind, raw, err := ReadResponse(r, nil)
	if err != nil {
		return kind, nil, err
	}
	v := bodyFor(op, kind)
	if v == nil {
		return kind, nil, fmt.Errorf("unexpected %d frame on a %v stream: %w", kind, op, ErrMalformed)
	}
	return kind, v, raw.Decode(v)
}

func TestMalformed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "malformed", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".hex")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			tc, ok := malformedCases[name]
			if !ok {
				t.Fatalf("%s has no entry in malformedCases", path)
			}
			frame := readHex(t, path)
			var err error
			if strings.HasPrefix(name, "resp-") {
				_, _, err = decodeResponse(bytes.NewReader(frame), tc.op)
			} else {
				_, _, err = decodeRequest(bytes.NewReader(frame))
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want one matching %v", err, tc.want)
			}
			if !strings.HasPrefix(name, "resp-") {
				// The server's own path gives the same verdict.
				if _, _, err := splitRequest(bytes.NewReader(frame)); !errors.Is(err, tc.want) || ToError(err).Code != tc.code {
					t.Fatalf("split and decoded as a server does: got error %v, want one matching %v", err, tc.want)
				}
			}
			we := ToError(err)
			if we.Code != tc.code {
				t.Errorf("ToError(%v).Code = %v, want %v", err, we.Code, tc.code)
			}
			// The message travels to peers written in any language: it
			// speaks of the protocol, not of this implementation's decoder.
			for _, goText := range []string{"cbor:", "Go ", "unmarshal", "struct"} {
				if strings.Contains(we.Message, goText) {
					t.Errorf("error message %q speaks Go (%q)", we.Message, goText)
				}
			}
		})
	}
	for name := range malformedCases {
		if !seen[name] {
			t.Errorf("malformedCases[%q] has no file", name)
		}
	}
}

// headerOnly yields a frame header, then fails the test if anything reads
// past it: a peer that declared a huge frame and then stalls.
type headerOnly struct {
	t   *testing.T
	hdr []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.hdr) == 0 {
		h.t.Error("read past the header of an oversized frame")
		return 0, io.ErrNoProgress
	}
	n := copy(p, h.hdr)
	h.hdr = h.hdr[n:]
	return n, nil
}

func TestReadFrameLengthCheckedFirst(t *testing.T) {
	for _, n := range []uint32{MaxFrameSize + 1, 1 << 31, 1<<32 - 1} {
		hdr := binary.BigEndian.AppendUint32(nil, n)
		_, _, err := ReadRequest(&headerOnly{t: t, hdr: hdr}, 0)
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("length %d: got %v, want ErrFrameTooLarge", n, err)
		}
	}
	// A caller's lower limit is checked the same way.
	hdr := binary.BigEndian.AppendUint32(nil, 1025)
	if _, err := ReadFrame(&headerOnly{t: t, hdr: hdr}, nil, 1024); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("length 1025 with max 1024: got %v, want ErrFrameTooLarge", err)
	}
	// Exactly MaxFrameSize is a legal length (here cut short).
	hdr = binary.BigEndian.AppendUint32(nil, MaxFrameSize)
	if _, err := ReadFrame(bytes.NewReader(hdr), nil, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("length MaxFrameSize, no body: got %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadFrameEOF(t *testing.T) {
	// A stream that ends between frames ends cleanly.
	if _, _, err := ReadRequest(bytes.NewReader(nil), 0); err != io.EOF {
		t.Errorf("empty stream: got %v, want io.EOF", err)
	}
}

// TestHugeArrayNotAllocated decodes a frame whose array declares 2^32-1
// elements and checks the decoder allocated nowhere near that.
func TestHugeArrayNotAllocated(t *testing.T) {
	frame := readHex(t, filepath.Join("testdata", "malformed", "array-declares-too-many.hex"))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, _, err := decodeRequest(bytes.NewReader(frame)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("10 decodes allocated %d bytes", got)
	}
}

// TestMalformedCheap: no malformed request costs more to refuse than a
// small multiple of its own bytes, on either path: whatever a length or a
// count declares (up to 2^64-1) is checked against the bytes present
// before anything is allocated for it.
func TestMalformedCheap(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "malformed", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range files {
		if strings.HasPrefix(filepath.Base(path), "resp-") {
			continue
		}
		frame := readHex(t, path)
		for _, decode := range []func(io.Reader) (Op, any, error){decodeRequest, splitRequest} {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range 10 {
				decode(bytes.NewReader(frame))
			}
			runtime.ReadMemStats(&after)
			// Bounded by the frame, not by what it declares: the
			// largest file's frame is the protocol's 1 MiB limit.
			if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(10*(64<<10+4*len(frame))); got > limit {
				t.Errorf("%s: 10 decodes allocated %d bytes, more than %d", filepath.Base(path), got, limit)
			}
		}
	}
}

// TestNestingLimit checks the boundary: MaxNesting levels decode, one more
// does not.
func TestNestingLimit(t *testing.T) {
	for _, tc := range []struct {
		arrays int // nested arrays under an unknown key of info's args
		ok     bool
	}{
		{arrays: MaxNesting - 2, ok: true}, // with the envelope and the args map: MaxNesting
		{arrays: MaxNesting - 1, ok: false},
	} {
		item := []byte{0xa2, 0x00, byte(OpInfo), 0x01, 0xa2, 0x01, 0x50}
		item = append(item, tGroup[:]...)
		item = append(item, 0x07)
		for range tc.arrays {
			item = append(item, 0x81)
		}
		item = append(item, 0x00)
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(item)))
		frame = append(frame, item...)
		_, _, err := decodeRequest(bytes.NewReader(frame))
		if (err == nil) != tc.ok {
			t.Errorf("%d nested arrays: err = %v, want ok=%v", tc.arrays, err, tc.ok)
		}
	}
}

// TestLimitBoundaries checks that every limit's maximum itself is accepted.
func TestLimitBoundaries(t *testing.T) {
	msgs := make([]Outgoing, MaxBatch)
	for i := range msgs {
		msgs[i] = Outgoing{ID: NewID(), Body: []byte{byte(i)}}
	}
	addrs := make([]string, MaxAddrs)
	for i := range addrs {
		addrs[i] = strings.Repeat("a", MaxAddrBytes-5) + ":7000"
	}
	for _, tc := range []struct {
		name string
		op   Op
		args any
	}{
		{"send MaxBatch", OpSend, &Send{Group: tGroup, Messages: msgs}},
		{"name MaxNameBytes", OpJoin, &Join{Group: tGroup, Name: strings.Repeat("é", MaxNameBytes/2)}},
		{"secret MaxSecretBytes", OpJoin, &Join{Group: tGroup, Name: "a", Secret: make([]byte, MaxSecretBytes)}},
		{"MaxAddrs of MaxAddrBytes", OpRegister, &Register{Group: tGroup, Name: "a", Addrs: addrs}},
	} {
		var buf bytes.Buffer
		if err := WriteRequest(&buf, tc.op, tc.args); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, _, err := decodeRequest(&buf); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"alice", nil},
		{"Zoë 🍕", nil},
		{strings.Repeat("x", MaxNameBytes), nil},
		{"", ErrBadRequest},
		{strings.Repeat("x", MaxNameBytes+1), ErrTooLarge},
		{"tab\there", ErrBadRequest},
		{"del\x7f", ErrBadRequest},
		{"c1\u0085", ErrBadRequest},
		{"bad\xffutf8", ErrBadRequest},
		{"evil\u202egnp.exe", ErrBadRequest}, // right-to-left override
		{"al\u200bice", ErrBadRequest},       // zero-width space
		{"\ufeffbom", ErrBadRequest},
		{"iso\u2066late", ErrBadRequest},
		{"line\u2028sep", ErrBadRequest},
		{"soft\u00adhyphen", ErrBadRequest},
		{"عربي", nil},
		// Fillers, drawn as nothing or as an empty cell (Filler).
		{"\u3164", ErrBadRequest},      // Hangul filler: a name that reads as none
		{"alice\u3164", ErrBadRequest}, // "alice" to the eye
		{"\u115f\u1160", ErrBadRequest},
		{"ali\uffa0ce", ErrBadRequest}, // halfwidth Hangul filler
		{"a\u034fb", ErrBadRequest},    // combining grapheme joiner
		{"\u17b4\u17b5", ErrBadRequest},
		{"alice\u2800", ErrBadRequest},  // Braille pattern blank
		{"\U0001D159", ErrBadRequest},   // musical null notehead
		{"a\U000E0080b", ErrBadRequest}, // a code point kept as default-ignorable
		{"한국어 이름", nil},                 // Hangul syllables, no filler
		{"\u1100\u1161", nil},           // conjoining jamo, no filler
		{"⠓⠥⠙⠙⠇⠑", nil},                 // Braille with dots
		{"❤\ufe0f team", nil},           // an emoji's variation selector
		{"葛\U000E0100", nil},            // an ideographic variation selector
		{"ᠮᠣᠩᠭᠣᠯ\u180b", nil},           // a Mongolian free variation selector
		{"wide\u3000space", nil},        // a space, drawn as one
		{"Mary Ann", nil},
		{"al  ice", nil}, // a run of blanks within: told apart from "al ice" where names are (the CLI's lookalike)
		// Blanks at either end, or alone (since session 23): "alice "
		// shows as "alice", and a name of blanks as none.
		{" ", ErrBadRequest},
		{"   ", ErrBadRequest},
		{"\u00a0", ErrBadRequest}, // no-break space
		{"\u3000", ErrBadRequest}, // ideographic space
		{"\u2003\u2009", ErrBadRequest},
		{"alice ", ErrBadRequest},
		{" alice", ErrBadRequest},
		{"alice\u00a0", ErrBadRequest},
		{"\u3000alice", ErrBadRequest},
		{"alice\u205f", ErrBadRequest}, // medium mathematical space
		// A variation selector shows as nothing: after a blank it leaves
		// that blank at the end, and alone it is no name (session 23's
		// review); after a letter or an emoji it is kept.
		{"alice \ufe0f", ErrBadRequest},
		{"alice\u3000\U000E0100", ErrBadRequest},
		{"\ufe0f alice", ErrBadRequest},
		{"\ufe0f", ErrBadRequest},
		{"\u180b\ufe00", ErrBadRequest},
		{"bob \u2764\ufe0f", nil},
	} {
		if err := CheckName(tc.name); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("CheckName(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestUnknownOp checks that op numbers this version does not know, including
// ones too large for an Op, come out as unknown ops (answered unsupported)
// and never as a known op.
func TestUnknownOp(t *testing.T) {
	for _, op := range []uint64{0, 5, 15, 23, 99, 0xffff, 0x10000 + uint64(OpInfo), 1<<64 - 1} {
		frame, err := AppendFrame(nil, op, GroupRef{Group: tGroup})
		if err != nil {
			t.Fatal(err)
		}
		got, raw, err := ReadRequest(bytes.NewReader(frame), 0)
		if err != nil {
			t.Fatalf("op %d: %v", op, err)
		}
		if argsFor(got) != nil {
			t.Errorf("op %d read as known op %v", op, got)
		}
		if len(raw) == 0 {
			t.Errorf("op %d: args lost", op)
		}
		if _, _, err := decodeRequest(bytes.NewReader(frame)); ToError(err).Code != CodeUnsupported {
			t.Errorf("op %d: ToError(%v) = %v, want unsupported", op, err, ToError(err).Code)
		}
	}
	// The same for response kinds.
	frame, _ := AppendFrame(nil, 0x10000+uint64(KindError), Error{Code: CodeInternal})
	if kind, _, err := ReadResponse(bytes.NewReader(frame), nil); kind == KindError || err != nil {
		t.Errorf("kind 0x10002: got kind %v, err %v; want an unknown kind", kind, err)
	}
}

// TestUnknownKeysIgnored checks forward compatibility: keys a peer does not
// know, in the envelope and in args, are skipped.
func TestUnknownKeysIgnored(t *testing.T) {
	// {0: 16, 1: {1: group, 99: "future", -1: [1, 2]}, 2: {}}
	item := []byte{0xa3, 0x00, 0x10, 0x01, 0xa3, 0x01, 0x50}
	item = append(item, tGroup[:]...)
	item = append(item, 0x18, 99, 0x66, 'f', 'u', 't', 'u', 'r', 'e', 0x20, 0x82, 0x01, 0x02, 0x02, 0xa0)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(item)))
	frame = append(frame, item...)
	op, v, err := decodeRequest(bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *v.(*GroupRef), (GroupRef{Group: tGroup}); op != OpInfo || got != want {
		t.Errorf("got %v %+v, want info %+v", op, got, want)
	}
}

func TestAppendFrameTooLarge(t *testing.T) {
	big := &Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: make([]byte, MaxFrameSize)}}}
	dst := []byte("keep")
	got, err := AppendFrame(dst, uint64(OpSend), big)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if string(got) != "keep" {
		t.Errorf("dst changed to %q", got)
	}
	var buf bytes.Buffer
	if err := WriteRequest(&buf, OpSend, big); !errors.Is(err, ErrFrameTooLarge) || buf.Len() != 0 {
		t.Errorf("WriteRequest: %v, %d bytes written; want ErrFrameTooLarge and nothing", err, buf.Len())
	}
}

// TestDecodedBytesDoNotAlias checks that decoded byte strings are copies: a
// client reusing its read buffer must not change messages already decoded.
func TestDecodedBytesDoNotAlias(t *testing.T) {
	c := goldenCases()
	var frame []byte
	for _, gc := range c {
		if gc.name == "resp-messages" {
			frame, _ = gc.encode()
		}
	}
	buf := make([]byte, 0, 1024)
	_, raw, err := ReadResponse(bytes.NewReader(frame), buf)
	if err != nil {
		t.Fatal(err)
	}
	var m Messages
	if err := raw.Decode(&m); err != nil {
		t.Fatal(err)
	}
	clear(buf[:cap(buf)])
	if got := string(m.Messages[0].Body); got != "hi" {
		t.Errorf("body after clearing the read buffer = %q, want %q", got, "hi")
	}
	if m.Messages[1].From != tBob || m.Messages[1].Name != "bob" {
		t.Errorf("message 1 after clearing the read buffer = %+v", m.Messages[1])
	}
}

// TestConcurrentWrites exercises the shared encode buffers under the race
// detector: frames written at once from many goroutines stay intact.
func TestConcurrentWrites(t *testing.T) {
	cases := goldenCases()
	errc := make(chan error, len(cases))
	for _, c := range cases {
		go func() {
			for range 50 {
				frame, err := c.encode()
				if err != nil {
					errc <- err
					return
				}
				want, err := os.ReadFile(goldenPath(c.name))
				if err != nil {
					errc <- err
					return
				}
				if got, _ := renderFrame(frame); got != string(want) {
					errc <- fmt.Errorf("%s: concurrent encoding differs", c.name)
					return
				}
			}
			errc <- nil
		}()
	}
	for range cases {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestNullArgsAreAbsent: args (or a body) of null or undefined are an
// absent field, as §4 says of every field: {0: 4, 1: null} is a list
// request like {0: 4}.
func TestNullArgsAreAbsent(t *testing.T) {
	for _, item := range [][]byte{
		{0xa2, 0x00, 0x04, 0x01, 0xf6}, // {0: 4, 1: null}
		{0xa2, 0x00, 0x04, 0x01, 0xf7}, // {0: 4, 1: undefined}
		{0xa1, 0x00, 0x04},             // {0: 4}
	} {
		op, f, err := SplitRequest(item)
		if err != nil || op != OpList {
			t.Fatalf("SplitRequest(% x) = %v, %v; want list", item, op, err)
		}
		// Absent args decode as an empty map, and are checked like one.
		var l List
		if err := f.Decode(&l); err != nil {
			t.Errorf("% x: args decode with %v; want an empty list request", item, err)
		}
		if _, raw, err := DecodeFrame(item); err != nil || len(raw) != 0 {
			t.Errorf("DecodeFrame(% x) = %x, %v; want no args", item, raw, err)
		}
	}
}

// TestAddressIsHostPort checks that an address a registration lists (and
// a replica's) is host:port, as PROTOCOL.md §7.1 says: the registry took
// any 1..64 bytes, so a stranger could list a group under an address with
// ESC sequences, blanks or line breaks for every client to show and dial.
func TestAddressIsHostPort(t *testing.T) {
	for _, a := range []string{
		"10.0.0.1:7374", "[fd00::1]:7374", "box.local:1", "hôte:65535", strings.Repeat("h", MaxAddrBytes-6) + ":65535",
	} {
		for _, err := range registersNaming(t, a) {
			if err != nil {
				t.Errorf("%q refused: %v", a, err)
			}
		}
	}
	for _, a := range []string{
		"10.0.0.1", "10.0.0.1:", ":7374", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http", "10.0.0.1:-1",
		"\x1b[2J:1", "box\n10.0.0.9:1", "a b:1", "a\u202eb:1", "a\xff:1", "[::1:1",
	} {
		for _, err := range registersNaming(t, a) {
			if err == nil || ToError(err).Code != CodeBadRequest {
				t.Errorf("%q: %v, want bad_request", a, err)
			}
		}
	}
}

// registersNaming decodes the two registrations that name address a, as
// the group's address and as a replica's, and returns what each gave.
func registersNaming(t *testing.T, a string) []error {
	t.Helper()
	var errs []error
	for _, args := range []any{
		&Register{Group: tGroup, Name: "a", Addrs: []string{a}},
		&Register{Group: tGroup, Name: "a", Port: 1, Replicas: []Replica{{Addr: a, Fingerprint: Fingerprint{1}}}},
	} {
		var buf bytes.Buffer
		if err := WriteRequest(&buf, OpRegister, args); err != nil {
			t.Fatal(err)
		}
		_, _, err := decodeRequest(&buf)
		errs = append(errs, err)
	}
	return errs
}

package wire

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seedFrames returns every golden and malformed frame, with the op of its
// stream (for responses; requests name their own).
func seedFrames(f testing.TB) (reqs, resps []seedFrame) {
	f.Helper()
	for _, c := range goldenCases() {
		frame := readHex(f, goldenPath(c.name))
		if c.request() {
			reqs = append(reqs, seedFrame{c.op, frame})
		} else {
			resps = append(resps, seedFrame{c.op, frame})
		}
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "malformed", "*.hex"))
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".hex")
		frame := readHex(f, path)
		if strings.HasPrefix(name, "resp-") {
			resps = append(resps, seedFrame{malformedCases[name].op, frame})
		} else {
			reqs = append(reqs, seedFrame{0, frame})
		}
	}
	return reqs, resps
}

type seedFrame struct {
	op    Op
	frame []byte
}

// FuzzReadRequest feeds arbitrary stream bytes to what a server runs on a
// request: ReadRequest, then the args of the op it names. It must never
// panic, and whatever decodes must re-encode stably: encode, decode, encode
// gives the same bytes and an equal value.
func FuzzReadRequest(f *testing.F) {
	reqs, _ := seedFrames(f)
	for _, s := range reqs {
		f.Add(s.frame)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		op, v, err := decodeRequest(bytes.NewReader(data))
		if err != nil {
			// Every fault of the peer's bytes travels as the peer's fault. (A
			// stream that ends before any frame, io.EOF, gets no answer.)
			if !errors.Is(err, io.EOF) && ToError(err).Code == CodeInternal {
				t.Fatalf("decode error %v would travel as internal", err)
			}
			return
		}
		checkStable(t, v, func(v any) ([]byte, error) {
			var buf bytes.Buffer
			err := WriteRequest(&buf, op, v)
			return buf.Bytes(), err
		}, func(b []byte) (any, error) {
			op2, v2, err := decodeRequest(bytes.NewReader(b))
			if err == nil && op2 != op {
				t.Fatalf("op %v re-read as %v", op, op2)
			}
			return v2, err
		})
	})
}

// FuzzReadResponse does the same for what a client runs on each frame of a
// stream of op: ReadResponse, then the body of the kind it names.
func FuzzReadResponse(f *testing.F) {
	_, resps := seedFrames(f)
	for _, s := range resps {
		f.Add(s.frame, uint8(s.op))
	}
	f.Fuzz(func(t *testing.T, data []byte, op8 uint8) {
		op := Op(op8)
		kind, v, err := readBody(bytes.NewReader(data), op)
		if err != nil {
			return
		}
		checkStable(t, v, func(v any) ([]byte, error) {
			var buf bytes.Buffer
			err := WriteResponse(&buf, kind, v)
			return buf.Bytes(), err
		}, func(b []byte) (any, error) {
			kind2, v2, err := readBody(bytes.NewReader(b), op)
			if err == nil && kind2 != kind {
				t.Fatalf("kind %v re-read as %v", kind, kind2)
			}
			return v2, err
		})
	})
}

// readBody is decodeResponse with an Error frame counted as a decoded body.
func readBody(r *bytes.Reader, op Op) (Kind, any, error) {
	kind, v, err := decodeResponse(r, op)
	var we *Error
	if kind == KindError && errors.As(err, &we) {
		return kind, we, nil
	}
	return kind, v, err
}

// FuzzDecodeArgs skips the framing and feeds arbitrary CBOR straight to
// Raw.Decode for the args type of op, so the fuzzer spends its time inside
// the field decoders and checks.
func FuzzDecodeArgs(f *testing.F) {
	reqs, _ := seedFrames(f)
	for _, s := range reqs {
		if op, raw, err := ReadRequest(bytes.NewReader(s.frame), 0); err == nil {
			f.Add([]byte(raw), uint8(op))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, op8 uint8) {
		v := argsFor(Op(op8))
		if v == nil || Raw(raw).Decode(v) != nil {
			return
		}
		checkStable(t, v, encodeRaw, func(b []byte) (any, error) {
			v2 := argsFor(Op(op8))
			return v2, Raw(b).Decode(v2)
		})
	})
}

// FuzzDecodeBody is FuzzDecodeArgs for response bodies; kind and op pick
// the type.
func FuzzDecodeBody(f *testing.F) {
	_, resps := seedFrames(f)
	for _, s := range resps {
		if item, err := ReadFrame(bytes.NewReader(s.frame), nil, 0); err == nil {
			if kind, raw, err := DecodeFrame(item); err == nil {
				f.Add([]byte(raw), uint8(kind), uint8(s.op))
			}
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, kind8, op8 uint8) {
		v := bodyFor(Op(op8), Kind(kind8))
		if v == nil || Raw(raw).Decode(v) != nil {
			return
		}
		checkStable(t, v, encodeRaw, func(b []byte) (any, error) {
			v2 := bodyFor(Op(op8), Kind(kind8))
			return v2, Raw(b).Decode(v2)
		})
	})
}

// FuzzParseFingerprint: the text form comes from files and mDNS answers.
// Whatever parses must print back as the same letters (one spelling per key).
func FuzzParseFingerprint(f *testing.F) {
	for _, fp := range []Fingerprint{tAlice, tBob, {}} {
		f.Add(fp.String())
		f.Add(strings.ToUpper(strings.ReplaceAll(fp.String(), "-", "")))
	}
	f.Add("aaaa-bbbb")
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		norm := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
		if got := strings.ReplaceAll(fp.String(), "-", ""); got != norm {
			t.Fatalf("ParseFingerprint(%q) prints as %q", s, fp.String())
		}
		if again, err := ParseFingerprint(fp.String()); err != nil || again != fp {
			t.Fatalf("String() of %x does not parse back: %v", fp, err)
		}
	})
}

func encodeRaw(v any) ([]byte, error) { return encMode.Marshal(v) }

// checkStable checks decode-encode-decode stability of a decoded value v:
// encoding v, decoding that and encoding again yields the same bytes, and
// decoding those yields an equal value. (v itself may differ from what it
// re-decodes to in ways the encoding does not carry, such as an empty slice
// becoming nil.)
func checkStable(t *testing.T, v any, encode func(any) ([]byte, error), decode func([]byte) (any, error)) {
	t.Helper()
	enc1, err := encode(v)
	if err != nil {
		t.Fatalf("re-encoding decoded %+v: %v", v, err)
	}
	v2, err := decode(enc1)
	if err != nil {
		t.Fatalf("decoding re-encoded %x: %v", enc1, err)
	}
	enc2, err := encode(v2)
	if err != nil {
		t.Fatalf("encoding %+v: %v", v2, err)
	}
	if !bytes.Equal(enc1, enc2) {
		t.Fatalf("unstable encoding:\n%x\n%x", enc1, enc2)
	}
	v3, err := decode(enc2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v2, v3) {
		t.Fatalf("unstable value:\n%+v\n%+v", v2, v3)
	}
}

package conformance

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// docExamples reads the worked examples of PROTOCOL.md: each block after
// an `<!-- example: NAME -->` line, its length prefix and its item.
func docExamples(t testing.TB) map[string][]byte {
	t.Helper()
	doc, err := os.ReadFile("../../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- example: (\\S+) -->\n```\n#[^\n]*\n(.*?)```")
	out := make(map[string][]byte)
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		b, err := hex.DecodeString(strings.Join(strings.Fields(m[2]), ""))
		if err != nil {
			t.Fatalf("example %s: %v", m[1], err)
		}
		out[m[1]] = b
	}
	if len(out) < 10 {
		t.Fatalf("found %d examples in PROTOCOL.md, want at least 10", len(out))
	}
	return out
}

// TestDocExamples: every frame of PROTOCOL.md's examples decodes with this
// codec, and encodes back to the same bytes (the document's frames are
// deterministic, and so is this encoder).
func TestDocExamples(t *testing.T) {
	for name, b := range docExamples(t) {
		if len(b) < 4 || binary.BigEndian.Uint32(b) != uint32(len(b)-4) {
			t.Errorf("%s: length prefix %x for %d bytes", name, b[:min(4, len(b))], len(b)-4)
			continue
		}
		v, err := decodeItem(b[4:])
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := frame(encodeItem(v)); !bytes.Equal(got, b) {
			t.Errorf("%s: encodes back to\n%x\nwant\n%x", name, got, b)
		}
	}
}

// TestDecodeStrict: §4's refusals, and what it says a decoder must still
// accept.
func TestDecodeStrict(t *testing.T) {
	cases := []struct {
		name string
		hex  string
		ok   bool
	}{
		{"a map", "a20010 01a0", true},
		{"a non-shortest integer", "a1 00 1a00000010", true},
		{"keys out of order", "a2 0110 0010", true},
		{"8 levels", "a1 01 81818181 818181 00", true},
		{"9 levels", "a1 01 81818181 81818181 00", false},
		{"duplicate keys", "a2 0010 0010", false},
		{"duplicate keys inside", "a1 01 a2 0101 0102", false},
		{"an indefinite map", "bf 0010 ff", false},
		{"an indefinite byte string", "a1 01 5f 4161 ff", false},
		{"a tag", "a1 00 c1 10", false},
		{"a half float", "a1 00 f9 4c00", false},
		{"a double", "a1 00 fb 4030000000000000", false},
		{"null", "a1 00 f6", false},
		{"undefined", "a1 00 f7", false},
		{"bad UTF-8", "a1 02 62 c328", false},
		{"an array of 8193", "99 2001", false},
		{"a map of 33 pairs", "b8 21", false},
		{"a text key", "a1 61 61 00", false},
		{"a byte after", "a0 00", false},
		{"a string longer than the input", "5a ffffffff 00", false},
		{"truncated", "a2 00", false},
		{"reserved information", "1c", false},
		{"a negative below -2^63", "3b 8000000000000000", false},
		{"the least int", "3b 7fffffffffffffff", true},
	}
	for _, tc := range cases {
		b, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		_, err = decodeItem(b)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, errMalformed) {
			t.Errorf("%s (%s): %v, want accepted %v", tc.name, tc.hex, err, tc.ok)
		}
	}
}

// TestFingerprintText: §2's text form, its one spelling, and what a parser
// should accept.
func TestFingerprintText(t *testing.T) {
	const doc = "fvyr-mqvx-e2ye-ialc-psu7-xlbs-6xef-gd5r-sa6m-jwyc-ewdr-peq2-jcaq"
	f, err := parseFingerprint(doc)
	if err != nil || f.String() != doc {
		t.Fatalf("%s: %v, %v", doc, f, err)
	}
	for _, s := range []string{strings.ToUpper(doc), strings.ReplaceAll(doc, "-", "")} {
		if g, err := parseFingerprint(s); err != nil || g != f {
			t.Errorf("%s: %v, %v; want accepted as %s", s, g, err, doc)
		}
	}
	for _, s := range []string{doc[:len(doc)-1] + "b", doc[:len(doc)-1], doc + "a", strings.Replace(doc, "f", "1", 1)} {
		if _, err := parseFingerprint(s); err == nil {
			t.Errorf("%s: accepted, want refused", s)
		}
	}
}

// FuzzDecode: the decoder never panics, and what it accepts encodes to an
// item it decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, b := range docExamples(f) {
		f.Add(b[4:])
	}
	f.Add([]byte{0xa2, 0x00, 0x10, 0x00, 0x10})
	f.Add([]byte{0x99, 0x20, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeItem(b)
		if err != nil {
			return
		}
		again, err := decodeItem(encodeItem(v))
		if err != nil {
			t.Fatalf("%x decodes, its encoding does not: %v", b, err)
		}
		if !bytes.Equal(encodeItem(again), encodeItem(v)) {
			t.Fatalf("%x: not stable through an encoding", b)
		}
	})
}

package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestFixedBytesAnyLengthWidth: a message ID (16 bytes) or a fingerprint
// (32) is read whatever width its byte string's length is encoded in
// (PROTOCOL.md §4: decoders do not require the shortest encoding), as a
// group UUID always was, on the server's path (split, then the send's
// fast path or the strict decoder) and the strict one alike; a length
// that is not the field's is malformed in every width. Until session 22 an
// ID or fingerprint whose length was not in the shortest form was refused
// bad_request.
func TestFixedBytesAnyLengthWidth(t *testing.T) {
	group := "50" + strings.Repeat("11", 16)
	id := strings.Repeat("22", 16)
	fp := strings.Repeat("33", 32)
	frame := func(item string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(item, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
	}
	send := func(idHead string) []byte { // {0: 20, 1: {1: group, 2: [{1: id, 2: h'6869'}]}}
		return frame("a2 00 14 01 a2 01" + group + " 02 81 a2 01 " + idHead + id + " 02 42 6869")
	}
	register := func(fpHead string) []byte { // a register with one replica: the fingerprint's width
		return frame("a2 00 01 01 a4 01" + group + " 02 61 61 04 01 07 81 a2 01 63 613a31 02 " + fpHead + fp)
	}
	for _, head := range []string{"50", "58 10", "59 0010", "5a 00000010", "5b 0000000000000010"} {
		for _, decode := range []func([]byte) (Op, any, error){
			func(b []byte) (Op, any, error) { return splitRequest(bytes.NewReader(b)) },
			func(b []byte) (Op, any, error) { return decodeRequest(bytes.NewReader(b)) },
		} {
			_, v, err := decode(send(head))
			if err != nil {
				t.Fatalf("a send whose ID's length is %s: %v", head, err)
			}
			if got := v.(*Send).Messages[0].ID; hex.EncodeToString(got[:]) != id {
				t.Fatalf("a send whose ID's length is %s: ID %x", head, got)
			}
		}
	}
	for _, head := range []string{"58 20", "59 0020", "5a 00000020", "5b 0000000000000020"} {
		for _, decode := range []func([]byte) (Op, any, error){
			func(b []byte) (Op, any, error) { return splitRequest(bytes.NewReader(b)) },
			func(b []byte) (Op, any, error) { return decodeRequest(bytes.NewReader(b)) },
		} {
			_, v, err := decode(register(head))
			if err != nil {
				t.Fatalf("a replica whose fingerprint's length is %s: %v", head, err)
			}
			if got := v.(*Register).Replicas[0].Fingerprint; hex.EncodeToString(got[:]) != fp {
				t.Fatalf("a replica whose fingerprint's length is %s: %x", head, got)
			}
		}
	}
	// The wrong length, in any width, is still malformed: one byte short
	// (the item ends inside it, or declares what the field is not).
	for _, b := range [][]byte{
		frame("a2 00 14 01 a2 01" + group + " 02 81 a2 01 58 0f" + id[2:] + " 02 42 6869"),
		frame("a2 00 14 01 a2 01" + group + " 02 81 a2 01 59 0011" + id + "22 02 42 6869"),
		frame("a2 00 14 01 a2 01" + group + " 02 81 a2 01 5b 0100000000000010" + id + " 02 42 6869"),
	} {
		for _, decode := range []func([]byte) (Op, any, error){
			func(b []byte) (Op, any, error) { return splitRequest(bytes.NewReader(b)) },
			func(b []byte) (Op, any, error) { return decodeRequest(bytes.NewReader(b)) },
		} {
			if _, _, err := decode(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%x: %v, want malformed", b, err)
			}
		}
	}
}

package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

// update rewrites the expected-bytes files (testdata/golden/*.hex) and the
// example blocks of PROTOCOL.md from what the code produces:
//
//	go test ./wire -run 'TestGolden|TestProtocolExamples' -update
var update = flag.Bool("update", false, "rewrite golden files and PROTOCOL.md examples")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Fixed inputs shared by the golden, example and fuzz tests. They look like
// real values (UUIDv7s, SHA-256 fingerprints, Unix-ns times) so the examples
// in PROTOCOL.md read like real traffic.
var (
	tGroup  = uuid.MustParse("01933b9e-7c00-7a5e-9d3c-6f1a2b3c4d5e")
	tGroup2 = uuid.MustParse("01933b9f-0a11-7b22-8c33-4d445e556f66")
	tID1    = ID(uuid.MustParse("01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a01"))
	tID2    = ID(uuid.MustParse("01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a02"))
	tID3    = ID(uuid.MustParse("01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a03"))
	tAlice  = Fingerprint(sha256.Sum256([]byte("alice's SubjectPublicKeyInfo")))
	tBob    = Fingerprint(sha256.Sum256([]byte("bob's SubjectPublicKeyInfo")))
	tDaemon = Fingerprint(sha256.Sum256([]byte("group daemon's SubjectPublicKeyInfo")))
	tDaemn2 = Fingerprint(sha256.Sum256([]byte("another daemon's SubjectPublicKeyInfo")))
)

const (
	tT0       int64  = 1732406400000000000 // 2024-11-24T00:00:00Z in Unix ns
	tEpoch    uint64 = 0x8f3a2b1c4d5e6f70  // a group log's epoch
	tRegEpoch uint64 = 0x2c5e9a7b31d04f18  // a registry's epoch
)

func ptr[T any](v T) *T { return &v }

// argsFor returns a new value of the args type of op, or nil for an op this
// version does not know.
func argsFor(op Op) any {
	switch op {
	case OpRegister:
		return new(Register)
	case OpRenew:
		return new(Renew)
	case OpDeregister:
		return new(Deregister)
	case OpList:
		return new(List)
	case OpInfo, OpLeave, OpMembers:
		return new(GroupRef)
	case OpJoin:
		return new(Join)
	case OpSend:
		return new(Send)
	case OpFetch:
		return new(Fetch)
	case OpWatch:
		return new(Watch)
	}
	return nil
}

// bodyFor returns a new value of the body type of a response frame of kind
// on a stream of op (a Result's type depends on the operation), or nil if
// none fits.
func bodyFor(op Op, kind Kind) any {
	switch kind {
	case KindError:
		return new(Error)
	case KindMessages:
		return new(Messages)
	case KindEnd:
		return new(End)
	case KindHeartbeat:
		return new(Heartbeat)
	case KindGap:
		return new(Gap)
	case KindStart:
		return new(Start)
	case KindResult:
		switch op {
		case OpRegister, OpRenew:
			return new(Lease)
		case OpList:
			return new(Groups)
		case OpInfo:
			return new(Info)
		case OpJoin:
			return new(Joined)
		case OpLeave:
			return new(Left)
		case OpMembers:
			return new(MemberList)
		case OpSend:
			return new(Sent)
		case OpDeregister:
			return new(struct{})
		}
	}
	return nil
}

// readHex reads a testdata hex file: '#' starts a comment line, whitespace
// is ignored, the rest is hex digits.
func readHex(t testing.TB, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseHexDump(string(text))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func parseHexDump(text string) ([]byte, error) {
	var digits strings.Builder
	for line := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, f := range strings.Fields(line) {
			digits.WriteString(f)
		}
	}
	return hex.DecodeString(digits.String())
}

// diagMode prints CBOR in RFC 8949 diagnostic notation with h'..' byte strings.
var diagMode = func() cbor.DiagMode {
	dm, err := cbor.DiagOptions{ByteStringEncoding: cbor.ByteStringBase16Encoding}.DiagMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// renderFrame is the text form of a frame used by the golden files and the
// examples of PROTOCOL.md: the item in diagnostic notation as a comment, the
// length prefix on a line of its own, then the item, 16 bytes a line.
func renderFrame(frame []byte) (string, error) {
	d, err := diagMode.Diagnose(frame[headerSize:])
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n", d)
	fmt.Fprintf(&b, "%x\n", frame[:headerSize])
	item := frame[headerSize:]
	for i := 0; i < len(item); i += 16 {
		line := item[i:min(i+16, len(item))]
		for j, c := range line {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%02x", c)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

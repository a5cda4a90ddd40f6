package wire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// goldenCase is one frame with a fixed value: a request (op) or a response
// (kind, on a stream of op).
type goldenCase struct {
	name string
	op   Op
	kind Kind // 0 for a request
	v    any  // a pointer to the args or body
}

func (c goldenCase) request() bool { return c.kind == 0 }

// encode returns the whole frame, length prefix included, as a peer writes it.
func (c goldenCase) encode() ([]byte, error) {
	var buf bytes.Buffer
	var err error
	if c.request() {
		err = WriteRequest(&buf, c.op, c.v)
	} else {
		err = WriteResponse(&buf, c.kind, c.v)
	}
	return buf.Bytes(), err
}

// goldenCases covers a representative value of every args type and every
// response body. Their bytes are in testdata/golden/NAME.hex; some are quoted
// in PROTOCOL.md.
func goldenCases() []goldenCase {
	return []goldenCase{
		// Registry requests.
		{name: "req-register", op: OpRegister, v: &Register{Group: tGroup, Name: "lunch",
			Addrs: []string{"192.168.1.20:7400", "[fe80::1%eth0]:7400"}, Port: 7400, Members: 3, LastSeq: 42}},
		{name: "req-register-port", op: OpRegister, v: &Register{Group: tGroup, Name: "lunch", Port: 7400}},
		{name: "req-renew", op: OpRenew, v: &Renew{Group: tGroup, Epoch: tRegEpoch, Members: 4, LastSeq: 57}},
		{name: "req-deregister", op: OpDeregister, v: &Deregister{Group: tGroup}},
		{name: "req-list", op: OpList, v: &List{}},
		// Group requests.
		{name: "req-info", op: OpInfo, v: &GroupRef{Group: tGroup}},
		{name: "req-join", op: OpJoin, v: &Join{Group: tGroup, Name: "alice"}},
		{name: "req-join-private", op: OpJoin, v: &Join{Group: tGroup, Name: "bob", Secret: []byte("open sesame")}},
		{name: "req-leave", op: OpLeave, v: &GroupRef{Group: tGroup}},
		{name: "req-members", op: OpMembers, v: &GroupRef{Group: tGroup}},
		{name: "req-send", op: OpSend, v: &Send{Group: tGroup, Messages: []Outgoing{{ID: tID1, Body: []byte("hi")}}}},
		{name: "req-send-batch", op: OpSend, v: &Send{Group: tGroup, Messages: []Outgoing{
			{ID: tID1, Body: []byte("hi")}, {ID: tID2, Body: []byte("lunch at noon?")}, {ID: tID3, Body: []byte{}}}}},
		{name: "req-fetch-since", op: OpFetch, v: &Fetch{Group: tGroup, Since: ptr(tT0), Limit: 100}},
		{name: "req-fetch-after", op: OpFetch, v: &Fetch{Group: tGroup, After: ptr(uint64(42)), Limit: 2, Epoch: tEpoch}},
		{name: "req-fetch-all", op: OpFetch, v: &Fetch{Group: tGroup}},
		{name: "req-watch-after", op: OpWatch, v: &Watch{Group: tGroup, After: ptr(uint64(44)), Epoch: tEpoch}},
		{name: "req-watch-since", op: OpWatch, v: &Watch{Group: tGroup, Since: ptr(tT0)}},
		{name: "req-watch-all", op: OpWatch, v: &Watch{Group: tGroup}},

		// Registry results.
		{name: "resp-lease", op: OpRegister, kind: KindResult, v: &Lease{Epoch: tRegEpoch, TTLMS: 15000}},
		{name: "resp-groups", op: OpList, kind: KindResult, v: &Groups{Epoch: tRegEpoch, Groups: []GroupEntry{
			{Group: tGroup, Name: "lunch", Addrs: []string{"192.168.1.20:7400"}, Fingerprint: tDaemon,
				Members: 4, LastSeq: 57, ExpiresMS: 12000},
			{Group: tGroup2, Name: "ops", Addrs: []string{"10.0.0.7:7401"}, Fingerprint: tDaemn2, ExpiresMS: 3000},
		}}},
		{name: "resp-groups-empty", op: OpList, kind: KindResult, v: &Groups{Epoch: tRegEpoch, Groups: []GroupEntry{}}},
		// Group results.
		{name: "resp-info", op: OpInfo, kind: KindResult, v: &Info{Group: tGroup, Name: "lunch", Epoch: tEpoch,
			First: 1, Last: 57, Members: 4, Limits: Limits{
				MaxMessageBytes: 65536, MaxBatch: 256, MaxMessages: 1_000_000, MaxBytes: 256 << 20,
				FetchPage: 10_000, MaxMembers: 1024, SendRateMilli: 50_000, SendBurst: 100, HeartbeatMS: 5000},
			Member: true, Fingerprint: tDaemon}},
		{name: "resp-info-private", op: OpInfo, kind: KindResult, v: &Info{Group: tGroup2, Name: "ops", Epoch: tEpoch,
			Limits:  Limits{MaxMessageBytes: 65536, MaxBatch: 256, FetchPage: 10_000, MaxAgeMS: 86_400_000},
			Private: true, Fingerprint: tDaemn2}},
		{name: "resp-joined", op: OpJoin, kind: KindResult, v: &Joined{Epoch: tEpoch, Last: 57}},
		{name: "resp-joined-already", op: OpJoin, kind: KindResult, v: &Joined{Epoch: tEpoch, Last: 57, Already: true}},
		{name: "resp-left", op: OpLeave, kind: KindResult, v: &Left{WasMember: true}},
		{name: "resp-left-not-member", op: OpLeave, kind: KindResult, v: &Left{}},
		{name: "resp-member-list", op: OpMembers, kind: KindResult, v: &MemberList{Members: []Member{
			{Fingerprint: tAlice, Name: "alice", Joined: tT0 - 3_600_000_000_000},
			{Fingerprint: tBob, Name: "bob", Joined: tT0 - 60_000_000_000},
		}}},
		{name: "resp-member-list-presence", op: OpMembers, kind: KindResult, v: &MemberList{Members: []Member{
			{Fingerprint: tAlice, Name: "alice", Joined: tT0 - 3_600_000_000_000, Online: true, LastSeen: tT0},
			{Fingerprint: tBob, Name: "bob", Joined: tT0 - 60_000_000_000, LastSeen: tT0 - 30_000_000_000},
		}}},
		{name: "resp-sent", op: OpSend, kind: KindResult, v: &Sent{Epoch: tEpoch, Acks: []Ack{{Seq: 58, Time: tT0 + 1_500_000}}}},
		{name: "resp-sent-duplicate", op: OpSend, kind: KindResult, v: &Sent{Epoch: tEpoch, Acks: []Ack{
			{Seq: 58, Time: tT0 + 1_500_000, Duplicate: true}, {Seq: 59, Time: tT0 + 2_000_000}}}},
		// Fetch and watch frames.
		{name: "resp-messages", op: OpFetch, kind: KindMessages, v: &Messages{Messages: []Message{
			{Seq: 43, Time: tT0 + 1_000, ID: tID1, From: tAlice, Name: "alice", Body: []byte("hi")},
			{Seq: 44, Time: tT0 + 2_000, ID: tID2, From: tBob, Name: "bob", Body: []byte("hello")},
		}}},
		{name: "resp-end", op: OpFetch, kind: KindEnd, v: &End{Next: 44, More: true, First: 1, Last: 57, Epoch: tEpoch}},
		{name: "resp-end-last-page", op: OpFetch, kind: KindEnd, v: &End{Next: 57, First: 1, Last: 57, Epoch: tEpoch}},
		{name: "resp-start", op: OpWatch, kind: KindStart, v: &Start{Epoch: tEpoch, First: 1, Last: 57, HeartbeatMS: 5000}},
		{name: "resp-heartbeat", op: OpWatch, kind: KindHeartbeat, v: &Heartbeat{Last: 57, Now: tT0 + 5_000_000_000}},
		{name: "resp-gap", op: OpWatch, kind: KindGap, v: &Gap{From: 45, To: 50}},
		// Errors.
		{name: "resp-error-not-member", op: OpSend, kind: KindError, v: &Error{Code: CodeNotMember, Message: "not a member"}},
		{name: "resp-error-rate-limited", op: OpSend, kind: KindError, v: &Error{Code: CodeRateLimited,
			Message: "rate limited", RetryAfterMS: 250}},
		{name: "resp-error-epoch-mismatch", op: OpFetch, kind: KindError, v: &Error{Code: CodeEpochMismatch,
			Message: "epoch mismatch", Epoch: tEpoch}},
		{name: "resp-error-unsupported", op: 99, kind: KindError, v: &Error{Code: CodeUnsupported, Message: "op_99"}},
		{name: "resp-error-too-large", op: OpSend, kind: KindError, v: &Error{Code: CodeTooLarge,
			Message: "message 0 of 70000 bytes, at most 65536"}},
	}
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".hex") }

// TestGolden checks every case's whole frame against its golden file, then
// decodes it back as a peer would and compares with the input.
func TestGolden(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			seen[c.name+".hex"] = true
			frame, err := c.encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := renderFrame(frame)
			if err != nil {
				t.Fatal(err)
			}
			path := goldenPath(c.name)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("frame of %+v\n got:\n%s\nwant:\n%s", c.v, got, want)
			}
			if wantBytes := readHex(t, path); !bytes.Equal(frame, wantBytes) {
				t.Errorf("frame bytes\n got %x\nwant %x", frame, wantBytes)
			}

			dec := decodeGolden(t, c, frame)
			if !reflect.DeepEqual(dec, c.v) {
				t.Errorf("decoded\n got %+v\nwant %+v", dec, c.v)
			}
		})
	}
	// Every golden file belongs to a case, so a renamed case leaves no stale file.
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.hex"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s belongs to no case", f)
		}
	}
}

// decodeGolden reads frame back with ReadRequest or ReadResponse and decodes
// its args or body into a new value of c.v's type.
func decodeGolden(t *testing.T, c goldenCase, frame []byte) any {
	t.Helper()
	r := bytes.NewReader(frame)
	if c.request() {
		op, raw, err := ReadRequest(r, 0)
		if err != nil {
			t.Fatalf("ReadRequest: %v", err)
		}
		if op != c.op {
			t.Errorf("op = %v, want %v", op, c.op)
		}
		v := argsFor(op)
		if err := raw.Decode(v); err != nil {
			t.Fatalf("decode %v args: %v", op, err)
		}
		if r.Len() != 0 {
			t.Errorf("%d bytes left after the frame", r.Len())
		}
		return v
	}
	kind, raw, err := ReadResponse(r, nil)
	if r.Len() != 0 {
		t.Errorf("%d bytes left after the frame", r.Len())
	}
	if kind != c.kind {
		t.Errorf("kind = %v, want %v", kind, c.kind)
	}
	if kind == KindError {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("ReadResponse of an error frame: %v, want an *Error", err)
		}
		if !errors.Is(err, e.Code.Sentinel()) {
			t.Errorf("errors.Is(%v, %v) = false", err, e.Code.Sentinel())
		}
		return e
	}
	if err != nil {
		t.Fatalf("ReadResponse: %v", err)
	}
	v := bodyFor(c.op, kind)
	if err := raw.Decode(v); err != nil {
		t.Fatalf("decode %v body: %v", kind, err)
	}
	return v
}

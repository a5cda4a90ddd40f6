package cell

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/wire"
)

func testHeader() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: 3, ID: []byte("ID"), Addr: []byte("a:1")}
}

// emptyConfiguration is raft's encoding of a configuration of no servers:
// a snapshot's configuration must decode.
var emptyConfiguration = raft.EncodeConfiguration(raft.Configuration{})

// raftRequests are one request of each type, and the hex of its frame.
var raftRequests = []struct {
	name string
	req  any
	hex  string
}{
	{"append entries", &raft.AppendEntriesRequest{
		RPCHeader: testHeader(), Term: 5, Leader: []byte("a:1"), PrevLogEntry: 300, PrevLogTerm: 4, LeaderCommitIndex: 299,
		Entries: []*raft.Log{
			{Index: 301, Term: 5, Type: raft.LogCommand, Data: []byte("hi"), AppendedAt: time.Unix(0, 1000)},
			{Index: 302, Term: 5, Type: raft.LogNoop, Extensions: []byte{9}},
		},
	},
		"00" + "00000025" + "03024944" + "03613a31" + "05" + "03613a31" + "ac02" + "04" + "ab02" + "02" +
			"ad02" + "05" + "00" + "d00f" + "00" + "026869" +
			"ae02" + "05" + "01" + "00" + "0109" + "00"},
	{"heartbeat", &raft.AppendEntriesRequest{RPCHeader: testHeader(), Term: 5, Leader: []byte("a:1")},
		"00" + "00000011" + "03024944" + "03613a31" + "05" + "03613a31" + "00" + "00" + "00" + "00"},
	{"request vote", &raft.RequestVoteRequest{RPCHeader: testHeader(), Term: 6, Candidate: []byte("a:1"),
		LastLogIndex: 302, LastLogTerm: 5, LeadershipTransfer: true},
		"01" + "00000011" + "03024944" + "03613a31" + "06" + "03613a31" + "ae02" + "05" + "01"},
	{"request pre-vote", &raft.RequestPreVoteRequest{RPCHeader: testHeader(), Term: 6, LastLogIndex: 302, LastLogTerm: 5},
		"04" + "0000000c" + "03024944" + "03613a31" + "06" + "ae02" + "05"},
	{"timeout now", &raft.TimeoutNowRequest{RPCHeader: testHeader()},
		"03" + "00000008" + "03024944" + "03613a31"},
	{"install snapshot", &raft.InstallSnapshotRequest{RPCHeader: testHeader(), SnapshotVersion: 1, Term: 6,
		Leader: []byte("a:1"), LastLogIndex: 400, LastLogTerm: 6, Configuration: emptyConfiguration, ConfigurationIndex: 7, Size: 3},
		"02" + "0000001f" + "03024944" + "03613a31" + "01" + "06" + "03613a31" + "9003" + "06" + "00" +
			"0a81a753657276657273c0" + "07" + "03"},
}

// raftResponses are one response of each type, the type of the request
// it answers, and the hex of its frame.
var raftResponses = []struct {
	name string
	typ  byte
	resp any
	hex  string
}{
	{"append entries", rpcAppendEntries, &raft.AppendEntriesResponse{RPCHeader: testHeader(), Term: 5, LastLog: 302, Success: true, NoRetryBackoff: true},
		"00" + "0000000c" + "03024944" + "03613a31" + "05" + "ae02" + "03"},
	{"request vote", rpcRequestVote, &raft.RequestVoteResponse{RPCHeader: testHeader(), Term: 6, Granted: true},
		"01" + "0000000b" + "03024944" + "03613a31" + "06" + "00" + "01"},
	{"request pre-vote", rpcRequestPreVote, &raft.RequestPreVoteResponse{RPCHeader: testHeader(), Term: 6},
		"04" + "0000000a" + "03024944" + "03613a31" + "06" + "00"},
	{"timeout now", rpcTimeoutNow, &raft.TimeoutNowResponse{RPCHeader: testHeader()},
		"03" + "00000008" + "03024944" + "03613a31"},
	{"install snapshot", rpcInstallSnapshot, &raft.InstallSnapshotResponse{RPCHeader: testHeader(), Term: 6, Success: true},
		"02" + "0000000a" + "03024944" + "03613a31" + "06" + "01"},
}

// readTestFrame reads the one frame in b.
func readTestFrame(t *testing.T, b []byte) (byte, []byte) {
	t.Helper()
	typ, body, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return typ, body
}

func TestRaftRequestEncoding(t *testing.T) {
	for _, tc := range raftRequests {
		t.Run(tc.name, func(t *testing.T) {
			b, typ := appendRequest(nil, tc.req)
			if got := hex.EncodeToString(b); got != tc.hex {
				t.Fatalf("encoding:\n got %s\nwant %s", got, tc.hex)
			}
			gotTyp, body := readTestFrame(t, b)
			if gotTyp != typ {
				t.Fatalf("frame type %d, want %d", gotTyp, typ)
			}
			got, err := decodeRequest(typ, body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.req) {
				t.Fatalf("decoded:\n got %#v\nwant %#v", got, tc.req)
			}
		})
	}
}

func TestRaftResponseEncoding(t *testing.T) {
	for _, tc := range raftResponses {
		t.Run(tc.name, func(t *testing.T) {
			b := appendResponse(nil, tc.typ, tc.resp, nil)
			if got := hex.EncodeToString(b); got != tc.hex {
				t.Fatalf("encoding:\n got %s\nwant %s", got, tc.hex)
			}
			typ, body := readTestFrame(t, b)
			got := reflect.New(reflect.TypeOf(tc.resp).Elem()).Interface()
			if err := decodeResponse(tc.typ, typ, body, got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.resp) {
				t.Fatalf("decoded:\n got %#v\nwant %#v", got, tc.resp)
			}
		})
	}
}

func TestRaftErrorResponse(t *testing.T) {
	b := appendResponse(nil, rpcAppendEntries, nil, errors.New("no"))
	if got, want := hex.EncodeToString(b), "ff"+"00000002"+"6e6f"; got != want {
		t.Fatalf("encoding: got %s, want %s", got, want)
	}
	typ, body := readTestFrame(t, b)
	err := decodeResponse(rpcAppendEntries, typ, body, new(raft.AppendEntriesResponse))
	var remote remoteError
	if !errors.As(err, &remote) || err.Error() != "no" {
		t.Fatalf("got %v, want the peer's error", err)
	}
	// A response of another type than the request's is malformed.
	b = appendResponse(nil, rpcRequestVote, &raft.RequestVoteResponse{}, nil)
	typ, body = readTestFrame(t, b)
	if err := decodeResponse(rpcAppendEntries, typ, body, new(raft.AppendEntriesResponse)); !errors.Is(err, errMalformed) {
		t.Fatalf("got %v, want errMalformed", err)
	}
}

func TestHeartbeatTold(t *testing.T) {
	hb := raftRequests[1].req.(*raft.AppendEntriesRequest)
	if !isHeartbeat(hb) {
		t.Fatal("a heartbeat not told")
	}
	if isHeartbeat(raftRequests[0].req.(*raft.AppendEntriesRequest)) {
		t.Fatal("entries taken for a heartbeat")
	}
}

// TestRaftFrameMalformed decodes the frames under testdata/raftwire: each
// is refused with errMalformed (or as cut short), never a panic.
func TestRaftFrameMalformed(t *testing.T) {
	files, err := filepath.Glob("testdata/raftwire/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no malformed frames: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b, err := hex.DecodeString(string(bytes.TrimSpace(text)))
			if err != nil {
				t.Fatal(err)
			}
			typ, body, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
			if err == nil {
				_, err = decodeRequest(typ, body)
			}
			if err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

// FuzzDecodeRaftRequest decodes any bytes as a frame from a member: it
// never panics, and what decodes encodes back to the same bytes.
func FuzzDecodeRaftRequest(f *testing.F) {
	for _, tc := range raftRequests {
		b, _ := appendRequest(nil, tc.req)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, body, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		req, err := decodeRequest(typ, body)
		if err != nil {
			return
		}
		again, _ := appendRequest(nil, req)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("re-encoded differently:\n got %x\nwant %x", again, b[:len(again)])
		}
	})
}

// FuzzDecodeRaftResponse decodes any bytes as a response from a member.
func FuzzDecodeRaftResponse(f *testing.F) {
	for _, tc := range raftResponses {
		f.Add(tc.typ, appendResponse(nil, tc.typ, tc.resp, nil))
	}
	f.Fuzz(func(t *testing.T, want byte, b []byte) {
		typ, body, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		for _, resp := range []any{new(raft.AppendEntriesResponse), new(raft.RequestVoteResponse),
			new(raft.RequestPreVoteResponse), new(raft.TimeoutNowResponse), new(raft.InstallSnapshotResponse)} {
			decodeResponse(want, typ, body, resp)
		}
	})
}

// TestReadFrameGrows reads frames longer than frameAllocStep whole, and
// refuses one whose bytes end before its length.
func TestReadFrameGrows(t *testing.T) {
	for _, n := range []int{frameAllocStep, frameAllocStep + 1, 3*frameAllocStep + 7} {
		body := bytes.Repeat([]byte{7}, n)
		b := append([]byte{rpcAppendEntries, 0, 0, 0, 0}, body...)
		binary.BigEndian.PutUint32(b[1:], uint32(n))
		typ, got, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || typ != rpcAppendEntries || !bytes.Equal(got, body) {
			t.Fatalf("frame of %d bytes: type %d, %d bytes, %v", n, typ, len(got), err)
		}
		if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(b[:len(b)-1]))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame of %d bytes cut short: %v", n, err)
		}
	}
}

// TestRaftEntryOverStore: an entry longer than the raft log stores is
// malformed. Raft cuts its log back for an entry before it stores it, so
// one the store refused (raftlog.ErrTooLarge) left a follower's log cut
// and raft's idea of its last index wrong.
//
// The frames are decoded as they were encoded, in one buffer sized for
// them, over one buffer of data: through the frame reader (whose buffer
// doubles as a frame's bytes arrive) and with appends of 64 MiB growing,
// the test took 8-14 s and about 880 MB under -race. The frame reader
// takes them (within maxFrameBytes): the refusal is the decoder's.
func TestRaftEntryOverStore(t *testing.T) {
	data := make([]byte, maxEntryBytes)
	var buf []byte
	for _, n := range []int{maxEntryBytes, maxEntryBytes + 1} {
		req := &raft.AppendEntriesRequest{
			RPCHeader: testHeader(), Term: 5, Leader: []byte("a:1"), PrevLogEntry: 300, PrevLogTerm: 5,
			Entries: []*raft.Log{{Index: 301, Term: 5, Type: raft.LogCommand, Data: data[:n-1], Extensions: []byte{1}}},
		}
		if cap(buf) < appendEntriesBytes(req) {
			buf = make([]byte, 0, appendEntriesBytes(req))
		}
		b, typ := appendRequest(buf[:0], req)
		if len(b)-frameHeader > maxFrameBytes {
			t.Fatalf("an entry of %d bytes makes a frame of %d bytes, more than a member reads (%d)", n, len(b)-frameHeader, maxFrameBytes)
		}
		_, err := decodeRequest(typ, b[frameHeader:])
		if got, want := err != nil, n > maxEntryBytes; got != want || err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("an entry of %d bytes: %v; want refused: %v", n, err, want)
		}
	}
}

// TestAppendEntriesFitsFrame: appendEntriesBytes is at least a request's
// encoding, however large its numbers; the longest entry a member takes
// (maxEntryBytes) fits in a frame alone, under a header as long as a
// cell's; and raft's most entries (maxFrameEntries, which Config allows)
// of the longest send (one entry of wire.MaxFrameSize) would not, so the
// transport cuts them to the first that fit (fitAppendEntries).
func TestAppendEntriesFitsFrame(t *testing.T) {
	fp := []byte(mustIdentity(t).Fingerprint().String())
	addr := []byte("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: fp, Addr: addr}
	req := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: maxRaftNumber, Leader: addr, PrevLogEntry: maxRaftNumber, PrevLogTerm: maxRaftNumber, LeaderCommitIndex: maxRaftNumber}
	for _, at := range []time.Time{time.Unix(0, math.MaxInt64), time.Unix(0, math.MinInt64)} {
		req.Entries = append(req.Entries, &raft.Log{Index: maxRaftNumber, Term: maxRaftNumber, Type: raft.LogConfiguration, AppendedAt: at, Extensions: make([]byte, 200), Data: make([]byte, 70_000)})
	}
	if got, bound := len(appendRequestBody(req)), appendEntriesBytes(req); got > bound {
		t.Fatalf("a request of %d bytes; appendEntriesBytes says at most %d", got, bound)
	}

	longest := &raft.Log{Index: maxRaftNumber, Term: maxRaftNumber, Type: raft.LogCommand, Data: make([]byte, maxEntryBytes)}
	req.Entries = []*raft.Log{longest}
	if n := appendEntriesBytes(req); n > maxFrameBytes {
		t.Fatalf("a request of one entry of %d bytes takes up to %d, more than a frame's %d", maxEntryBytes, n, maxFrameBytes)
	}

	send := make([]byte, wire.MaxFrameSize)
	req.Entries = nil
	for i := range maxFrameEntries {
		req.Entries = append(req.Entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: send})
	}
	if n := appendEntriesBytes(req); n <= maxFrameBytes {
		t.Fatalf("%d sends of %d bytes take up to %d, within a frame's %d: the cut is not needed", maxFrameEntries, len(send), n, maxFrameBytes)
	}
	fitAppendEntries(req, maxFrameBytes)
	if n := appendEntriesBytes(req); len(req.Entries) == 0 || n > maxFrameBytes {
		t.Fatalf("cut to %d entries, up to %d bytes; want some, within %d", len(req.Entries), n, maxFrameBytes)
	}
	t.Logf("a request of %d sends of %d bytes carries the first %d", maxFrameEntries, len(send), len(req.Entries))
}

// TestConfigurationBounded: a configuration a member sends (in an entry or
// a snapshot) is malformed beyond maxCellServers servers or maxConfigBytes;
// one of maxCellServers servers as long as a member's may be fits.
func TestConfigurationBounded(t *testing.T) {
	most := raft.EncodeConfiguration(manyServers(maxCellServers))
	if len(most) > maxConfigBytes || !configurationDecodes(most) {
		t.Fatalf("a configuration of %d servers (%d bytes, at most %d) refused", maxCellServers, len(most), maxConfigBytes)
	}
	if configurationDecodes(raft.EncodeConfiguration(manyServers(maxCellServers + 1))) {
		t.Fatalf("a configuration of %d servers taken", maxCellServers+1)
	}
	long := manyServers(2)
	long.Servers[0].Address = raft.ServerAddress(strings.Repeat("h", maxConfigBytes))
	if configurationDecodes(raft.EncodeConfiguration(long)) {
		t.Fatalf("a configuration of more than %d bytes taken", maxConfigBytes)
	}
}

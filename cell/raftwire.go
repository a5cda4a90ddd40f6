package cell

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/cell/raftlog"
)

// The encoding of raft's RPCs on a cell's raft connections (RaftALPN, TLS
// over TCP: tcp.go), written by raftNet (raftnet.go) in place of
// hashicorp/raft's msgpack: no reflection, one buffer and one write per
// RPC, and the entries of an AppendEntries request read into one buffer
// that their Data refers to.
//
// A connection carries requests one way and their responses the other, in
// order. Every message is a frame:
//
//	type  uint8    the RPC (rpcAppendEntries...); in a response, the
//	               request's type, or rpcError
//	len   uint32   the body's length, big-endian; at most maxFrameBytes
//	body  len bytes
//
// An InstallSnapshot request's frame is followed by the snapshot itself,
// as many bytes as its size field says; the connection carries nothing after
// its response. An rpcError body is the text of the error raft answered
// the request with.
//
// Bodies are sequences of fields with no names: a number is an unsigned
// varint (encoding/binary's uvarint; only its shortest encoding is
// accepted), bytes are a varint length and the bytes, flags a byte of
// bits (an unknown bit is an error). Every body starts with raft's RPC
// header:
//
//	header:        version, id bytes, addr bytes
//	AppendEntries: header, term, leader bytes, prev index, prev term,
//	               commit index, entries (a count, then each entry:
//	               index, term, type byte, appended (Unix ns as a zigzag
//	               varint, 0 for none), extensions bytes, data bytes)
//	  response:    header, term, last log, flags (1 success, 2 no retry
//	               backoff)
//	RequestVote:   header, term, candidate bytes, last index, last term,
//	               flags (1 leadership transfer)
//	  response:    header, term, peers bytes, flags (1 granted)
//	RequestPreVote: header, term, last index, last term
//	  response:    header, term, flags (1 granted)
//	TimeoutNow:    header; its response: header
//	InstallSnapshot: header, snapshot version, term, leader bytes, last
//	               index, last term, peers bytes, configuration bytes,
//	               configuration index, size
//	  response:    header, term, flags (1 success)
//
// A body with bytes left over after its last field is malformed, as is one
// that ends inside a field, one with a term or index over 2^62
// (maxRaftNumber), and an AppendEntries request whose entries are more than
// maxFrameEntries, do not each follow the one before (the first, the
// previous index), have terms that go down or above the request's, or
// carry over maxEntryBytes of data and extensions, or an entry of raft's
// deprecated peer types, or a snapshot of version 0.

// RPC types of a frame: the first four as hashicorp/raft numbers them.
const (
	rpcAppendEntries   byte = 0
	rpcRequestVote     byte = 1
	rpcInstallSnapshot byte = 2
	rpcTimeoutNow      byte = 3
	rpcRequestPreVote  byte = 4
	rpcError           byte = 0xff
)

const (
	// frameHeader is a frame's type and length.
	frameHeader = 5
	// maxFrameBytes bounds a frame's body. A peer is a member whose key
	// the cell lists, but a longer length is refused before anything is
	// allocated for it. A member sends no longer frame: an AppendEntries
	// request whose entries would make one carries the first of them that
	// fit (fitAppendEntries), and raft sends the rest in the next. Why:
	// raft sends up to MaxAppendEntries (Config allows 1024) entries at
	// once, whatever their size, and an entry is a proposal of up to 256
	// KiB of sends gathered, or one send alone, of up to wire.MaxFrameSize
	// and its senders' names: 1024 of those made a frame four times the
	// bound, which the member it was sent to refused, and the leader sent
	// it again and again, for ever (session 17's note). The bound is room
	// for 1024 gathered proposals; the longest entry (maxEntryBytes) fits
	// alone.
	maxFrameBytes = 1024 * (256<<10 + 64)
	// maxResponseBytes bounds a response's body: raft's answers are a
	// few numbers, and its errors a line of text. A member's listener
	// declaring more is not read.
	maxResponseBytes = 64 << 10
	// minEntryBytes is the shortest an entry's encoding can be: a count of
	// entries is checked against it before the entries are allocated.
	minEntryBytes = 6
	// maxFrameEntries bounds an AppendEntries request's entries: raft
	// sends at most MaxAppendEntries in one, and Config allows at most
	// this. Why: an entry decodes into a raft.Log of about 100 bytes, so
	// entries of minEntryBytes each made a member allocate 17 times the
	// bytes it read (4 GiB for one frame of maxFrameBytes).
	maxFrameEntries = 1024
	// maxEntryBytes bounds an entry's data and extensions together: a
	// little under what the raft log stores (raftlog.MaxRecordBytes).
	// Raft cuts its log back for an entry before it stores it, so one
	// the store refuses left a follower's log cut and raft's idea of it
	// wrong.
	maxEntryBytes = raftlog.MaxRecordBytes - 64
	// maxRaftNumber bounds every term and index a frame carries. Why:
	// raft adds one to a term for each election and to an index for each
	// entry, unchecked. A member's key that sent a term of 2^64-1 had it
	// taken by the member it reached, then by the leader it refused:
	// the next election's term wrapped to 0, below every member's, and
	// no leader was ever elected again, even after restarts (the term is
	// kept on disk). At one election a millisecond, 2^62 is a hundred
	// million years away.
	maxRaftNumber = 1 << 62
)

// errMalformed is wrapped by the errors of decoding a frame's body.
var errMalformed = errors.New("cell: malformed raft RPC")

// appendFrame appends a frame of typ whose body encode appends.
func appendFrame(buf []byte, typ byte, encode func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, typ, 0, 0, 0, 0)
	buf = encode(buf)
	binary.BigEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-frameHeader))
	return buf
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendFlags(b []byte, flags ...bool) []byte {
	var v byte
	for i, f := range flags {
		if f {
			v |= 1 << i
		}
	}
	return append(b, v)
}

func appendHeader(b []byte, h raft.RPCHeader) []byte {
	b = binary.AppendUvarint(b, uint64(h.ProtocolVersion))
	b = appendBytes(b, h.ID)
	return appendBytes(b, h.Addr)
}

func appendAppendEntriesRequest(b []byte, r *raft.AppendEntriesRequest) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Leader)
	b = binary.AppendUvarint(b, r.PrevLogEntry)
	b = binary.AppendUvarint(b, r.PrevLogTerm)
	b = binary.AppendUvarint(b, r.LeaderCommitIndex)
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for _, e := range r.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		var at int64
		if !e.AppendedAt.IsZero() {
			at = e.AppendedAt.UnixNano()
		}
		b = binary.AppendVarint(b, at)
		b = appendBytes(b, e.Extensions)
		b = appendBytes(b, e.Data)
	}
	return b
}

// appendEntriesBytes is at least the length of r's encoding (its body):
// the buffer it is encoded into is sized by it, and fitAppendEntries
// keeps it within a frame's bound.
func appendEntriesBytes(r *raft.AppendEntriesRequest) int {
	n := appendEntriesFixedBytes(r)
	for _, e := range r.Entries {
		n += entryBytes(e)
	}
	return n
}

// appendEntriesFixedBytes is at least the length of r's encoding without
// its entries: ten numbers and lengths, and three strings.
func appendEntriesFixedBytes(r *raft.AppendEntriesRequest) int {
	return 10*binary.MaxVarintLen64 + len(r.ID) + len(r.Addr) + len(r.Leader)
}

// entryBytes is at least the length of e's encoding in an AppendEntries
// request: five numbers and lengths, its type, its extensions and data.
func entryBytes(e *raft.Log) int {
	return 5*binary.MaxVarintLen64 + 1 + len(e.Extensions) + len(e.Data)
}

// fitAppendEntries cuts r's entries to the first whose encoding fits in
// limit bytes (one at least: an entry of up to maxEntryBytes fits in
// maxFrameBytes). raft reads a request's entries back after the transport
// sent it (replicateTo's updateLastAppended, pipelineSend's next index,
// hashicorp/raft v1.7.2), so it counts only those sent as sent, and sends
// the rest next; the follower commits no further than what it holds.
func fitAppendEntries(r *raft.AppendEntriesRequest, limit int) {
	n := appendEntriesFixedBytes(r)
	for i, e := range r.Entries {
		if n += entryBytes(e); n > limit && i > 0 {
			r.Entries = r.Entries[:i]
			return
		}
	}
}

func appendAppendEntriesResponse(b []byte, r *raft.AppendEntriesResponse) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLog)
	return appendFlags(b, r.Success, r.NoRetryBackoff)
}

func appendRequestVoteRequest(b []byte, r *raft.RequestVoteRequest) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Candidate)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	b = binary.AppendUvarint(b, r.LastLogTerm)
	return appendFlags(b, r.LeadershipTransfer)
}

func appendRequestVoteResponse(b []byte, r *raft.RequestVoteResponse) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Peers)
	return appendFlags(b, r.Granted)
}

func appendRequestPreVoteRequest(b []byte, r *raft.RequestPreVoteRequest) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	return binary.AppendUvarint(b, r.LastLogTerm)
}

func appendRequestPreVoteResponse(b []byte, r *raft.RequestPreVoteResponse) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	return appendFlags(b, r.Granted)
}

func appendInstallSnapshotRequest(b []byte, r *raft.InstallSnapshotRequest) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, uint64(r.SnapshotVersion))
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Leader)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	b = binary.AppendUvarint(b, r.LastLogTerm)
	b = appendBytes(b, r.Peers)
	b = appendBytes(b, r.Configuration)
	b = binary.AppendUvarint(b, r.ConfigurationIndex)
	return binary.AppendUvarint(b, uint64(r.Size))
}

func appendInstallSnapshotResponse(b []byte, r *raft.InstallSnapshotResponse) []byte {
	b = appendHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	return appendFlags(b, r.Success)
}

// appendRequest appends the frame of a request raft hands the transport;
// typ says which.
func appendRequest(buf []byte, req any) (b []byte, typ byte) {
	switch r := req.(type) {
	case *raft.AppendEntriesRequest:
		return appendFrame(buf, rpcAppendEntries, func(b []byte) []byte { return appendAppendEntriesRequest(b, r) }), rpcAppendEntries
	case *raft.RequestVoteRequest:
		return appendFrame(buf, rpcRequestVote, func(b []byte) []byte { return appendRequestVoteRequest(b, r) }), rpcRequestVote
	case *raft.RequestPreVoteRequest:
		return appendFrame(buf, rpcRequestPreVote, func(b []byte) []byte { return appendRequestPreVoteRequest(b, r) }), rpcRequestPreVote
	case *raft.TimeoutNowRequest:
		return appendFrame(buf, rpcTimeoutNow, func(b []byte) []byte { return appendHeader(b, r.RPCHeader) }), rpcTimeoutNow
	case *raft.InstallSnapshotRequest:
		return appendFrame(buf, rpcInstallSnapshot, func(b []byte) []byte { return appendInstallSnapshotRequest(b, r) }), rpcInstallSnapshot
	}
	panic(fmt.Sprintf("cell: no encoding for raft request %T", req))
}

// appendResponse appends the frame of raft's answer to a request of typ:
// its response, or its error.
func appendResponse(buf []byte, typ byte, resp any, err error) []byte {
	if err != nil {
		return appendFrame(buf, rpcError, func(b []byte) []byte { return append(b, err.Error()...) })
	}
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		return appendFrame(buf, typ, func(b []byte) []byte { return appendAppendEntriesResponse(b, r) })
	case *raft.RequestVoteResponse:
		return appendFrame(buf, typ, func(b []byte) []byte { return appendRequestVoteResponse(b, r) })
	case *raft.RequestPreVoteResponse:
		return appendFrame(buf, typ, func(b []byte) []byte { return appendRequestPreVoteResponse(b, r) })
	case *raft.TimeoutNowResponse:
		return appendFrame(buf, typ, func(b []byte) []byte { return appendHeader(b, r.RPCHeader) })
	case *raft.InstallSnapshotResponse:
		return appendFrame(buf, typ, func(b []byte) []byte { return appendInstallSnapshotResponse(b, r) })
	}
	return appendFrame(buf, rpcError, func(b []byte) []byte {
		return fmt.Appendf(b, "cell: no encoding for raft response %T", resp)
	})
}

// decoder reads the fields of a body. Its first failure sticks: later
// reads return zero values, and err says what failed first. Bytes it
// returns refer to the body.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	d.b = nil
}

// uvarint returns the next number. Only its shortest encoding is
// accepted, so that a body has one encoding.
func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 {
		d.fail("bad or missing number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// number returns the next term or index, failing (what: which field)
// above maxRaftNumber.
func (d *decoder) number(what string) uint64 {
	v := d.uvarint()
	if v > maxRaftNumber {
		d.fail(what + " over 2^62")
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1) // zigzag, as binary.AppendVarint
}

// bytes returns the next bytes field, nil if it is empty.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("bytes longer than the body")
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("body cut short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// flags returns the bits of the next flags byte, of which only the lowest
// n may be set.
func (d *decoder) flags(n int) byte {
	v := d.byte()
	if v>>n != 0 {
		d.fail("unknown flag")
		return 0
	}
	return v
}

func (d *decoder) header() raft.RPCHeader {
	v := d.uvarint()
	if v > math.MaxInt {
		d.fail("protocol version out of range")
	}
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion(v), ID: d.bytes(), Addr: d.bytes()}
}

// end returns the decoder's error, or one if bytes are left over.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("bytes after the last field")
	}
	return d.err
}

func decodeAppendEntriesRequest(body []byte) (*raft.AppendEntriesRequest, error) {
	d := decoder{b: body}
	r := &raft.AppendEntriesRequest{RPCHeader: d.header()}
	r.Term = d.number("term")
	r.Leader = d.bytes()
	r.PrevLogEntry = d.number("previous index")
	r.PrevLogTerm = d.number("previous term")
	r.LeaderCommitIndex = d.number("commit index")
	n := d.uvarint()
	switch {
	case n > maxFrameEntries:
		d.fail(fmt.Sprintf("%d entries, more than %d", n, maxFrameEntries))
		return nil, d.err
	case n > uint64(len(d.b)/minEntryBytes):
		d.fail("more entries than the body holds")
		return nil, d.err
	}
	if n > 0 {
		logs := make([]raft.Log, n)
		r.Entries = make([]*raft.Log, n)
		for i := range logs {
			l := &logs[i]
			l.Index = d.number("an entry's index")
			l.Term = d.number("an entry's term")
			l.Type = raft.LogType(d.byte())
			if at := d.varint(); at != 0 {
				l.AppendedAt = time.Unix(0, at)
			}
			l.Extensions = d.bytes()
			l.Data = d.bytes()
			r.Entries[i] = l
			prevTerm := r.PrevLogTerm
			if i > 0 {
				prevTerm = logs[i-1].Term
			}
			// As a leader's log holds them: each entry follows the one
			// before (the first, the previous index), its term no lower
			// than the one before's and no higher than the request's.
			switch {
			case d.err != nil:
			case l.Index != r.PrevLogEntry+1+uint64(i):
				d.fail(fmt.Sprintf("an entry of index %d where %d belongs", l.Index, r.PrevLogEntry+1+uint64(i)))
			case l.Term < prevTerm || l.Term > r.Term:
				d.fail(fmt.Sprintf("an entry of term %d after one of term %d, in a request of term %d", l.Term, prevTerm, r.Term))
			case len(l.Data)+len(l.Extensions) > maxEntryBytes:
				d.fail(fmt.Sprintf("an entry of %d bytes, more than %d", len(l.Data)+len(l.Extensions), maxEntryBytes))
			case l.Type > raft.LogConfiguration:
				d.fail(fmt.Sprintf("an entry of unknown type %d", l.Type))
			case l.Type == raft.LogAddPeerDeprecated || l.Type == raft.LogRemovePeerDeprecated:
				// Raft takes the peers such an entry lists as its
				// configuration, unchecked (configurationDecodes);
				// raft of protocol version 3 writes none.
				d.fail(fmt.Sprintf("an entry of the deprecated type %d", l.Type))
			case l.Type == raft.LogConfiguration && !configurationDecodes(l.Data):
				d.fail("a configuration entry that does not decode, or of too many servers")
			}
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeAppendEntriesResponse(body []byte, r *raft.AppendEntriesResponse) error {
	d := decoder{b: body}
	r.RPCHeader = d.header()
	r.Term = d.number("term")
	r.LastLog = d.number("last index")
	f := d.flags(2)
	r.Success, r.NoRetryBackoff = f&1 != 0, f&2 != 0
	return d.end()
}

func decodeRequestVoteRequest(body []byte) (*raft.RequestVoteRequest, error) {
	d := decoder{b: body}
	r := &raft.RequestVoteRequest{RPCHeader: d.header()}
	r.Term = d.number("term")
	r.Candidate = d.bytes()
	r.LastLogIndex = d.number("last index")
	r.LastLogTerm = d.number("last term")
	r.LeadershipTransfer = d.flags(1) != 0
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeRequestVoteResponse(body []byte, r *raft.RequestVoteResponse) error {
	d := decoder{b: body}
	r.RPCHeader = d.header()
	r.Term = d.number("term")
	r.Peers = d.bytes()
	r.Granted = d.flags(1) != 0
	return d.end()
}

func decodeRequestPreVoteRequest(body []byte) (*raft.RequestPreVoteRequest, error) {
	d := decoder{b: body}
	r := &raft.RequestPreVoteRequest{RPCHeader: d.header()}
	r.Term = d.number("term")
	r.LastLogIndex = d.number("last index")
	r.LastLogTerm = d.number("last term")
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeRequestPreVoteResponse(body []byte, r *raft.RequestPreVoteResponse) error {
	d := decoder{b: body}
	r.RPCHeader = d.header()
	r.Term = d.number("term")
	r.Granted = d.flags(1) != 0
	return d.end()
}

func decodeTimeoutNowRequest(body []byte) (*raft.TimeoutNowRequest, error) {
	d := decoder{b: body}
	r := &raft.TimeoutNowRequest{RPCHeader: d.header()}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeTimeoutNowResponse(body []byte, r *raft.TimeoutNowResponse) error {
	d := decoder{b: body}
	r.RPCHeader = d.header()
	return d.end()
}

func decodeInstallSnapshotRequest(body []byte) (*raft.InstallSnapshotRequest, error) {
	d := decoder{b: body}
	r := &raft.InstallSnapshotRequest{RPCHeader: d.header()}
	v := d.uvarint()
	if v > math.MaxInt {
		d.fail("snapshot version out of range")
	}
	if v < 1 {
		// Raft takes a version 0 snapshot's configuration from its
		// peers, unchecked (configurationDecodes); members send
		// version 1.
		d.fail("snapshot version 0")
	}
	r.SnapshotVersion = raft.SnapshotVersion(v)
	r.Term = d.number("term")
	r.Leader = d.bytes()
	r.LastLogIndex = d.number("last index")
	r.LastLogTerm = d.number("last term")
	r.Peers = d.bytes()
	r.Configuration = d.bytes()
	r.ConfigurationIndex = d.number("configuration index")
	if d.err == nil && !configurationDecodes(r.Configuration) {
		d.fail("a snapshot's configuration that does not decode, or of too many servers")
	}
	size := d.uvarint()
	if size > math.MaxInt64 {
		d.fail("snapshot size out of range")
	}
	r.Size = int64(size)
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeInstallSnapshotResponse(body []byte, r *raft.InstallSnapshotResponse) error {
	d := decoder{b: body}
	r.RPCHeader = d.header()
	r.Term = d.number("term")
	r.Success = d.flags(1) != 0
	return d.end()
}

// configurationDecodes reports whether b is a configuration raft can read.
//
// Why: raft panics on a configuration it cannot decode (in an
// AppendEntries entry, or an InstallSnapshot request), and on an entry of a
// type it does not know once it applies it, and it believes any member
// whose term is current: one request from a member's key (a bug, a stolen
// key) crashed the member it reached. Such requests are malformed here,
// before raft sees them. raft's own decoder is the judge, its panic
// caught.
//
// It also bounds the configuration: at most maxConfigBytes, and
// maxCellServers servers. Why: raft takes the configuration a leader
// sends as its own, and one of 32 MiB (a million servers) took 250 MiB to
// decode; a member that took it kept it, dialled each server, and as
// leader replicated to each.
func configurationDecodes(b []byte) (ok bool) {
	if len(b) > maxConfigBytes {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return len(raft.DecodeConfiguration(b).Servers) <= maxCellServers
}

// maxConfigBytes bounds a configuration's encoding in an entry or a
// snapshot: maxCellServers of the longest a server encodes to (its ID, a
// fingerprint's text; its address, at most wire.MaxAddrBytes; msgpack's
// field names), with room to spare.
const maxConfigBytes = 64 << 10

// decodeRequest decodes the body of a request frame of typ.
func decodeRequest(typ byte, body []byte) (any, error) {
	switch typ {
	case rpcAppendEntries:
		return decodeAppendEntriesRequest(body)
	case rpcRequestVote:
		return decodeRequestVoteRequest(body)
	case rpcRequestPreVote:
		return decodeRequestPreVoteRequest(body)
	case rpcTimeoutNow:
		return decodeTimeoutNowRequest(body)
	case rpcInstallSnapshot:
		return decodeInstallSnapshotRequest(body)
	}
	return nil, fmt.Errorf("%w: unknown RPC type %d", errMalformed, typ)
}

// remoteError is the error a peer's raft answered a request with.
type remoteError string

func (e remoteError) Error() string { return string(e) }

// decodeResponse decodes a response frame of typ into resp, which is of
// the type raft expects for a request of want: an rpcError frame is the
// peer's error, returned as a remoteError.
func decodeResponse(want, typ byte, body []byte, resp any) error {
	if typ == rpcError {
		return remoteError(body)
	}
	if typ != want {
		return fmt.Errorf("%w: response of type %d to a request of type %d", errMalformed, typ, want)
	}
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		return decodeAppendEntriesResponse(body, r)
	case *raft.RequestVoteResponse:
		return decodeRequestVoteResponse(body, r)
	case *raft.RequestPreVoteResponse:
		return decodeRequestPreVoteResponse(body, r)
	case *raft.TimeoutNowResponse:
		return decodeTimeoutNowResponse(body, r)
	case *raft.InstallSnapshotResponse:
		return decodeInstallSnapshotResponse(body, r)
	}
	panic(fmt.Sprintf("cell: no decoding for raft response %T", resp))
}

// isHeartbeat reports whether r is a leader's heartbeat, which raft
// handles without its main loop (its heartbeat handler): as
// hashicorp/raft's NetworkTransport tells one.
func isHeartbeat(r *raft.AppendEntriesRequest) bool {
	leader := r.Addr
	if len(leader) == 0 {
		leader = r.Leader
	}
	return r.Term != 0 && leader != nil && r.PrevLogEntry == 0 && r.PrevLogTerm == 0 &&
		len(r.Entries) == 0 && r.LeaderCommitIndex == 0
}

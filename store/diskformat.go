package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// The bytes of a disk log (STORAGE.md is the reference; this file is the
// only code that reads or writes them).
//
// A log is a directory of segment files, each with a sparse index once it
// is sealed, and a checkpoint:
//
//	<base>.seg   header, then records; base is the first sequence number,
//	             20 decimal digits
//	<base>.idx   sparse index of a sealed segment (rebuilt if missing)
//	checkpoint   epoch, last synced sequence number, first retained
//
// Integers are little-endian. Checksums are CRC-32C (Castagnoli).
//
// Segment header (48 bytes):
//
//	0  magic "huddlseg"   8  version u32   12 flags u32 (0)
//	16 epoch u64          24 base u64      32 prev_time i64
//	40 reserved u32 (0)   44 crc u32 of bytes 0..44
//
// Record:
//
//	0 len u32: payload bytes, 1..maxRecord
//	4 crc u32: CRC-32C of the 4 length bytes, then the payload
//	8 payload: kind u8 (1: messages), seq u64, time i64,
//	  senders uvarint, each: fingerprint [32], name_len uvarint, name
//	  count uvarint (>= 1), each message:
//	    dt uvarint (0 for the first; then time minus the previous message's, >= 1)
//	    id [16], sender uvarint (index in the segment's dictionary),
//	    body_len uvarint, body
//
// The senders a record defines extend its segment's dictionary, numbered
// from 0 in the order they are defined, before its messages refer to them.

// Format version written, and the newest this code reads.
const diskVersion = 1

var (
	segMagic = [8]byte{'h', 'u', 'd', 'd', 'l', 's', 'e', 'g'}
	idxMagic = [8]byte{'h', 'u', 'd', 'd', 'l', 'i', 'd', 'x'}
	cptMagic = [8]byte{'h', 'u', 'd', 'd', 'l', 'c', 'p', 't'}
)

const (
	segHeaderSize = 48
	recHeaderSize = 8
	// recMessages is the kind of a record of messages, the only kind.
	recMessages = 1
	// minPayload is the smallest valid payload: kind, seq, time, no
	// senders, count 1, and a message with an empty body and sender 0.
	minPayload = 1 + 8 + 8 + 1 + 1 + (1 + 16 + 1 + 1)
	// maxRecord bounds a record's payload; a reader checks a length
	// against it before allocating anything.
	maxRecord = 1 << 30
	// maxName bounds a sender's name in a record (wire names are far
	// shorter).
	maxName = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of reading a log's files. Each is wrapped with the file and the
// offset where it was found.
var (
	// ErrCorrupt: bytes on disk are not what was written (a checksum or a
	// length does not match, or records do not follow on). A log with a
	// corrupt file refuses to open: it would serve wrong history.
	ErrCorrupt = errors.New("store: log file corrupt")
	// ErrFutureVersion: a file was written by a newer format version than
	// this code reads.
	ErrFutureVersion = errors.New("store: log file from a newer format version")
)

// segHeader is a segment file's header.
type segHeader struct {
	epoch    uint64
	base     uint64 // sequence number of the segment's first message
	prevTime int64  // time of message base-1; 0 if none
}

func (h *segHeader) encode(b []byte) []byte {
	var p [segHeaderSize]byte
	copy(p[0:8], segMagic[:])
	binary.LittleEndian.PutUint32(p[8:], diskVersion)
	binary.LittleEndian.PutUint64(p[16:], h.epoch)
	binary.LittleEndian.PutUint64(p[24:], h.base)
	binary.LittleEndian.PutUint64(p[32:], uint64(h.prevTime))
	binary.LittleEndian.PutUint32(p[44:], crc32.Checksum(p[:44], castagnoli))
	return append(b, p[:]...)
}

// decodeSegHeader parses a segment header. Errors: ErrCorrupt (short, bad
// magic or checksum, nonzero reserved fields, base 0), ErrFutureVersion.
func decodeSegHeader(p []byte) (segHeader, error) {
	if len(p) < segHeaderSize {
		return segHeader{}, fmt.Errorf("header of %d bytes, want %d: %w", len(p), segHeaderSize, ErrCorrupt)
	}
	if [8]byte(p[0:8]) != segMagic {
		return segHeader{}, fmt.Errorf("not a segment file (magic %q): %w", p[0:8], ErrCorrupt)
	}
	if crc32.Checksum(p[:44], castagnoli) != binary.LittleEndian.Uint32(p[44:]) {
		return segHeader{}, fmt.Errorf("header checksum mismatch: %w", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(p[8:]); v != diskVersion {
		return segHeader{}, fmt.Errorf("format version %d, this huddle reads %d: %w", v, diskVersion, ErrFutureVersion)
	}
	h := segHeader{
		epoch:    binary.LittleEndian.Uint64(p[16:]),
		base:     binary.LittleEndian.Uint64(p[24:]),
		prevTime: int64(binary.LittleEndian.Uint64(p[32:])),
	}
	if binary.LittleEndian.Uint32(p[12:]) != 0 || binary.LittleEndian.Uint32(p[40:]) != 0 || h.base == 0 || h.epoch == 0 {
		return segHeader{}, fmt.Errorf("header fields out of range: %w", ErrCorrupt)
	}
	return h, nil
}

// recordEncoder encodes records for one segment, keeping its sender
// dictionary.
type recordEncoder struct {
	dict map[Sender]uint32
	// added are the senders the record being encoded defines, so that a
	// record that is not written can be taken back (undo).
	added []Sender
}

func newRecordEncoder() *recordEncoder {
	return &recordEncoder{dict: make(map[Sender]uint32)}
}

// encode appends batch as one record to b. The senders it defines stay in
// the dictionary until undo.
func (e *recordEncoder) encode(b []byte, batch []Entry) []byte {
	e.added = e.added[:0]
	start := len(b)
	b = append(b, make([]byte, recHeaderSize)...)
	b = append(b, recMessages)
	b = binary.LittleEndian.AppendUint64(b, batch[0].Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(batch[0].Time))
	// Senders first: count the new ones, then define them. A batch holds
	// runs of messages from one sender (clients batch their sends): a
	// message from the sender of the one before needs no lookup.
	for i := range batch {
		f := &batch[i].From
		if i > 0 && *f == batch[i-1].From {
			continue
		}
		if _, ok := e.dict[*f]; !ok {
			e.dict[*f] = uint32(len(e.dict))
			e.added = append(e.added, *f)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.added)))
	for i := range e.added {
		s := &e.added[i]
		b = append(b, s.Fingerprint[:]...)
		b = binary.AppendUvarint(b, uint64(len(s.Name)))
		b = append(b, s.Name...)
	}
	b = binary.AppendUvarint(b, uint64(len(batch)))
	prev := batch[0].Time
	var from uint32
	for i := range batch {
		m := &batch[i]
		b = binary.AppendUvarint(b, uint64(m.Time-prev))
		prev = m.Time
		b = append(b, m.ID[:]...)
		if i == 0 || m.From != batch[i-1].From {
			from = e.dict[m.From]
		}
		b = binary.AppendUvarint(b, uint64(from))
		b = binary.AppendUvarint(b, uint64(len(m.Body)))
		b = append(b, m.Body...)
	}
	n := len(b) - start - recHeaderSize
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	c := crc32.Update(0, castagnoli, b[start:start+4])
	c = crc32.Update(c, castagnoli, b[start+recHeaderSize:])
	binary.LittleEndian.PutUint32(b[start+4:], c)
	return b
}

// undo forgets the senders the last encode defined: its record was not
// written.
func (e *recordEncoder) undo() {
	for _, s := range e.added {
		delete(e.dict, s)
	}
	e.added = e.added[:0]
}

// recordSize bounds from above the encoding of batch as a record, with
// every sender new.
func recordSize(batch []Entry) int {
	n := recHeaderSize + 1 + 8 + 8 + binary.MaxVarintLen64*2
	for i := range batch {
		n += 3*binary.MaxVarintLen64 + 16 + 32 + binary.MaxVarintLen64 + len(batch[i].From.Name) + len(batch[i].Body)
	}
	return n
}

// frame reads the record at the start of p: it returns its payload and the
// bytes it takes. short is set when p ends before the record does (its
// length, if readable, runs past p): at a segment's end, a torn tail.
// Otherwise a bad length or checksum is ErrCorrupt.
func frame(p []byte) (payload []byte, size int, short bool, err error) {
	if len(p) < recHeaderSize {
		return nil, 0, true, fmt.Errorf("record header cut short: %w", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(p)
	if n < minPayload || n > maxRecord {
		return nil, 0, false, fmt.Errorf("record length %d out of range: %w", n, ErrCorrupt)
	}
	if uint64(len(p)-recHeaderSize) < uint64(n) {
		return nil, 0, true, fmt.Errorf("record of %d bytes cut short at %d: %w", n, len(p)-recHeaderSize, ErrCorrupt)
	}
	payload = p[recHeaderSize : recHeaderSize+int(n)]
	c := crc32.Update(0, castagnoli, p[:4])
	c = crc32.Update(c, castagnoli, payload)
	if c != binary.LittleEndian.Uint32(p[4:]) {
		return nil, 0, false, fmt.Errorf("record checksum mismatch: %w", ErrCorrupt)
	}
	return payload, recHeaderSize + int(n), false, nil
}

// recordDecoder decodes the records of one segment, keeping its sender
// dictionary.
type recordDecoder struct {
	dict []Sender
	// Of the last record decoded, per message: its sender's index in dict,
	// and where its body starts in the payload (a read back maps bodies in
	// place: mapped.go).
	from   []uint32
	bodyAt []uint32
}

// decode parses a record's payload (checked by frame) into entries appended
// to dst; bodies alias payload. The record must follow on from seq and t
// (the previous message's; seq 0 for none): its first message is seq+1,
// later than t. Errors wrap ErrCorrupt.
func (d *recordDecoder) decode(payload []byte, seq uint64, t int64, dst []Entry) ([]Entry, error) {
	r := reader{p: payload}
	if k := r.byte(); k != recMessages {
		return dst, fmt.Errorf("record kind %d: %w", k, ErrCorrupt)
	}
	first, time := r.u64(), int64(r.u64())
	if r.err == nil && (first != seq+1 || time <= t && seq > 0) {
		return dst, fmt.Errorf("record starts at seq %d time %d, want seq %d after time %d: %w", first, time, seq+1, t, ErrCorrupt)
	}
	ns := r.uvarint(uint64(len(payload)))
	defined := len(d.dict)
	for i := uint64(0); i < ns && r.err == nil; i++ {
		var s Sender
		copy(s.Fingerprint[:], r.bytes(32))
		s.Name = string(r.bytes(int(r.uvarint(maxName))))
		d.dict = append(d.dict, s)
	}
	count := r.uvarint(uint64(len(payload)))
	if r.err == nil && count == 0 {
		r.err = errors.New("no messages")
	}
	start := len(dst)
	d.from, d.bodyAt = d.from[:0], d.bodyAt[:0]
	for i := uint64(0); i < count && r.err == nil; i++ {
		dt := r.uvarint(math.MaxInt64)
		if r.err == nil && (i == 0) != (dt == 0) {
			r.err = fmt.Errorf("message %d time delta %d", i, dt)
			break
		}
		if dt > uint64(math.MaxInt64-time) {
			r.err = fmt.Errorf("message %d time overflows", i)
			break
		}
		time += int64(dt)
		e := Entry{Seq: first + i, Time: time}
		copy(e.ID[:], r.bytes(16))
		if ix := r.uvarint(uint64(len(d.dict))); r.err == nil {
			if ix >= uint64(len(d.dict)) {
				r.err = fmt.Errorf("sender %d of %d", ix, len(d.dict))
				break
			}
			e.From = d.dict[ix]
			d.from = append(d.from, uint32(ix))
		}
		n := int(r.uvarint(uint64(len(payload))))
		d.bodyAt = append(d.bodyAt, uint32(len(payload)-len(r.p)))
		e.Body = r.bytes(n)
		dst = append(dst, e)
	}
	if r.err == nil && len(r.p) != 0 {
		r.err = fmt.Errorf("%d bytes after the last message", len(r.p))
	}
	if r.err != nil {
		d.dict = d.dict[:defined]
		return dst[:start], fmt.Errorf("record at seq %d: %v: %w", first, r.err, ErrCorrupt)
	}
	return dst, nil
}

// reader reads a payload; the first error sticks and later reads return
// zeros.
type reader struct {
	p   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = errors.New(what)
	}
	r.p = nil
}

func (r *reader) byte() byte {
	if len(r.p) < 1 {
		r.fail("payload cut short")
		return 0
	}
	b := r.p[0]
	r.p = r.p[1:]
	return b
}

func (r *reader) u64() uint64 {
	if len(r.p) < 8 {
		r.fail("payload cut short")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.p)
	r.p = r.p[8:]
	return v
}

// uvarint reads a uvarint of at most max.
func (r *reader) uvarint(max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.p)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	if v > max {
		r.fail(fmt.Sprintf("value %d over %d", v, max))
		return 0
	}
	r.p = r.p[n:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.p) < n {
		r.fail("payload cut short")
		return nil
	}
	b := r.p[:n:n]
	r.p = r.p[n:]
	return b
}

// Sparse index of a sealed segment: a header (48 bytes), entries, a
// trailer.
//
//	0  magic "huddlidx"  8  version u32  12 flags u32 (0)
//	16 base u64          24 last u64 (last sequence number in the segment)
//	32 seg_len u64 (the segment file's length)
//	40 entries u32       44 crc u32 of bytes 0..44
//	then entries x {seq u64, time i64, offset u64}: the first message of a
//	record, at that file offset; one at least every indexInterval bytes
//	then crc u32 of the entries
type idxEntry struct {
	seq    uint64
	time   int64
	offset int64
}

const (
	idxHeaderSize = 48
	idxEntrySize  = 24
	// indexInterval is the most segment bytes between two index entries:
	// a reader that finds a position in the index reads at most about
	// this much more to reach it.
	indexInterval = 4096
)

type segIndex struct {
	base, last uint64
	segLen     int64
	entries    []idxEntry
}

func (x *segIndex) encode(b []byte) []byte {
	var h [idxHeaderSize]byte
	copy(h[0:8], idxMagic[:])
	binary.LittleEndian.PutUint32(h[8:], diskVersion)
	binary.LittleEndian.PutUint64(h[16:], x.base)
	binary.LittleEndian.PutUint64(h[24:], x.last)
	binary.LittleEndian.PutUint64(h[32:], uint64(x.segLen))
	binary.LittleEndian.PutUint32(h[40:], uint32(len(x.entries)))
	binary.LittleEndian.PutUint32(h[44:], crc32.Checksum(h[:44], castagnoli))
	b = append(b, h[:]...)
	start := len(b)
	for _, e := range x.entries {
		b = binary.LittleEndian.AppendUint64(b, e.seq)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.time))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.offset))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// decodeIndex parses an index file. Errors wrap ErrCorrupt or
// ErrFutureVersion.
func decodeIndex(p []byte) (segIndex, error) {
	if len(p) < idxHeaderSize+4 || [8]byte(p[0:8]) != idxMagic {
		return segIndex{}, fmt.Errorf("not an index file: %w", ErrCorrupt)
	}
	if crc32.Checksum(p[:44], castagnoli) != binary.LittleEndian.Uint32(p[44:]) {
		return segIndex{}, fmt.Errorf("index header checksum mismatch: %w", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(p[8:]); v != diskVersion {
		return segIndex{}, fmt.Errorf("index format version %d, this huddle reads %d: %w", v, diskVersion, ErrFutureVersion)
	}
	x := segIndex{
		base:   binary.LittleEndian.Uint64(p[16:]),
		last:   binary.LittleEndian.Uint64(p[24:]),
		segLen: int64(binary.LittleEndian.Uint64(p[32:])),
	}
	n := binary.LittleEndian.Uint32(p[40:])
	body := p[idxHeaderSize:]
	if binary.LittleEndian.Uint32(p[12:]) != 0 || uint64(len(body)) != uint64(n)*idxEntrySize+4 || x.segLen < segHeaderSize || x.last < x.base-1 {
		return segIndex{}, fmt.Errorf("index of %d entries in %d bytes: %w", n, len(body), ErrCorrupt)
	}
	if crc32.Checksum(body[:len(body)-4], castagnoli) != binary.LittleEndian.Uint32(body[len(body)-4:]) {
		return segIndex{}, fmt.Errorf("index checksum mismatch: %w", ErrCorrupt)
	}
	x.entries = make([]idxEntry, n)
	for i := range x.entries {
		q := body[i*idxEntrySize:]
		e := idxEntry{seq: binary.LittleEndian.Uint64(q), time: int64(binary.LittleEndian.Uint64(q[8:])), offset: int64(binary.LittleEndian.Uint64(q[16:]))}
		if e.seq < x.base || e.seq > x.last || e.offset < segHeaderSize || e.offset >= x.segLen ||
			i > 0 && (e.seq <= x.entries[i-1].seq || e.time <= x.entries[i-1].time || e.offset <= x.entries[i-1].offset) {
			return segIndex{}, fmt.Errorf("index entry %d out of order: %w", i, ErrCorrupt)
		}
		x.entries[i] = e
	}
	return x, nil
}

// find returns the offset of the record holding seq, or of the last
// indexed one before it (scan from there), and ok false if seq precedes
// every entry.
func (x *segIndex) find(seq uint64) (idxEntry, bool) {
	lo, hi := 0, len(x.entries)
	for lo < hi {
		m := (lo + hi) / 2
		if x.entries[m].seq <= seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return idxEntry{}, false
	}
	return x.entries[lo-1], true
}

// Checkpoint (48 bytes), rewritten in place after each fsync:
//
//	0  magic "huddlcpt"  8  version u32  12 flags u32 (0)
//	16 epoch u64         24 synced u64 (last sequence number known on the device)
//	32 first u64 (first sequence number retained; 0: none yet)
//	40 reserved u32 (0)  44 crc u32 of bytes 0..44
type checkpoint struct {
	epoch  uint64
	synced uint64
	first  uint64
}

const cptSize = 48

func (c *checkpoint) encode() [cptSize]byte {
	var p [cptSize]byte
	copy(p[0:8], cptMagic[:])
	binary.LittleEndian.PutUint32(p[8:], diskVersion)
	binary.LittleEndian.PutUint64(p[16:], c.epoch)
	binary.LittleEndian.PutUint64(p[24:], c.synced)
	binary.LittleEndian.PutUint64(p[32:], c.first)
	binary.LittleEndian.PutUint32(p[44:], crc32.Checksum(p[:44], castagnoli))
	return p
}

func decodeCheckpoint(p []byte) (checkpoint, error) {
	if len(p) != cptSize || [8]byte(p[0:8]) != cptMagic {
		return checkpoint{}, fmt.Errorf("not a checkpoint file: %w", ErrCorrupt)
	}
	if crc32.Checksum(p[:44], castagnoli) != binary.LittleEndian.Uint32(p[44:]) {
		return checkpoint{}, fmt.Errorf("checkpoint checksum mismatch: %w", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(p[8:]); v != diskVersion {
		return checkpoint{}, fmt.Errorf("checkpoint format version %d, this huddle reads %d: %w", v, diskVersion, ErrFutureVersion)
	}
	c := checkpoint{epoch: binary.LittleEndian.Uint64(p[16:]), synced: binary.LittleEndian.Uint64(p[24:]), first: binary.LittleEndian.Uint64(p[32:])}
	if binary.LittleEndian.Uint32(p[12:]) != 0 || binary.LittleEndian.Uint32(p[40:]) != 0 || c.epoch == 0 {
		return checkpoint{}, fmt.Errorf("checkpoint fields out of range: %w", ErrCorrupt)
	}
	return c, nil
}

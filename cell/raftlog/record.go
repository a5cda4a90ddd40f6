package raftlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// MaxRecordBytes is the longest record (its length field): a raft entry's
// data and extensions together may be up to 64 MiB less 29 bytes.
const MaxRecordBytes = 64 << 20

const (
	// recordPrefix is the length and checksum before a record's body.
	recordPrefix = 8
	// recordFixed is the body's fields before the extensions.
	recordFixed = 8 + 8 + 1 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errShort says the bytes end inside a record: a torn tail if at the end
// of the last segment.
var errShort = errors.New("record cut short")

// appendRecord appends l's record to buf.
func appendRecord(buf []byte, l *raft.Log) []byte {
	n := recordFixed + len(l.Extensions) + len(l.Data)
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	buf = append(buf, 0, 0, 0, 0) // the checksum, below
	buf = binary.LittleEndian.AppendUint64(buf, l.Index)
	buf = binary.LittleEndian.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(at))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Extensions)))
	buf = append(buf, l.Extensions...)
	buf = append(buf, l.Data...)
	binary.LittleEndian.PutUint32(buf[start+4:], recordSum(buf[start:]))
	return buf
}

// recordLen is the bytes l's record takes.
func recordLen(l *raft.Log) int {
	return recordPrefix + recordFixed + len(l.Extensions) + len(l.Data)
}

// recordSum is the checksum of the record rec: its length field and body.
func recordSum(rec []byte) uint32 {
	sum := crc32.Update(0, castagnoli, rec[:4])
	return crc32.Update(sum, castagnoli, rec[recordPrefix:])
}

// decodeRecord decodes the record at the start of b into l, whose Data and
// Extensions then alias b, and returns the bytes it took. Errors: errShort
// if b ends inside the record, and a description of what is wrong for a
// record that is not one (a length out of bounds, a checksum that fails).
func decodeRecord(b []byte, l *raft.Log) (int, error) {
	if len(b) < recordPrefix {
		return 0, errShort
	}
	n := binary.LittleEndian.Uint32(b)
	if n < recordFixed || n > MaxRecordBytes {
		return 0, errors.New("record length out of bounds")
	}
	end := recordPrefix + int(n)
	if len(b) < end {
		return 0, errShort
	}
	rec := b[:end]
	if recordSum(rec) != binary.LittleEndian.Uint32(rec[4:]) {
		return 0, errors.New("record checksum mismatch")
	}
	body := rec[recordPrefix:]
	ext := binary.LittleEndian.Uint32(body[25:])
	if uint64(ext) > uint64(n-recordFixed) {
		return 0, errors.New("extensions longer than the record")
	}
	*l = raft.Log{
		Index: binary.LittleEndian.Uint64(body),
		Term:  binary.LittleEndian.Uint64(body[8:]),
		Type:  raft.LogType(body[16]),
	}
	if at := int64(binary.LittleEndian.Uint64(body[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	if ext > 0 {
		l.Extensions = body[recordFixed : recordFixed+ext : recordFixed+ext]
	}
	if data := body[recordFixed+ext:]; len(data) > 0 {
		l.Data = data
	}
	return end, nil
}

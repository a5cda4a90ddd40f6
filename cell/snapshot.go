package cell

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A snapshot of a cell's state machine records what is applied, not the
// messages: the logs are durable on their own. Its layout (STORAGE.md,
// "Cell snapshots"), integers as in commands:
//
//	magic "huddlcel", version u32 (1), groups uvarint, groups x (
//	    group [16], epoch u64, dedup_window uvarint, private u8,
//	    [secret_sha256 [32]], name_len uvarint, name,
//	    seq u64, time i64, members uvarint, members x (
//	        fingerprint [32], joined i64, name_len uvarint, name)),
//	crc32c u32 of everything before it
//
// seq and time are where the group's log stood: every message up to seq
// is in the log, on the device, when the snapshot is written.
const (
	snapMagic   = "huddlcel"
	snapVersion = 1
	// maxSnapBytes bounds a snapshot read back: groups of a cell are few,
	// and each holds at most its members.
	maxSnapBytes = 256 << 20
)

// ErrBadSnapshot: a snapshot is not one this daemon reads.
var ErrBadSnapshot = errors.New("cell: unreadable snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeSnapshot(dst []byte, groups []snapGroup) []byte {
	start := len(dst)
	dst = append(dst, snapMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, snapVersion)
	dst = binary.AppendUvarint(dst, uint64(len(groups)))
	for _, g := range groups {
		dst = encodeCreate(dst, g.spec)[:] // kind byte included: skipped on read
		dst = binary.LittleEndian.AppendUint64(dst, g.seq)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(g.time))
		dst = binary.AppendUvarint(dst, uint64(len(g.members)))
		for _, m := range g.members {
			dst = append(dst, m.Fingerprint[:]...)
			dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Joined))
			dst = appendString(dst, m.Name)
		}
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// readSnapshot reads a snapshot written by encodeSnapshot. Errors wrap
// ErrBadSnapshot.
func readSnapshot(r io.Reader) ([]snapGroup, error) {
	p, err := io.ReadAll(io.LimitReader(r, maxSnapBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return decodeSnapshot(p)
}

func decodeSnapshot(p []byte) ([]snapGroup, error) {
	switch {
	case len(p) > maxSnapBytes:
		return nil, fmt.Errorf("%w: over %d bytes", ErrBadSnapshot, maxSnapBytes)
	case len(p) < len(snapMagic)+8 || string(p[:len(snapMagic)]) != snapMagic:
		return nil, fmt.Errorf("%w: not a cell snapshot", ErrBadSnapshot)
	}
	body, sum := p[:len(p)-4], binary.LittleEndian.Uint32(p[len(p)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if v := binary.LittleEndian.Uint32(body[len(snapMagic):]); v != snapVersion {
		return nil, fmt.Errorf("%w: version %d, this daemon reads %d", ErrBadSnapshot, v, snapVersion)
	}
	r := reader{p: body[len(snapMagic)+4:]}
	// Each group takes at least 46 bytes, each member 41.
	n := r.uvarint("groups", uint64(len(r.p)/46))
	groups := make([]snapGroup, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var g snapGroup
		if r.u8("kind") != cmdCreate {
			r.fail("group %d: not a group", i)
		}
		r.fixed(g.spec.ID[:], "group")
		g.spec.Epoch = r.u64("epoch")
		g.spec.DedupWindow = int(r.uvarint("dedup window", maxDedupWindow))
		switch r.u8("private") {
		case 0:
		case 1:
			g.spec.Private = true
			r.fixed(g.spec.SecretSHA256[:], "secret digest")
		default:
			r.fail("private: want 0 or 1")
		}
		g.spec.Name = r.name("name")
		g.seq = r.u64("seq")
		g.time = int64(r.u64("time"))
		nm := r.uvarint("members", uint64(len(r.p)/41))
		g.members = make([]Member, 0, nm)
		for j := uint64(0); j < nm && r.err == nil; j++ {
			var m Member
			r.fixed(m.Fingerprint[:], "member")
			m.Joined = int64(r.u64("joined"))
			m.Name = r.name("member name")
			g.members = append(g.members, m)
		}
		groups = append(groups, g)
	}
	if r.err == nil && len(r.p) != 0 {
		r.fail("%d bytes after the groups", len(r.p))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, r.err)
	}
	return groups, nil
}

package cell

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/hashicorp/raft"
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

// checkedSnapshots is raft's snapshot store, which keeps a snapshot only if
// its bytes are a cell snapshot: its magic, its version and its checksum,
// checked as they are written (checkedSink).
//
// Why: raft writes the bytes of an InstallSnapshot to its store before the
// state machine reads them, and the store keeps the newest two. Two
// snapshots of garbage from a member's key (a bug, a stolen key) took the
// place of the good ones: the state machine refused each and the member
// ran on, but at its next start raft found no snapshot it could restore,
// and would not start.
type checkedSnapshots struct {
	raft.SnapshotStore
}

func (s checkedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &checkedSink{SnapshotSink: sink, sum: crc32.New(castagnoli)}, nil
}

// checkedSink passes a snapshot's bytes to the store's sink, and checks
// them on the way: Close cancels a snapshot that is not a cell snapshot,
// and returns an error wrapping ErrBadSnapshot.
type checkedSink struct {
	raft.SnapshotSink
	head []byte      // the first bytes: magic and version
	sum  hash.Hash32 // of every byte but the last four
	tail [4]byte     // the last four bytes written, held from sum
	n    int64
}

func (c *checkedSink) Write(p []byte) (int, error) {
	k, err := c.SnapshotSink.Write(p)
	c.take(p[:k])
	return k, err
}

// take checks written: it keeps the head, and sums every byte but the last
// four seen so far.
func (c *checkedSink) take(written []byte) {
	if need := len(snapMagic) + 4 - len(c.head); need > 0 {
		c.head = append(c.head, written[:min(need, len(written))]...)
	}
	held := int(min(c.n, 4))
	c.n += int64(len(written))
	if len(written) >= 4 {
		c.sum.Write(c.tail[:held])
		c.sum.Write(written[:len(written)-4])
		copy(c.tail[:], written[len(written)-4:])
		return
	}
	all := append(c.tail[:held:held], written...)
	if over := len(all) - 4; over > 0 {
		c.sum.Write(all[:over])
		all = all[over:]
	}
	copy(c.tail[:], all)
}

func (c *checkedSink) Close() error {
	var err error
	switch {
	case c.n > maxSnapBytes:
		err = fmt.Errorf("over %d bytes", maxSnapBytes)
	case c.n < int64(len(snapMagic))+8 || !bytes.Equal(c.head[:len(snapMagic)], []byte(snapMagic)):
		err = errors.New("not a cell snapshot")
	case binary.LittleEndian.Uint32(c.head[len(snapMagic):]) != snapVersion:
		err = fmt.Errorf("version %d, this daemon reads %d", binary.LittleEndian.Uint32(c.head[len(snapMagic):]), snapVersion)
	case c.sum.Sum32() != binary.LittleEndian.Uint32(c.tail[:]):
		err = errors.New("checksum mismatch")
	}
	if err != nil {
		c.SnapshotSink.Cancel()
		return fmt.Errorf("%w: not kept: %v", ErrBadSnapshot, err)
	}
	return c.SnapshotSink.Close()
}

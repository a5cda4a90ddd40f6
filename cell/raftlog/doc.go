// Package raftlog keeps a cell member's raft state on disk: raft's log
// appended to segment files (a raft.LogStore) and its term and vote in a
// small file replaced atomically (a raft.StableStore).
//
// # Files
//
// A store's directory holds:
//
//	00000000000000000001.seg  segments of the log, each named by the index of its first record
//	state                     the term, the vote and the log's head (see below)
//	state.tmp                 a state file being created (removed at open)
//
// A segment starts with a 24-byte header: the magic "hudrlog\x00", the
// format version (uint32, 1), four zero bytes, and the index of the
// segment's first record (uint64, as in its name). Records follow, one per
// raft entry, in index order, with no gap, across segments too:
//
//	length   uint32  bytes after the checksum: 29 + extlen + len(data)
//	crc      uint32  CRC-32C (Castagnoli) of the length field and of everything after the crc
//	index    uint64  raft.Log.Index
//	term     uint64  raft.Log.Term
//	type     uint8   raft.Log.Type
//	appended int64   raft.Log.AppendedAt in Unix nanoseconds, 0 for the zero time
//	extlen   uint32  length of the extensions
//	ext      [extlen]byte  raft.Log.Extensions
//	data     [...]byte     raft.Log.Data
//
// Integers are little-endian. A record is at most MaxRecordBytes long.
// StoreLogs encodes all its entries into one buffer and writes it with one
// write call at the end of the last segment; a segment past
// Options.SegmentBytes is closed (fsynced) and the batch starts a new one.
//
// The state file is two slots of 4096 bytes, written in turn. A slot
// holds the magic "hudrstat", the version (uint32, 2), a sequence (uint64,
// one more each write), the body's length (uint32), the body: the head
// (uint64: records below it are deleted, 0 for none), the number of keys
// (uint32), each key and value (uint32 length, bytes; uint32 length,
// bytes); then a CRC-32C of all that (uint32), and zeros to the slot's
// end. The state in force is the slot with the higher sequence of those
// that check out. A write overwrites the older slot in place and fsyncs
// the file: a vote or a term is on the device before raft acts on it,
// whatever the log's fsync policy, as raft's safety needs; a crash during
// the write leaves that slot failing its checksum, and the state before
// in force (raft never acted on the one cut). Writing in place takes no
// new space: a member whose disk is full still saves its term, where
// hashicorp/raft stops the process on a failure to. The file is created
// (and a version 1 file, one record rewritten through state.tmp and a
// rename, is converted) at Open, through state.tmp and a rename.
//
// # Deleting
//
// Raft deletes a log's head after a snapshot and a follower's suffix that
// conflicts with its leader's log. The head is moved by writing the new
// head into the state file (durably), then removing the segments wholly
// below it; the records below it in the first remaining segment stay in
// the file and are no longer served. A suffix is deleted by removing the
// segments wholly inside it and truncating the one it starts in. Deleting a
// range inside the log is refused (raft never does).
//
// # Durability and recovery
//
// With Options.Sync, StoreLogs fsyncs the segment before it returns: what
// it stored survives power loss. Without it, StoreLogs returns once its
// write reached the operating system: a kill -9 of the process loses
// nothing stored, and Sync (which the cell calls every fsync interval and
// at close) puts it on the device.
//
// Open reads every segment and checks each record's length, checksum and
// index. A torn tail of the last segment (a record cut short, or one whose
// checksum fails with no valid record after it, as an append interrupted
// by a power cut leaves) is cut off: those entries were never on the
// device, so with Sync this member never acknowledged them, and without
// Sync they are the unsynced suffix the fsync policy allows a power cut to
// lose; raft treats a member that lost a suffix of its log as one that
// lags, and its leader sends the entries again. Anything else (a bad
// record followed by a valid one, a bad record in an earlier segment, a
// gap between segments, a bad state file) is corruption in the middle of
// what was stored: Open refuses it with an error naming the file and
// offset (ErrCorrupt), rather than serve a log with a hole.
package raftlog

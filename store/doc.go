// Package store is the log of one group: an append-only run of
// messages, each with a gapless sequence number (from 1), a server
// timestamp (Unix ns, strictly increasing) and its sender, queried by
// sequence ([Log.After]) or by time ([Log.Since]).
//
// # Sequencing
//
// The log stores what it is given. A [Sequencer] is the one step that
// decides a batch's sequence numbers and timestamps (the next numbers, and
// max(now, previous+1), from a clock reading its caller passes in); the
// caller asks the log which of the batch's IDs it already holds
// ([Log.Lookup]), stamps the rest from the log's [Log.Tail], and appends
// them ([Log.Append]), which checks that they follow on and stamps
// nothing. Nothing in the log reads a clock: retention by age is applied as
// of the newest message appended, or of the time [Log.Expire] is given. A
// batch stamped once is therefore stored as the same messages by every log
// it is appended to.
//
// # Identity
//
// A log has an epoch ([Log.Epoch]) naming its history: sequence numbers
// are meaningful only within one. A [Log] lives in memory, so each [New]
// starts a new history with a new random epoch; a [DiskLog] keeps its
// epoch in its files.
//
// # On disk
//
// A [DiskLog] ([Open]) is a Log whose every batch is first written as one
// record to a segment file (the format: STORAGE.md, and diskformat.go, the
// only code that reads or writes it). The in-memory Log still serves every
// query: its columns index every message held, bodies appended since the
// open stay in memory within retention, and the history read back at the
// open is served from the segment files, mapped read-only (a 4 B body start
// column more, and the bodies in the page cache: mapped.go). The files are
// otherwise read only when the log is opened, and so a durable log answers
// as fast as a memory one and costs the same memory or less,
// plus the page cache the kernel keeps of its files. Its [FsyncPolicy]
// says what an append promises: written to the OS (fsynced every interval),
// or on the device, with one fsync for every append waiting for it.
//
// # Layout
//
// The log is a list of segments, oldest first. A segment holds up to a fixed
// number of messages in four parallel columns (8 B time, 4 B body end offset,
// 4 B sender, 16 B ID: 32 B per message), one byte slab holding the bodies
// back to back (a body's start is the previous message's end), and a sender
// dictionary: each sender (key fingerprint and display name at the time)
// of the segment's messages once, which the sender column indexes. A
// message is thus self-contained within its segment. The dictionaries
// point to senders interned for the whole log, counted by the segments
// that hold them, so a sender costs one object while any held message
// names it, and a pointer per segment (see senders.go). A million messages
// are a few hundred heap objects, not a million. A segment
// is sealed when it holds its quota of messages, or when the next body would
// take its slab past its byte quota (see [Config]); the next message opens a
// new segment. Only the newest segment (the active one) is ever written.
//
// # Publication and readers
//
// Writers serialise on a mutex; readers take no lock at all and never make a
// writer wait. The list of segments is copy-on-write: adding or evicting a
// segment publishes a new immutable slice through an atomic pointer. Within
// the active segment, a writer only writes slots beyond the committed prefix,
// then publishes the last committed sequence number with one atomic store at
// the end of each batch, so a batch becomes visible all at once. A reader loads
// the segment list, then the last committed sequence number, then the list
// again (retrying in the rare case a segment was added or evicted in between),
// which gives it a consistent snapshot: a gapless, ordered prefix of the log.
//
// When a segment's columns or slab must grow (only the first segments of a
// young log grow; later ones are sized from their predecessor), the writer
// copies them into larger arrays and publishes those atomically. Memory a
// reader may have been handed is never written again, so a returned
// [Message].Body may alias the slab: it is read-only, and stays valid for as
// long as the caller holds it (the garbage collector keeps the slab alive,
// even after the segment is evicted).
//
// # Queries
//
// Both queries cost O(log n) to the first match: sequence numbers map to a
// segment by binary search over the segments' first sequence numbers and to a
// slot arithmetically; timestamps are strictly increasing, so time queries
// binary-search the segments and then the segment's time column.
//
// # Retention
//
// Retention evicts whole segments, oldest first; the active segment is never
// evicted for count or bytes. The message and byte limits are hard: after
// [Log.Append] returns, the log holds at most MaxMessages messages and
// MaxBytes body bytes, so it may hold up to one segment's worth less than a
// limit. To keep that granularity fine, a segment's quotas are capped at an
// eighth of the limits (see [Config.SegmentSize]). The age limit is soft: a
// segment is evicted once its newest message is older than MaxAge, so a
// message may outlive MaxAge while younger messages share its segment.
// Queries report the first sequence number still held ([Cursor].First), so a
// caller can tell that messages it asked for are gone.
//
// # Idempotency
//
// The IDs of the most recent DedupWindow stored messages are remembered in a
// ring, with the sequence number and time first assigned to each, indexed by
// an open-addressing hash table. [Log.Lookup] answers from it: an entry whose
// ID is remembered is acknowledged with the original sequence number and time
// and is not stored again, even if the original has since been evicted. The
// window is the one the batch finds when it is looked up, and a batch that
// repeats an ID stores it once ([Sequencer.Stamp]). The memory this costs is
// bounded by the window, not by the traffic: at most 64 bytes per remembered
// ID (32 B in the ring, 16–32 B of index), so at most 4 MiB at the default
// window of 65536; it grows with use, up to that bound, so an idle log costs
// little.
package store

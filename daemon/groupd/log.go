package groupd

import (
	"time"

	"github.com/huddle-chat/huddle/store"
)

// Log is a group's message log, as the group daemon uses it: store.Log in
// memory, or store.DiskLog on disk (StorageConfig).
//
// The daemon calls Lookup, Tail and Append for one batch at a time, under
// the group's sequencing lock (sequence.go); the queries, Changed, Last and
// Stats may come at any time, from any goroutine, concurrently with them
// and with each other. A message a query returns must stay valid, body
// included, for as long as the caller holds it.
type Log interface {
	// Epoch names the log's history: sequence numbers mean something only
	// within one epoch. It changes only when history is lost.
	Epoch() uint64
	// Lookup appends to acks one ack per entry of batch: the original's
	// sequence number and time, with Duplicate set, if the log remembers a
	// message with the entry's ID; else the zero Ack.
	Lookup(batch []store.Entry, acks []store.Ack) []store.Ack
	// Remembers reports whether Lookup finds the ID of every message
	// stored after sequence number after (a send's after, PROTOCOL.md
	// §8.5): if not, an ID it does not find may have been stored and
	// forgotten since.
	Remembers(after uint64) bool
	// Tail returns the sequence number and time of the last message
	// appended, evicted or not (0, 0 for none).
	Tail() (seq uint64, time int64)
	// Append stores batch as it is stamped, all of it or none. Errors:
	// store.ErrBatchTooLarge and store.ErrBodyTooLarge when retention could
	// not hold it, store.ErrOutOfOrder when it does not follow on from
	// Tail, and whatever keeps the log from storing it.
	Append(batch []store.Entry) error
	// After appends to dst up to limit messages with Seq > seq, oldest
	// first, and says where the page ends (see store.Cursor). A closed
	// log returns store.ErrClosed: its empty page is not the end of it.
	After(seq uint64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error)
	// Since appends to dst up to limit messages with Time >= ts, oldest
	// first, and says where the page ends; store.ErrClosed as After.
	Since(ts int64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error)
	// Changed returns a channel closed by the next append of a message,
	// by the next reset (a cell's group: cell.Log's Reset), or by Close.
	Changed() <-chan struct{}
	// Last returns the last sequence number readers can see.
	Last() uint64
	// Stats returns counters for metrics and replies.
	Stats() store.Stats
	// Expire applies the log's age limit as of now.
	Expire(now time.Time)
	// Durable returns once the messages up to seq are as durable as an
	// ack promises (store.FsyncPolicy); the daemon calls it after Append,
	// outside the sequencing lock, so that one fsync serves every send
	// waiting for it. An error means they may not be: the send is refused.
	Durable(seq uint64) error
	// Close syncs and closes the log's files, if any. The daemon calls it
	// once no handler uses the log.
	Close() error
}

var (
	_ Log = (*store.Log)(nil)
	_ Log = (*store.DiskLog)(nil)
)

package store

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied to zero fields of [Config].
const (
	DefaultMaxMessages = 1_000_000
	DefaultMaxBytes    = 256 << 20 // 256 MiB
	DefaultSegmentSize = 4096
	DefaultDedupWindow = 65536
	// MaxDedupWindow is the largest DedupWindow: the index keeps 32 bits of
	// each ID's hash, enough to place it in a table of up to 2^32 slots.
	MaxDedupWindow = 1 << 30
)

// MaxBodySize is the largest body one entry may carry, whatever MaxBytes is:
// body offsets within a segment are 32-bit.
const MaxBodySize = 1<<32 - 1

// maxSegmentBytes caps a segment's byte quota so that the offsets of a
// segment holding more than one body stay below 2^32.
const maxSegmentBytes = 1 << 30

// ErrInvalidConfig is wrapped by the errors of [Config.Validate] and [New].
var ErrInvalidConfig = errors.New("store: invalid config")

// Config configures a [Log]. The zero value of each field means its default.
type Config struct {
	// MaxMessages is the most messages held; older segments are evicted to
	// stay within it. 0 means DefaultMaxMessages (1,000,000).
	MaxMessages int

	// MaxBytes is the most body bytes held; older segments are evicted to
	// stay within it. 0 means DefaultMaxBytes (256 MiB).
	MaxBytes int64

	// MaxAge evicts a segment once its newest message is older than MaxAge
	// (see [Log.Expire]). 0 means no age limit.
	MaxAge time.Duration

	// SegmentSize is the most messages per segment, the granularity of
	// eviction. 0 means DefaultSegmentSize (4096). The effective size is
	// capped at MaxMessages/8 (at least 1), so that eviction never drops more
	// than an eighth of the log. A segment is also sealed early when its
	// bodies would pass max(1, MaxBytes/8) bytes, capped at 1 GiB; a body
	// larger than that gets a segment of its own.
	SegmentSize int

	// DedupWindow is how many of the most recently stored message IDs are
	// remembered for idempotency. 0 means DefaultDedupWindow (65536); at
	// most MaxDedupWindow. It costs 64 bytes per remembered ID at the
	// default (4 MiB), at most 96 for a window not a power of two,
	// allocated as the window fills.
	DedupWindow int

	// Epoch, if not zero, is the log's epoch rather than a new random
	// one: a replica of a cell's group has the group's epoch, the same on
	// every replica. A disk log that holds another epoch fails to open
	// (ErrOtherEpoch); one whose files are lost begins again, empty, under
	// this epoch.
	Epoch uint64
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.MaxMessages < 0:
		return fmt.Errorf("%w: MaxMessages %d is negative", ErrInvalidConfig, c.MaxMessages)
	case c.MaxBytes < 0:
		return fmt.Errorf("%w: MaxBytes %d is negative", ErrInvalidConfig, c.MaxBytes)
	case c.MaxAge < 0:
		return fmt.Errorf("%w: MaxAge %v is negative", ErrInvalidConfig, c.MaxAge)
	case c.SegmentSize < 0:
		return fmt.Errorf("%w: SegmentSize %d is negative", ErrInvalidConfig, c.SegmentSize)
	case c.DedupWindow < 0:
		return fmt.Errorf("%w: DedupWindow %d is negative", ErrInvalidConfig, c.DedupWindow)
	case c.DedupWindow > MaxDedupWindow:
		return fmt.Errorf("%w: DedupWindow %d is over %d", ErrInvalidConfig, c.DedupWindow, MaxDedupWindow)
	}
	return nil
}

// Retains returns the most messages, and body bytes in all, that a log of
// c holds, its defaults applied: Append refuses a batch over either with
// ErrBatchTooLarge, since no eviction could make room for it whole.
func (c Config) Retains() (messages int, bytes int64) {
	l := c.limits()
	return l.maxMessages, l.maxBytes
}

// limits is a Config with its defaults applied and its derived quotas.
type limits struct {
	maxMessages int
	maxBytes    int64
	maxAge      int64 // ns; 0 = none
	segMessages int   // effective messages per segment
	segBytes    int   // bytes after which a segment is sealed
	dedupWindow int
}

func (c Config) limits() limits {
	l := limits{
		maxMessages: c.MaxMessages,
		maxBytes:    c.MaxBytes,
		maxAge:      int64(c.MaxAge),
		segMessages: c.SegmentSize,
		dedupWindow: c.DedupWindow,
	}
	if l.maxMessages == 0 {
		l.maxMessages = DefaultMaxMessages
	}
	if l.maxBytes == 0 {
		l.maxBytes = DefaultMaxBytes
	}
	if l.segMessages == 0 {
		l.segMessages = DefaultSegmentSize
	}
	l.segMessages = min(l.segMessages, max(1, l.maxMessages/8))
	l.segBytes = int(min(max(1, l.maxBytes/8), maxSegmentBytes))
	if l.dedupWindow == 0 {
		l.dedupWindow = DefaultDedupWindow
	}
	return l
}

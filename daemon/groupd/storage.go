package groupd

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// StorageConfig says where a group daemon keeps its groups' logs. Its zero
// value keeps them on disk under the state directory, written to the OS
// before each ack and fsynced every second.
type StorageConfig struct {
	// Memory keeps the logs in memory only: a restart loses every message
	// and begins a new epoch (clients see a reset). Off by default.
	Memory bool
	// DataDir holds the logs on disk, one directory per group
	// (logs/<uuid>/, STORAGE.md). Default: the StateDir. A DataDir other
	// than the StateDir is locked as the StateDir is, so a second daemon
	// on it refuses to start.
	DataDir string
	// Fsync is the durability policy of logs on disk (store.FsyncPolicy):
	// by default an ack means written to the OS (it survives kill -9), and
	// every second an fsync puts it on the device; Always acknowledges only
	// what an fsync covered (it survives power loss), one fsync serving
	// every send waiting for it.
	Fsync store.FsyncPolicy
	// SegmentBytes is the size of segment files on disk (0: store's
	// default, 64 MiB or an eighth of retention).
	SegmentBytes int64
}

func (c StorageConfig) validate() error {
	switch {
	case c.Fsync.Interval < 0:
		return invalid("fsync interval %v is negative", c.Fsync.Interval)
	case c.SegmentBytes < 0:
		return invalid("SegmentBytes %d is negative", c.SegmentBytes)
	}
	return nil
}

// String says what the storage is and what an ack survives, for logs.
func (c StorageConfig) String() string {
	switch {
	case c.Memory:
		return "memory: a restart loses every message"
	case c.Fsync.Always:
		return "disk, fsync always: an ack survives power loss"
	}
	return fmt.Sprintf("disk, fsync every %v: an ack survives kill -9; an OS crash or power cut loses at most the last %v", c.interval(), c.interval())
}

func (c StorageConfig) interval() time.Duration {
	return orDefault(c.Fsync.Interval, store.DefaultFsyncInterval)
}

// wire returns the storage as the info reply says it (PROTOCOL.md §8.1).
func (c StorageConfig) wire() (storage, fsync string, intervalMS uint64) {
	switch {
	case c.Memory:
		return wire.StorageMemory, "", 0
	case c.Fsync.Always:
		return wire.StorageDisk, wire.FsyncAlways, 0
	}
	return wire.StorageDisk, wire.FsyncInterval, uint64(c.interval().Milliseconds())
}

// logDir is the directory of group id's log.
func (c StorageConfig) logDir(id wire.UUID) string {
	return filepath.Join(c.DataDir, "logs", id.String())
}

// cellWriteBehind is how many bytes of records the log of a cell's group
// may hold before writing them (store.DiskConfig.WriteBehind; they are
// written at each sync too): raft's log holds every entry the cell's state
// machine applies until a snapshot, which syncs the group logs first, and
// a member's restart replays what its group logs lost (cell/fsm.go). One
// write of 256 KiB instead of one per apply cost a follower's state
// machine less than half the kernel time (BENCHMARKS.md, issue 20).
const cellWriteBehind = 256 << 10

// openLog opens a group's log as cfg.Storage says: in memory, or on disk,
// read back and reported on (a torn tail cut, history lost and a new
// epoch begun, a read-only directory). replicated says the group is a
// cell's: its writes may lag behind its appends (cellWriteBehind), and
// it syncs every interval whatever the policy (STORAGE.md, "Durability").
func (d *Daemon) openStorageLog(id wire.UUID, name string, retention store.Config, replicated bool) (Log, error) {
	s := d.cfg.Storage
	if s.Memory {
		return store.New(retention)
	}
	cfg := store.DiskConfig{Config: retention, Dir: s.logDir(id), Fsync: s.Fsync, SegmentBytes: s.SegmentBytes}
	if replicated {
		// A copy of what raft's log holds durably (fsynced per append
		// under always): it syncs every interval and before each raft
		// snapshot, and never holds messages back from readers until a
		// sync, which a cell's ack does not wait for.
		cfg.Fsync = store.FsyncPolicy{Interval: s.Fsync.Interval}
		cfg.WriteBehind = cellWriteBehind
	}
	l, rec, err := store.Open(cfg)
	if err != nil {
		return nil, err
	}
	lg := d.cfg.Logger.With("group", name, "uuid", id)
	switch {
	case rec.Created:
		lg.Info("group log created", "dir", s.logDir(id), "epoch", l.Epoch())
	case rec.NewEpoch != "":
		lg.Error("group history lost: a new epoch begins (clients see a reset)", "why", rec.NewEpoch, "dir", s.logDir(id), "epoch", l.Epoch())
	default:
		lg.Info("group log read back", "messages", rec.Messages, "segments", rec.Segments, "took", rec.Took.Round(time.Millisecond), "epoch", l.Epoch())
	}
	switch {
	case rec.TornHole:
		lg.Warn("cut the group log's tail after a hole (zeros, then data): a power cut wrote some of the pages written since the last fsync and not others; "+
			"nothing after the last fsync is promised (under --fsync always it was never acknowledged)", "file", rec.TornFile, "bytes", rec.TornBytes)
	case rec.TornBytes > 0:
		lg.Warn("cut a torn tail from the group log: a write a crash interrupted, never acknowledged", "file", rec.TornFile, "bytes", rec.TornBytes)
	}
	if rec.MissingLast != 0 {
		lg.Error("group history lost: the oldest segment files are missing (deleted by hand, or lost with the disk: retention did not delete them); "+
			"the rest is served", "first_lost", rec.MissingFirst, "last_lost", rec.MissingLast, "dir", s.logDir(id))
	}
	if rec.IndexesRebuilt > 0 {
		lg.Info("rebuilt missing segment indexes", "indexes", rec.IndexesRebuilt)
	}
	if rec.ReadOnly != nil {
		lg.Error("group log cannot be written: sends are refused until it can be, reads are served", "err", rec.ReadOnly)
	}
	// A cell's leader says so as it stamps (cell/propose.go); a lone
	// daemon's clock can only have stepped back between runs unseen here.
	if _, last := l.Tail(); !replicated {
		if behind := time.Duration(last - d.cfg.Now().UnixNano()); behind > clockBehind {
			lg.Warn("this daemon's clock is behind the group's latest timestamp (set back since that message was stamped): "+
				"it stamps messages just after that one until its clock catches up, so they are dated too early for time queries (fetch --since); "+
				"check the clock (NTP)", "behind", behind.Round(time.Millisecond))
		}
	}
	return l, nil
}

// clockBehind is how far behind a group's latest timestamp the daemon's
// clock may be at start before it says so: a clock kept by NTP is not set
// back by more.
const clockBehind = time.Second

// brokenRetry is the retry_after_ms of an operation on a group whose log
// could not be opened: an operator has to act.
const brokenRetry = time.Minute

// brokenGroup is the error of every operation on a group whose log could
// not be opened (corrupt, from a newer huddle, unreadable): it is not
// served, rather than serve wrong history.
func brokenGroup(op wire.Op, g *group) error {
	return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: uint64(brokenRetry.Milliseconds()), Unchanged: true,
		Message: fmt.Sprintf("%v group %s: the daemon cannot read the group's history and does not serve it (its log says why); other groups are served", op, g.name)}
}

// logBroken logs why a group's log could not be opened, with what to do.
// A read fault is the disk's (an I/O error under a page of a file, or the
// file cut shorter meanwhile), not damage to the data: the advice to
// restore from a backup, or to start afresh, given for it until session 18
// had an operator throw away history that reads back whole once the device
// does.
func logBroken(lg *slog.Logger, name string, id wire.UUID, dir string, err error) {
	advice := "restore the directory from a backup, or move it aside to start the group afresh (a new epoch: its history is lost)"
	switch {
	case errors.Is(err, store.ErrFutureVersion):
		advice = "it was written by a newer huddle: run that version"
	case errors.Is(err, store.ErrReadFault):
		advice = "the disk could not read the file back (an I/O error; or the file was cut shorter as it was read): check the device " +
			"(the kernel's log, dmesg), and restart the daemon once it reads again: the history may be whole; restore from a backup only if it is not"
	}
	lg.Error("group not served: its log cannot be read", "group", name, "uuid", id, "dir", dir, "err", err, "advice", advice)
}

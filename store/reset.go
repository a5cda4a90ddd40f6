package store

import (
	"fmt"
	"os"
	"path/filepath"
)

// Sync does nothing and returns nil: a memory log has no device to reach.
func (l *Log) Sync() error { return nil }

// Reset empties the log and makes it stand after seq, stamped t: the next
// message appended is seq+1, after t; its epoch stays. A replica of a
// cell's group catching up from a peer whose retention dropped the
// messages before seq+1 starts there. It returns ErrOutOfOrder (wrapped)
// if seq is behind the log's tail.
func (l *Log) Reset(seq uint64, t int64) error {
	if last, _ := l.Tail(); seq < last {
		return fmt.Errorf("store: reset to %d, behind the tail %d: %w", seq, last, ErrOutOfOrder)
	}
	l.startAt(seq, t)
	return nil
}

// Reset empties the log and makes it stand after seq, stamped t, as
// [Log.Reset] does: its segment files are deleted, oldest first, and a
// new one begun at seq+1. A crash midway leaves either a shorter history
// (the newest old files) or none; under a configured epoch (Config.Epoch)
// the log then opens under it, and the replica catches up again. If the
// new one cannot be begun (ErrNotWritable: a full disk), the log holds
// what it held, its files begin again at its tail with the next append
// that finds room, and Reset may be tried again.
func (d *DiskLog) Reset(seq uint64, t int64) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	switch {
	case d.failed != nil:
		return d.failed
	case seq < d.tailSeq:
		return fmt.Errorf("store: reset to %d, behind the tail %d: %w", seq, d.tailSeq, ErrOutOfOrder)
	}
	d.pend = d.pend[:0] // records of the files deleted below
	d.fmu.Lock()
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	d.fmu.Unlock()
	for _, s := range d.segs {
		os.Remove(filepath.Join(d.dir, segName(s.base)))
		os.Remove(filepath.Join(d.dir, idxName(s.base)))
	}
	base := seq + 1
	f, err := createSegment(filepath.Join(d.dir, segName(base)), segHeader{epoch: d.epoch, base: base, prevTime: t})
	if err != nil {
		// The old files are gone (or going: on a full disk their space
		// may not come back while the memory log maps them) and the next
		// could not be begun. The memory log stays as it was, and the
		// next append with room begins the files again at its tail
		// (writable), as retention would have left them; a Reset tried
		// again resets. (Appends opened the missing segment at base again,
		// and failed for as long as the daemon ran.)
		d.segs, d.fbase, d.fsize = nil, d.tailSeq+1, segHeaderSize
		d.roErr = fmt.Errorf("%w: %w", ErrNotWritable, err)
		return d.roErr
	}
	d.syncDir(d.dir)
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	d.fbase, d.fsize, d.fcount = base, segHeaderSize, 0
	d.enc = newRecordEncoder()
	d.idx, d.idxAt = nil, 0
	d.segs = []segFile{{base: base, last: seq, lastTime: t}}
	d.tailSeq, d.tailT = seq, t
	d.mem.startAt(seq, t)
	d.smu.Lock()
	d.synced = seq
	d.checkpoint()
	d.smu.Unlock()
	return nil
}

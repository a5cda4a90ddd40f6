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
// the log then opens under it, and the replica catches up again.
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
		// Nothing to append to: appends try to open the segment again (a
		// full disk freed), and fail until then.
		d.segs, d.fbase, d.fsize = nil, base, segHeaderSize
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

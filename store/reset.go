package store

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
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
// [Log.Reset] does: the checkpoint is made to say, durably, that the
// history begins at seq+1, then its segment files are deleted, oldest
// first, and a new one begun at seq+1. A crash midway leaves either a
// shorter history (the newest old files), whose messages are not served
// (they are before the checkpoint's first), or none; under a configured
// epoch (Config.Epoch) the log then opens under it, and the replica
// catches up again. If the new one cannot be begun (ErrNotWritable: a
// full disk), the log is reset all the same, in memory as on disk: it
// holds nothing and stands after seq, and its files begin at seq+1 with
// the next append that finds room (or a Reset tried again). If the
// checkpoint cannot be written, nothing changes and Reset returns
// ErrNotWritable; if a file cannot be deleted, the log is reset in memory
// and fails (ErrFailed: the files left are not served after a restart
// either).
func (d *DiskLog) Reset(seq uint64, t int64) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.settle() // the write out is to a file deleted next (a failed cut fails the log)
	switch {
	case d.failed != nil:
		return d.failed
	case seq < d.tailSeq:
		return fmt.Errorf("store: reset to %d, behind the tail %d: %w", seq, d.tailSeq, ErrOutOfOrder)
	}
	base := seq + 1
	// What retention records before it deletes a file: a history that
	// begins past the files deleted, and at the one begun next, so that
	// recovery tells them from files lost. (A log with no file to delete
	// says so too, where it has a checkpoint: a failed Reset tried again
	// further on.)
	if err := d.checkpoint(0, base, true); err != nil && len(d.segs) > 0 {
		return fmt.Errorf("%w: reset: checkpoint: %w", ErrNotWritable, err)
	}
	var rmErr error
	for i, s := range d.segs {
		if err := d.removeIfThere(filepath.Join(d.dir, segName(s.base))); err != nil {
			rmErr = fmt.Errorf("%w: reset: %d of %d segment files deleted: %w", ErrFailed, i, len(d.segs), err)
			break
		}
		d.removeIfThere(filepath.Join(d.dir, idxName(s.base)))
	}
	d.pend = d.pend[:0] // records of the files deleted
	d.fmu.Lock()
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	d.fmu.Unlock()
	// The memory log holds nothing the files no longer hold, whatever
	// comes next. (It kept what it held when the new segment could not
	// be begun, and served it until a restart.)
	d.tailSeq, d.tailT = seq, t
	d.mem.startAt(seq, t)
	d.segs, d.fbase, d.fsize, d.fcount = nil, base, segHeaderSize, 0
	d.enc = newRecordEncoder()
	d.idx, d.idxAt = nil, 0
	// Nothing held waits for a sync. (Left behind, a sync after a failed
	// Reset took the log as synced to seq and wrote that in the
	// checkpoint: past the end of the files left, which the next start
	// refused as a synced end lost.)
	d.smu.Lock()
	d.synced = seq
	d.smu.Unlock()
	if rmErr != nil {
		d.failed = rmErr
		return rmErr
	}
	f, err := createSegment(filepath.Join(d.dir, segName(base)), segHeader{epoch: d.epoch, base: base, prevTime: t})
	if err != nil {
		// The old files are gone (or going: on a full disk their space
		// may not come back while the memory log maps them) and the next
		// could not be begun: the next append with room begins it
		// (writable, rebegin); a Reset tried again does too.
		d.roErr, d.roTried = fmt.Errorf("%w: %w", ErrNotWritable, err), time.Now()
		return d.roErr
	}
	if err := d.syncDir(d.dir); err != nil {
		// As rotate: the segment's entry may not survive a power cut.
		f.Close()
		d.failed = fmt.Errorf("%w: fsync directory %s after creating %s: %v", ErrFailed, d.dir, segName(base), err)
		return d.failed
	}
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	d.segs = []segFile{{base: base, last: seq, lastTime: t}}
	d.checkpoint(seq, base, false)
	return nil
}

// removeIfThere removes the file at path; one already gone is no error.
func (d *DiskLog) removeIfThere(path string) error {
	if err := d.remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

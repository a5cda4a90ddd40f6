package store

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// The write-behind writer.
//
// A log whose writes lag (DiskConfig.WriteBehind) wrote its pending
// records inline, in the Append that found WriteBehind bytes pending. In a
// cell that Append is raft's apply goroutine, and raft answers the leader's
// sends only once their entries are applied: every send in the cell waited
// for each 256 KiB pwrite (BENCHMARKS.md, session 17). The log now hands
// them to a goroutine of its own, the writer, and its appends go on into a
// new pending buffer meanwhile.
//
// What an acknowledgment promises does not change: pending records, and
// records being written, are kept durable by the log's owner until a sync
// covers them (WriteBehind's contract), and every sync, seal, Reset and
// Close first waits for the write that is out (settle), then writes what
// is pending inline, as before. One write is out at a time, at the end of
// the file; the records appended meanwhile wait in memory for the next.
//
// A background write that fails is cut back, and its records are pending
// again, in front of those appended since. The next write is then inline,
// in the next append (not only in one that finds WriteBehind bytes
// pending; so too after a sync's write refused), which meets the error as
// before: that batch is refused (ErrNotWritable), and a full disk's room
// is made as for any record (recordRoom). While the record
// gate of the log's file system is shut (a full disk), writes are inline
// too: the room another log makes is not taken from under it; and a write
// handed off before the gate shut goes through it too (gatedWrite).

// pendWriter writes a log's pending records on a goroutine of its own. Its
// fields but jobs and done are guarded by the log's d.wmu.
type pendWriter struct {
	jobs chan writeJob // to the goroutine; closed by stop
	done chan error    // its outcome of each job
	wg   sync.WaitGroup

	out    bool     // a job is out: its outcome not taken yet
	job    writeJob // the job out
	failed bool     // the last job failed: write inline until a write succeeds
	spare  []byte   // a buffer for the next pending records
}

// writeJob writes buf at offset at of the active segment, f; or, with
// seal, seals the segment before the active one (seal.go).
type writeJob struct {
	f    *os.File
	buf  []byte
	at   int64
	seal *sealJob
}

// startWriter starts the log's writer. write writes a job's records:
// (*os.File).WriteAt, but for the tests that hold or fail it.
func (d *DiskLog) startWriter(write func(f *os.File, p []byte, off int64) (int, error)) {
	w := &pendWriter{jobs: make(chan writeJob, 1), done: make(chan error, 1)}
	g := d.gate
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for j := range w.jobs {
			if j.seal != nil {
				w.done <- d.seal(j.seal)
				continue
			}
			if writerTestJob != nil {
				writerTestJob()
			}
			w.done <- gatedWrite(g, func() error {
				if writerTestWrite != nil {
					writerTestWrite(g)
				}
				_, err := write(j.f, j.buf, j.at)
				return err
			})
		}
	}()
	d.wr = w
}

// writerTestJob, a test hook, runs as the writer takes a job;
// writerTestWrite as it writes one, through the gate g.
var (
	writerTestJob   func()
	writerTestWrite func(g *gate)
)

// errGateHeld refuses a background write while another log makes room:
// its records are pending again, written inline through the gate.
var errGateHeld = errors.New("store: the record gate is held: written inline")

// gatedWrite runs a background write, write, through the gate g. A job
// handed off while the gate was open may reach the file only after it
// shut (the disk refused another log's record): it was written ungated,
// taking the room another log had just made (deleted its files for, or
// cut its reserve by) and held the gate for. Now it is written with the
// gate held for reading, as a record's write, or, while a log holds the
// gate to make room, not at all: the job fails (errGateHeld), and its
// records are written inline, through the gate, by the log's next write
// (reap). Whether the gate is shut is not looked at first: a write that
// found it open went on ungated, and the gate could shut, and a log take
// it to make room, between the look and the write (a log making room
// takes it only once the writes holding it have ended). Never waiting for
// the gate, the writer cannot wait behind a log making room that waits
// for it. Safe on a nil gate.
func gatedWrite(g *gate, write func() error) error {
	if g == nil {
		return write()
	}
	if !g.mu.TryRLock() {
		return errGateHeld
	}
	defer g.mu.RUnlock()
	return write()
}

// stop ends the writer's goroutine and waits for it; the log has settled
// its last job. Safe on a nil writer (a log that writes inline).
func (w *pendWriter) stop() {
	if w == nil {
		return
	}
	close(w.jobs)
	w.wg.Wait()
}

// writeBehind reports whether the pending records are the writer's to
// write: handed to it now, or left pending while its last write is out
// (the next append hands them over). false: the caller writes them
// inline (no writer, its last write failed, or the gate is shut). d.wmu
// is held.
func (d *DiskLog) writeBehind() bool {
	w := d.wr
	switch {
	case w == nil || w.failed:
		return false
	case w.out:
		return true
	case d.gate != nil && d.gate.shut.Load():
		return false
	}
	w.job = writeJob{f: d.f, buf: d.pend, at: d.fsize - int64(len(d.pend))}
	w.out = true
	d.pend, w.spare = w.spare[:0], nil
	w.jobs <- w.job
	return true
}

// reap takes the outcome of the writer's job out, if it has ended, or
// waits for it if wait is set (settle). A failed write is cut back, and
// its records are pending again, before those appended since, to be
// written inline next. d.wmu is held. Errors: ErrFailed, when the cut
// failed (the log has failed).
func (d *DiskLog) reap(wait bool) error {
	w := d.wr
	if w == nil || !w.out {
		return nil
	}
	var err error
	if wait {
		err = <-w.done
	} else {
		select {
		case err = <-w.done:
		default:
			return nil
		}
	}
	j := w.job
	w.out, w.job = false, writeJob{}
	if j.seal != nil {
		if err != nil {
			d.failed = err // ErrFailed, as the inline seal's
			return err
		}
		d.sealed(j.seal)
		return nil
	}
	if err == nil {
		w.failed = false
		if cap(j.buf) <= maxKeptPend {
			w.spare = j.buf[:0]
		}
		return nil
	}
	// As write: whatever part of the records was written is cut back.
	if terr := j.f.Truncate(j.at); terr != nil {
		d.failed = fmt.Errorf("%w: a partial write to %s could not be undone (%v) after: %v", ErrFailed, j.f.Name(), terr, err)
		return d.failed
	}
	d.pend = append(j.buf, d.pend...)
	w.failed = true
	return nil
}

// settle waits for the writer's job out and takes its outcome (reap):
// then the file ends at d.fsize-len(d.pend), and nothing writes to it
// but the caller. d.wmu is held.
func (d *DiskLog) settle() error { return d.reap(true) }

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Sealing behind the appends.
//
// A segment's seal (rotate) fsyncs the full segment, writes and fsyncs its
// index, creates the next segment with its header, fsynced, and fsyncs the
// directory: four fsyncs, 31-167 ms per 10 s of a cell leader's raft apply
// goroutine under send-batched load, the largest wait left on it after
// the write-behind writer took the pwrites (BENCHMARKS.md, session 17);
// and every send in the cell waits for that goroutine. A log whose writes
// lag (DiskConfig.WriteBehind) now seals on its writer's goroutine: the
// append that seals writes the full segment's pending records (inline, as
// before), creates the next file under the name `next`, its header's
// bytes allocated (zeros), makes it the active segment, and hands the rest
// to the writer as a job of its own (the seal): fsync the old file, write
// its index, write the new file's header and fsync it, rename it to its
// segment name, fsync the directory. Appends go on into pending records of
// the new segment meanwhile (up to sealPending bytes: then they wait).
//
// What a crash finds does not change. The writer does nothing else until
// the seal is done, and the log writes nothing itself while a job is out,
// so no record reaches the new file before the old one is synced and the
// new one holds its header under its name. Until the rename, recovery does
// not see the new file (it reads segment names only; `next` is made over
// at the next seal): a power cut or kill -9 leaves the old file the
// newest, its tail as the last sync (or, killed, the last write) left it.
// (Created under its segment name before the old file's fsync, its entry
// could reach the device first: a power cut then left a newest segment
// after a torn one, which recovery refused as corrupt:
// TestDiskSealBehind.) After the rename, a power cut may leave either
// name: the old file and the new one's header are synced by then. A sync,
// Reset or Close waits for the seal out first (a sync without the writers'
// lock: the appends go on meanwhile), so what each promises is unchanged;
// retention deletes no file whose seal is out. A seal that fails (an
// fsync, the header's write, the rename) fails the log (ErrFailed), as
// the inline seal did; its allocated header cannot meet a full disk.
// Without a writer, with its last write failed, or while the record gate
// is shut (a full disk), the seal is inline as before, and so is
// retention's, which may need the spare; and where `next` cannot be
// created (a full disk; a directory or a named pipe under the name,
// which would refuse every seal).

// sealPending is how many bytes of records may be pending while a seal is
// out before an append waits for it: at 15 MB/s of records, 0.5 s of a
// seal.
const sealPending = 8 << 20

// sealJob is a seal handed to the writer: old, the full segment, all its
// records written, is synced, its index x written beside it; then next's
// header is written into its allocated bytes and synced, next renamed to
// path, and the directory synced. done is closed once it has ended,
// before its outcome is sent.
type sealJob struct {
	old    *os.File
	x      segIndex
	next   *os.File // created as nextName
	path   string   // its name once sealed
	header []byte
	done   chan struct{}
}

// sealsBehind reports whether the active segment is sealed on the writer:
// the log has one whose last write did not fail, and the record gate is
// open. d.wmu is held, the writer settled.
func (d *DiskLog) sealsBehind() bool {
	return d.wr != nil && !d.wr.failed && d.gate != nil && !d.gate.shut.Load()
}

// rotateBehind seals the active segment on the writer (see above): it
// writes the pending records, creates the next segment as `next` with its
// header's bytes allocated, makes it the active one, and hands the seal to
// the writer. On error the active segment stays as it was: errNoNext
// where `next` could not be created (the caller seals inline). d.wmu is
// held, the writer settled.
func (d *DiskLog) rotateBehind() error {
	if len(d.pend) > 0 {
		if err := d.write(); err != nil {
			return err
		}
	}
	base := d.tailSeq + 1
	// Under a name recovery does not read, till the seal has synced the
	// old file: see above. Its header's bytes are allocated, so that the
	// seal's write of it cannot meet a full disk.
	path := filepath.Join(d.dir, nextName)
	f, err := openFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		if err = allocate(f, 0, segHeaderSize); err != nil {
			f.Close()
			os.Remove(path)
		}
	}
	if err != nil {
		// A full disk, or anything but a regular file under the name (a
		// directory, a named pipe: refused, never waited on): the seal
		// is inline, which meets a full disk as it always has.
		return fmt.Errorf("%w: %s: %w", errNoNext, nextName, err)
	}
	if !d.spare {
		d.makeSpare()
	}
	h := segHeader{epoch: d.epoch, base: base, prevTime: d.tailT}
	j := &sealJob{
		old:    d.f,
		x:      segIndex{base: d.fbase, last: d.tailSeq, segLen: d.fsize, entries: d.idx},
		next:   f,
		path:   filepath.Join(d.dir, segName(base)),
		header: h.encode(nil),
		done:   make(chan struct{}),
	}
	// Swapped without d.fmu: the old file is closed by the seal, once no
	// sync holds it (under d.fmu, the swap would wait for a periodic
	// sync's fsync of the old file, tens of milliseconds).
	d.f = f
	d.begun(base, f)
	w := d.wr
	w.job = writeJob{seal: j}
	w.out = true
	w.jobs <- w.job
	return nil
}

// seal runs a seal job on the writer's goroutine (see sealJob), and closes
// the old file once no sync holds it.
func (d *DiskLog) seal(j *sealJob) error {
	defer close(j.done)
	defer func() {
		d.fmu.Lock()
		j.old.Close()
		d.fmu.Unlock()
	}()
	sealTestAt(sealBegun, j)
	if err := j.old.Sync(); err != nil {
		return fmt.Errorf("%w: fsync %s: %v", ErrFailed, j.old.Name(), err)
	}
	// The index is an aid: a missing or damaged one is rebuilt on open.
	writeSynced(filepath.Join(d.dir, idxName(j.x.base)), j.x.encode(nil))
	sealTestAt(sealSynced, j)
	_, err := j.next.WriteAt(j.header, 0)
	if err == nil {
		err = j.next.Sync()
	}
	if err != nil {
		return fmt.Errorf("%w: write the header of %s: %v", ErrFailed, segName(j.x.last+1), err)
	}
	sealTestAt(sealHeader, j)
	if err := os.Rename(filepath.Join(d.dir, nextName), j.path); err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrFailed, segName(j.x.last+1), err)
	}
	sealTestAt(sealRenamed, j)
	if err := d.syncDir(d.dir); err != nil {
		// As rotate: the new file's entry may not survive a power cut,
		// nor a message acknowledged in it.
		return fmt.Errorf("%w: fsync directory %s after creating %s: %v", ErrFailed, d.dir, segName(j.x.last+1), err)
	}
	return nil
}

// nextName is the next segment file while its seal is out (seal.go).
const nextName = "next"

// errNoNext: the next file could not be created as nextName; the seal is
// made inline instead.
var errNoNext = errors.New("store: no next file")

// sealed makes the active segment, once its seal is done, the file opened
// under its name (errors name it); the file as created stays open if it
// cannot be (a name in errors is all it changes). No sync holds the file
// as created: a sync waits for the seal before it takes the active
// segment. d.wmu is held.
func (d *DiskLog) sealed(j *sealJob) {
	f, err := openFile(j.path, os.O_WRONLY, 0)
	if err != nil || d.f != j.next {
		if err == nil {
			f.Close()
		}
		return
	}
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	j.next.Close()
}

// The points of a seal a test may hold it at (sealTestHold): begun,
// before anything is synced; the old file and its index synced; the next
// file's header written and synced; the next file renamed, its directory
// entry not synced yet.
const (
	sealBegun = iota
	sealSynced
	sealHeader
	sealRenamed
)

// sealTestHold, a test hook, runs at each point of a seal.
var sealTestHold func(at int, j *sealJob)

func sealTestAt(at int, j *sealJob) {
	if sealTestHold != nil {
		sealTestHold(at, j)
	}
}

// sealOut returns the done channel of the seal out, or nil if none is.
// d.wmu is held.
func (d *DiskLog) sealOut() chan struct{} {
	if w := d.wr; w != nil && w.out && w.job.seal != nil {
		return w.job.seal.done
	}
	return nil
}

// lockSealed takes d.wmu once no seal is out, waiting for the seal without
// it: a sync, which waits for the seal, does not hold the appends
// meanwhile. It returns with d.wmu held, and the seal's error (reap's).
func (d *DiskLog) lockSealed() error {
	d.wmu.Lock()
	for {
		done := d.sealOut()
		if done == nil {
			return nil
		}
		d.wmu.Unlock()
		<-done
		d.wmu.Lock()
		if d.sealOut() == done {
			// Its outcome, sent as done closed.
			if err := d.settle(); err != nil {
				return err
			}
		}
	}
}

// pendMax is how many bytes may be pending before an append waits for the
// writer's job out: twice WriteBehind, or sealPending while a seal is out.
// d.wmu is held.
func (d *DiskLog) pendMax() int {
	if d.sealOut() != nil {
		return max(2*d.behind, sealPending)
	}
	return 2 * d.behind
}

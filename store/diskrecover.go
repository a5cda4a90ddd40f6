package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Recovery is what opening a disk log found, for its owner to log.
type Recovery struct {
	// Created: the directory held no log; a new one was begun.
	Created bool
	// NewEpoch, if not empty, says why the log's history was lost and a
	// new epoch begun: a checkpoint with no segment beside it (the segment
	// files were deleted).
	NewEpoch string
	// Torn is set when the newest segment ended in a record cut short (a
	// crash mid-write, never acknowledged under the policy that wrote it):
	// the file and the bytes cut from it.
	TornFile  string
	TornBytes int64
	// TornHole: the cut began at a hole, zeros where a record should be
	// with data after them, as a power cut leaves the pages written
	// since the last sync when it wrote some and not others; the data
	// after the hole, never synced, was cut with it.
	TornHole bool
	// MissingFirst to MissingLast, if MissingLast is not 0, are messages
	// retention had kept whose segment files are missing (deleted by
	// hand, or lost with the disk): the oldest files are gone, and the
	// checkpoint says the history began at MissingFirst. The log holds
	// the rest, from MissingLast+1.
	MissingFirst, MissingLast uint64
	// Segments and Messages are what was read back into memory.
	Segments int
	Messages int
	// IndexesRebuilt counts sealed segments whose missing or damaged
	// index was written again.
	IndexesRebuilt int
	// ReadOnly, if not nil, is why the log cannot be written: it serves
	// what it holds and refuses appends until it can.
	ReadOnly error
	// Took is how long opening took.
	Took time.Duration
}

// recover reads the directory back: segments into memory, the newest one's
// torn tail cut, missing indexes rebuilt; or begins a new log.
func (d *DiskLog) recover() (Recovery, error) {
	var rec Recovery
	if err := d.mkdirAll(d.dir); err != nil {
		if _, serr := os.Stat(d.dir); !errors.Is(serr, fs.ErrNotExist) {
			return rec, err
		}
		// A new log where its directory cannot be made (a full disk):
		// begun empty and unwritable.
		return rec, d.create(&rec, checkpoint{}, fs.ErrNotExist)
	}
	bases, idxs, err := listDir(d.dir)
	if err != nil {
		return rec, err
	}
	cpt, cptErr := readCheckpoint(d.dir)
	if errors.Is(cptErr, ErrFutureVersion) || errors.Is(cptErr, errNotRegular) {
		return rec, fmt.Errorf("%s: %w", cptName, cptErr)
	}
	// A crash while the newest segment was being created (SIGKILL
	// between the file's creation and its header's write, or a power cut
	// before either reached the device) leaves it shorter than a header,
	// or zeros: it holds no record, so nothing in it was acknowledged. It
	// is set aside here, and removed once the segments before it have
	// read back up to its base (else it is a gap: corruption).
	var unborn uint64
	var unbornSize int64
	if n := len(bases); n > 0 {
		size, ok, err := unbornSegment(filepath.Join(d.dir, segName(bases[n-1])))
		if err != nil {
			return rec, err
		}
		if ok {
			unborn, unbornSize, bases = bases[n-1], size, bases[:n-1]
		}
	}
	if len(bases) == 0 {
		switch {
		case unborn == 0:
		case unborn == 1 && (cptErr != nil || cpt.synced == 0):
			// The first segment of a new log: create writes the
			// checkpoint only once the segment's header is synced.
			if cptErr == nil {
				d.mem.epoch, cptErr = cpt.epoch, fs.ErrNotExist
			}
		case unborn == 1:
			// Messages were synced, and the only segment that could
			// hold them holds nothing: the device lost what it said it
			// had.
			return rec, fmt.Errorf("%s: %d bytes, no header, and no segment before it: %w", segName(unborn), unbornSize, ErrCorrupt)
		default:
			// The segment a Reset begins once it has deleted the others:
			// the crash left no file of the history, as if it had come
			// before the creation (Reset's doc), and the log begins
			// again, empty. Removed first, or it would be taken for
			// the newest segment, after a gap, at the next start.
			if err := os.Remove(filepath.Join(d.dir, segName(unborn))); err != nil {
				return rec, fmt.Errorf("%s: %d bytes, no header, and no segment before it: %w", segName(unborn), unbornSize, err)
			}
			rec.TornFile, rec.TornBytes = segName(unborn), unbornSize
		}
		return rec, d.create(&rec, cpt, cptErr)
	}
	// Headers first: every segment must belong to one history, and name
	// its base as its file does.
	headers := make([]segHeader, len(bases))
	for i, base := range bases {
		h, err := readSegHeader(filepath.Join(d.dir, segName(base)))
		if err != nil {
			return rec, fmt.Errorf("%s: %w", segName(base), err)
		}
		if h.base != base {
			return rec, fmt.Errorf("%s: header says base %d: %w", segName(base), h.base, ErrCorrupt)
		}
		if h.epoch != headers[0].epoch && i > 0 {
			return rec, fmt.Errorf("%s: epoch %d, %s has %d: segments of two histories: %w", segName(base), h.epoch, segName(bases[0]), headers[0].epoch, ErrCorrupt)
		}
		headers[i] = h
	}
	d.epoch = headers[0].epoch
	var synced, floor uint64
	if cptErr == nil {
		if cpt.epoch != d.epoch {
			return rec, fmt.Errorf("%s: epoch %d, the segments' is %d: %w", cptName, cpt.epoch, d.epoch, ErrCorrupt)
		}
		synced, floor = cpt.synced, cpt.first
	}
	// Retention deletes the oldest files first: files older than the
	// retained history are leftovers of a deletion a crash interrupted.
	// Any other gap between files is history lost.
	keep := 0
	for i := len(bases) - 1; i > 0; i-- {
		if bases[i] <= floor {
			keep = i
			break
		}
	}
	for _, base := range bases[:keep] {
		os.Remove(filepath.Join(d.dir, segName(base)))
		os.Remove(filepath.Join(d.dir, idxName(base)))
	}
	bases, headers = bases[keep:], headers[keep:]
	// Retention and Reset make the checkpoint say, durably, where the
	// history begins before they delete a file below it: an oldest file
	// that begins past that point had files before it that they did not
	// delete. (A checkpoint of 0 is a log's first; its first segment
	// begins at 1, unless Reset began it, which writes the checkpoint
	// first.)
	if from := max(floor, 1); cptErr == nil && bases[0] > from {
		rec.MissingFirst, rec.MissingLast = from, bases[0]-1
	}

	// Only the last DedupWindow messages are remembered: those before the
	// newest segment's base less the window need not be.
	if w := uint64(d.mem.lim.dedupWindow); bases[len(bases)-1] > w {
		d.mem.dedupFrom = bases[len(bases)-1] - w
	}
	defer func() { d.mem.dedupFrom = 0 }()
	// A hole is taken for a power cut's only past a sync point the
	// checkpoint says: without one (removed, or damaged: the checkpoint is
	// made with the log, before any append, and rewritten in place, so no
	// crash loses it) a zero page may be anywhere in what was synced.
	reads := d.readSegments(bases, headers, idxs, floor, synced, cptErr == nil)
	// Each read's mapping is the memory log's once appended; those not
	// appended when an error stops the loop are released here.
	applied := 0
	defer func() {
		for _, rd := range reads[applied:] {
			if rd.mf != nil {
				rd.mf.m.unmap()
			}
		}
	}()
	var seq uint64
	var t int64
	started := false // the memory log stands at its first message
	for i, base := range bases {
		rd := &reads[i]
		last := i == len(bases)-1
		if rd.err != nil {
			return rec, fmt.Errorf("%s: %w", segName(base), rd.err)
		}
		if i > 0 && seq+1 != base {
			return rec, fmt.Errorf("%s follows messages up to %d: the segment files between are missing: %w", segName(base), seq, ErrCorrupt)
		}
		if rd.mf.len() > 0 && !started {
			d.mem.startAt(rd.mf.base-1, rd.mf.prevTime)
			started = true
		}
		d.mem.appendMapped(rd.mf)
		applied++
		seq, t = rd.seq, rd.time
		rec.Segments++
		x, res := rd.x, &rd.res
		if !last && (x == nil || x.last != res.index.last || x.segLen != res.index.segLen) {
			if writeSynced(filepath.Join(d.dir, idxName(base)), res.index.encode(nil)) == nil {
				rec.IndexesRebuilt++
			}
		}
		d.segs = append(d.segs, segFile{base: base, last: seq, lastTime: t})
		if last {
			d.fbase, d.fsize, d.fcount = base, res.size, int(seq+1-base)
			d.idx = res.index.entries
			if n := len(d.idx); n > 0 {
				d.idxAt = d.idx[n-1].offset
			}
			d.enc = newRecordEncoder()
			for j, s := range rd.dict {
				d.enc.dict[s] = uint32(j)
			}
			if res.torn > 0 {
				rec.TornFile, rec.TornBytes, rec.TornHole = segName(base), res.torn, res.hole
			}
		}
	}
	if synced > seq {
		return rec, fmt.Errorf("%s ends at message %d, but %d were synced: its end is missing: %w", segName(d.fbase), seq, synced, ErrCorrupt)
	}
	if unborn != 0 {
		if unborn != seq+1 {
			return rec, fmt.Errorf("%s follows messages up to %d: the segment files between are missing: %w", segName(unborn), seq, ErrCorrupt)
		}
		// The segment before it is the active one again; its index, which
		// sealing it wrote, is rewritten when it is sealed again (a
		// newest segment's index is never read). Where the file cannot be
		// removed (a read-only file system), the next rotation creates
		// it over again.
		os.Remove(filepath.Join(d.dir, segName(unborn)))
		rec.TornFile, rec.TornBytes = segName(unborn), unbornSize
	}
	if !started {
		// Retention dropped every message, or there were none.
		d.mem.startAt(seq, t)
	}
	// The files whose every message retention evicted as they were read
	// back (its limits lowered since they were written) were never read
	// by anyone: unmapped now, their space comes back as soon as
	// retention deletes them, not a grace later (mapped.go).
	d.mem.mu.Lock()
	d.mem.unmapRetired(time.Now().Add(mapGrace))
	d.mem.mu.Unlock()
	rec.Messages = d.mem.Stats().Messages
	d.tailSeq, d.tailT = seq, t

	// Open the newest segment for appends, its torn tail cut. It is not
	// synced here: after a crash the kernel may hold a second of writes
	// (under the interval policy) that an fsync would make the start wait
	// for; the next sync covers them, and until then the checkpoint says
	// only what it said.
	// The checkpoint will say no more than this run knows: a first past
	// what the files hold is not kept (openCheckpoint).
	d.cptSynced, d.cptFirst = synced, d.mem.firstHeld()
	d.cptAhead = cptErr == nil && floor > seq+1
	f, err := openFile(filepath.Join(d.dir, segName(d.fbase)), os.O_WRONLY, 0)
	if err == nil {
		if err = f.Truncate(d.fsize); err != nil {
			f.Close()
		}
	}
	if err != nil {
		err = fmt.Errorf("open %s: %w", segName(d.fbase), err)
	} else if err = d.openCheckpoint(); err != nil {
		f.Close()
	}
	if err != nil {
		d.roErr = fmt.Errorf("%w: %w", ErrNotWritable, err)
		d.roTried = time.Now()
		rec.ReadOnly = d.roErr
	} else {
		d.f = f
		d.synced = synced
		// A spare is a file of a header's size: a segment made from a
		// longer one kept its bytes past the header, after the records
		// appended there, and the next start refused the group as
		// corrupt. Anything else under its name (a file left by hand, a
		// link) is replaced.
		sp := filepath.Join(d.dir, spareName)
		if st, err := os.Lstat(sp); err == nil && st.Mode().IsRegular() && st.Size() == segHeaderSize {
			d.spare = true
		} else {
			if err == nil {
				os.Remove(sp)
			}
			d.makeSpare()
		}
		d.openReserve()
	}
	return rec, nil
}

// mkdirAll creates dir and the directories above it that are missing,
// and syncs the directory that holds each one it created: a new log's
// files are synced, and their directory too (create), but a power cut
// could still lose the entry that names that directory, and the log with
// it. (ext4 happens to commit the entry with the first file's fsync; the
// others need not.)
func (d *DiskLog) mkdirAll(dir string) error {
	var created []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		created = append(created, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, p := range created {
		if err := d.syncDir(filepath.Dir(p)); err != nil {
			// Their entries may not survive a power cut, nor the files
			// made in them: not made after all (deepest first), so that
			// the next try makes and syncs them again.
			for _, p := range created {
				os.Remove(p)
			}
			return fmt.Errorf("fsync directory %s: %w", filepath.Dir(p), err)
		}
	}
	return nil
}

// create begins a new log: a new epoch, the first segment, the checkpoint.
// Where they cannot be written (a full disk, a read-only file system), the
// log opens empty and unwritable (rec.ReadOnly): its first append with
// room creates them (writable), under the epoch chosen here.
func (d *DiskLog) create(rec *Recovery, cpt checkpoint, cptErr error) error {
	d.epoch = d.mem.epoch // new and random, or the configured one
	switch {
	case cptErr == nil:
		rec.NewEpoch = fmt.Sprintf("the segment files of epoch %d are missing (its checkpoint says %d messages were synced): its history is lost", cpt.epoch, cpt.synced)
	case !errors.Is(cptErr, fs.ErrNotExist):
		rec.NewEpoch = fmt.Sprintf("no segment files, and the checkpoint is unreadable (%v)", cptErr)
	default:
		rec.Created = true
	}
	d.fbase, d.fsize = 1, segHeaderSize
	d.enc = newRecordEncoder()
	d.unbegun = true
	if err := d.begin(); err != nil {
		d.roErr, d.roTried = err, time.Now()
		rec.ReadOnly = err
	}
	return nil
}

// begin creates the files of a new log, which has none yet: the log's
// directory (and those above it that are missing), the first segment and
// the checkpoint, synced with their directory. On error it leaves no file
// and returns ErrNotWritable wrapping the cause. d.wmu is held, or the log
// is being opened.
func (d *DiskLog) begin() error {
	if err := d.mkdirAll(d.dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	path := filepath.Join(d.dir, segName(d.fbase))
	f, err := createSegment(path, segHeader{epoch: d.epoch, base: d.fbase})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	c := checkpoint{epoch: d.epoch}
	p := c.encode()
	cptPath := filepath.Join(d.dir, cptName)
	err = writeSynced(cptPath, p[:])
	var cf *os.File
	if err == nil {
		if err = d.syncDir(d.dir); err == nil {
			cf, err = openFile(cptPath, os.O_WRONLY, 0)
		} else {
			os.Remove(cptPath)
			err = fmt.Errorf("fsync directory %s: %w", d.dir, err)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: %s: %w", ErrNotWritable, cptName, err)
	}
	d.cmu.Lock()
	d.cpt = cf
	d.cmu.Unlock()
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	d.segs = []segFile{{base: d.fbase, last: d.fbase - 1}}
	d.unbegun = false
	d.makeSpare()
	d.openReserve()
	return nil
}

// unbornSegment reports whether the segment file at path is one whose
// creation a crash cut short: shorter than a header, or nothing but zeros
// (never written), and its size.
func unbornSegment(path string) (int64, bool, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	n := st.Size()
	if n < segHeaderSize {
		return n, true, nil
	}
	// Zeros from the start: the header first, which settles it for
	// every segment that was written.
	p := make([]byte, min(n, 64<<10))
	for off := int64(0); off < n; off += int64(len(p)) {
		k, err := f.ReadAt(p, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, false, err
		}
		for _, b := range p[:k] {
			if b != 0 {
				return n, false, nil
			}
		}
		if k == 0 {
			break
		}
	}
	return n, true, nil
}

// listDir returns the bases of the segment files in dir, sorted, and
// which have an index file.
func listDir(dir string) ([]uint64, map[uint64]bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var bases []uint64
	idxs := make(map[uint64]bool)
	for _, e := range ents {
		name := e.Name()
		num, ext, ok := strings.Cut(name, ".")
		if !ok || len(num) != 20 || (ext != "seg" && ext != "idx") {
			continue
		}
		base, err := strconv.ParseUint(num, 10, 64)
		if err != nil || base == 0 {
			continue
		}
		if ext == "seg" {
			bases = append(bases, base)
		} else {
			idxs[base] = true
		}
	}
	slices.Sort(bases)
	return bases, idxs, nil
}

func readCheckpoint(dir string) (checkpoint, error) {
	p, err := readSmall(filepath.Join(dir, cptName), cptSize)
	if err != nil {
		return checkpoint{}, err
	}
	return decodeCheckpoint(p)
}

func readSegHeader(path string) (segHeader, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return segHeader{}, err
	}
	defer f.Close()
	var p [segHeaderSize]byte
	n, err := io.ReadFull(f, p[:])
	if err != nil && n < segHeaderSize {
		return segHeader{}, fmt.Errorf("header of %d bytes: %w", n, ErrCorrupt)
	}
	return decodeSegHeader(p[:])
}

// maxIndexFile bounds an index file read: entries for a segment of up to
// 4 GiB at one per indexInterval.
const maxIndexFile = idxHeaderSize + 4 + (4<<30/indexInterval)*idxEntrySize

func readIndex(path string) (segIndex, error) {
	p, err := readSmall(path, maxIndexFile)
	if err != nil {
		return segIndex{}, err
	}
	return decodeIndex(p)
}

// readSmall reads a file of at most max bytes (more is ErrCorrupt).
func readSmall(path string, max int64) ([]byte, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s has %d bytes, at most %d: %w", filepath.Base(path), st.Size(), max, ErrCorrupt)
	}
	p := make([]byte, st.Size())
	_, err = io.ReadFull(f, p)
	return p, err
}

// segRead is one segment read back (readSegments).
type segRead struct {
	x    *segIndex   // its index file, if one was read
	mf   *mappedFile // its messages kept (not before the floor); nil on error
	res  segmentResult
	seq  uint64 // its last message
	time int64
	dict []Sender // its sender dictionary
	err  error
}

// readSegments reads the segments of bases (whose headers are given), each
// alone, in parallel (a segment is readable alone: its header says where it
// starts, its dictionary is its own); the caller applies them in order.
func (d *DiskLog) readSegments(bases []uint64, headers []segHeader, idxs map[uint64]bool, floor, synced uint64, holes bool) []segRead {
	reads := make([]segRead, len(bases))
	next := make(chan int, len(bases))
	for i := range bases {
		next <- i
	}
	close(next)
	// The sealed segments' indexes first: they size the columns, and the
	// last one says how many bytes a message takes, to size the newest's.
	perMsg := 0.0
	for i, base := range bases[:len(bases)-1] {
		if idxs[base] {
			path := filepath.Join(d.dir, idxName(base))
			if v, err := readIndex(path); err == nil && v.base == base {
				reads[i].x = &v
				if v.last >= base {
					perMsg = float64(v.segLen-segHeaderSize) / float64(v.last+1-base)
				}
			} else if errors.Is(err, errNotRegular) {
				os.Remove(path) // a pipe, an empty directory: rebuilt in its place
			}
		}
	}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(bases)) {
		wg.Go(func() {
			r := replay{dir: d.dir, floor: floor, holes: holes, entries: make([]Entry, 0, 256), perMsg: perMsg}
			for i := range next {
				rd := &reads[i]
				rd.res, rd.err = r.segment(headers[i], rd.x, i == len(bases)-1, synced)
				if rd.err == nil {
					rd.mf, rd.seq, rd.time, rd.dict = r.mf, r.seq, r.time, r.dec.dict
				}
			}
		})
	}
	wg.Wait()
	return reads
}

// replay reads segments back, one at a time.
type replay struct {
	dir     string
	floor   uint64 // messages before it were dropped by retention
	seq     uint64 // the last message read
	time    int64
	dec     recordDecoder
	entries []Entry
	mf      *mappedFile // the messages kept from the segment being read
	perMsg  float64     // bytes a message takes in a segment, if known
	holes   bool        // a hole past synced may be cut (the checkpoint read back)
}

// readTestMapped, a test hook, runs once a segment being read back is
// mapped, before it is read.
var readTestMapped func(path string)

// segmentResult is what reading one segment found.
type segmentResult struct {
	size  int64 // the end of its last whole record
	torn  int64 // bytes after it, cut (the newest segment only)
	hole  bool  // the cut began at a hole (hole)
	index segIndex
}

// segment reads one segment whose header is h: every record from the
// index's entry at or before the floor (if x is given) to the end, into
// r.mf, the bodies left in the file's mapping (mapped.go). A record that
// does not read back whole is a torn tail if it is in the newest segment
// (last), past the synced messages, and nothing whole follows it;
// otherwise the segment is corrupt.
func (r *replay) segment(h segHeader, x *segIndex, last bool, synced uint64) (res segmentResult, err error) {
	path := filepath.Join(r.dir, segName(h.base))
	p, m, err := readSegment(path)
	if err != nil {
		return res, err
	}
	r.mf = &mappedFile{file: p, m: m}
	defer func() {
		if err != nil {
			m.release()
			r.mf = nil
			return
		}
		r.mf.dict = r.dec.dict
	}()
	// A page the disk cannot read is ErrReadFault, before the release
	// above (readfault.go).
	defer catchFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if readTestMapped != nil {
		readTestMapped(path)
	}
	// Size the columns once and fault them in with one call each: on a VM
	// a page fault per page of fresh memory, as appends grow them, costs
	// more than filling them.
	n := 0
	switch {
	case x != nil && x.last >= max(h.base, r.floor):
		n = int(x.last + 1 - max(h.base, r.floor))
	case x == nil && r.perMsg > 0:
		n = int(float64(len(p)-segHeaderSize)/r.perMsg*1.1) + 16
	}
	if n > 0 {
		r.mf.times, r.mf.starts, r.mf.ends = make([]int64, 0, n), make([]uint32, 0, n), make([]uint32, 0, n)
		r.mf.from, r.mf.ids = make([]uint32, 0, n), make([][16]byte, 0, n)
		prefaultColumns(&columns{times: r.mf.times[:n], ends: r.mf.ends[:n], from: r.mf.from[:n], ids: r.mf.ids[:n]})
		prefaultColumns(&columns{ends: r.mf.starts[:n]})
	}
	res.index = segIndex{base: h.base, last: h.base - 1}
	r.dec = recordDecoder{}
	off := int64(segHeaderSize)
	r.seq, r.time = h.base-1, h.prevTime
	if x != nil && r.floor > h.base {
		// Start at the record holding the floor; the records before it
		// are retention's, never served again. The dictionary, though, is
		// built by every record: read the senders they define.
		if e, ok := x.find(r.floor); ok && e.offset > off {
			if err := r.skim(p, off, e.offset); err != nil {
				return res, err
			}
			res.index.entries = append(res.index.entries, x.entries[:slices.IndexFunc(x.entries, func(y idxEntry) bool { return y.offset >= e.offset })]...)
			off, r.seq, r.time = e.offset, e.seq-1, e.time-1
		}
	}
	idxAt := int64(-indexInterval)
	if n := len(res.index.entries); n > 0 {
		idxAt = res.index.entries[n-1].offset
	}
	for off < int64(len(p)) {
		payload, size, short, ferr := frame(p[off:])
		if ferr == nil {
			r.entries, ferr = r.dec.decode(payload, r.seq, r.time, r.entries[:0])
		}
		if ferr != nil {
			if last && r.seq >= synced {
				cut := torn(p[off:], short)
				if !cut && r.holes && hole(p, off) {
					cut, res.hole = true, true
				}
				if cut {
					res.size, res.torn = off, int64(len(p))-off
					res.index.segLen = off
					r.mf.m.valid = int(off) // the rest is cut from the file
					return res, nil
				}
			}
			return res, fmt.Errorf("offset %d (after message %d): %w", off, r.seq, ferr)
		}
		if off-idxAt >= indexInterval {
			res.index.entries = append(res.index.entries, idxEntry{seq: r.entries[0].Seq, time: r.entries[0].Time, offset: off})
			idxAt = off
		}
		r.keep(r.entries, uint32(off+recHeaderSize))
		off += int64(size)
	}
	res.size = off
	res.index.last, res.index.segLen = r.seq, off
	r.mf.m.valid = int(off)
	return res, nil
}

// skim reads the records of p[from:to] for the senders they define, and
// checks them, without storing their messages.
func (r *replay) skim(p []byte, from, to int64) error {
	for off := from; off < to; {
		payload, size, _, err := frame(p[off:])
		if err == nil {
			r.entries, err = r.dec.decode(payload, r.seq, r.time, r.entries[:0])
		}
		if err != nil {
			return fmt.Errorf("offset %d (after message %d): %w", off, r.seq, err)
		}
		e := &r.entries[len(r.entries)-1]
		r.seq, r.time = e.Seq, e.Time
		off += int64(size)
	}
	return nil
}

// torn reports whether the bytes from a record that did not read back are
// a tail cut short by a crash: the record runs past the end (short), or
// nothing but zeros follows (pages never written), or the record is the
// last thing in the file and nothing whole follows it.
func torn(p []byte, short bool) bool {
	if short || zeros(p) {
		return true
	}
	// A whole-length record with a bad checksum at the very end: its
	// pages were only partly written.
	if len(p) >= recHeaderSize {
		n := int64(p[0]) | int64(p[1])<<8 | int64(p[2])<<16 | int64(p[3])<<24
		if recHeaderSize+n == int64(len(p)) {
			return true
		}
	}
	return false
}

// cutPage is the unit in which a power cut is taken to write a file's
// pages or not: the smallest page of the systems huddle runs on (a larger
// page lost is whole 4 KiB pages lost).
const cutPage = 4096

// hole reports whether the record at off in the segment p, which did not
// read back, lies on a hole a power cut left: the file's pages written
// since the last sync reach the device in any order, or not at all, and a
// page that did not reads as zeros (as far as a sync had not covered it).
// So the bytes from the record to the end of its page are zeros (the
// record's page was not written: it begins at the sync point, or at the
// page), or a page the record spans is zeros from its start (to its end,
// or the file's). Other damage (bytes that are not zeros) is not a power
// cut's.
func hole(p []byte, off int64) bool {
	n := int64(len(p))
	end := off + recHeaderSize // the record's length unread: its page and the next
	if off+4 <= n {
		if l := int64(binary.LittleEndian.Uint32(p[off:])); l >= minPayload && l <= maxRecord && off+recHeaderSize+l <= n {
			end = off + recHeaderSize + l
		}
	}
	for q := off; q < min(end, n); q = (q/cutPage + 1) * cutPage {
		if zeros(p[q:min((q/cutPage+1)*cutPage, n)]) {
			return true
		}
	}
	return false
}

func zeros(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// readSegment maps a segment file whole (see mapFile).
func readSegment(path string) (p []byte, m *mapping, err error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	n := st.Size()
	if n < segHeaderSize || n > maxSegmentFile {
		return nil, nil, fmt.Errorf("%d bytes, want %d to %d: %w", n, segHeaderSize, int64(maxSegmentFile), ErrCorrupt)
	}
	return mapFile(f, n)
}

// maxSegmentFile bounds a segment file read back: bodies are placed in it
// by 32-bit offsets. The largest a log writes is one record past
// maxDiskSegment.
const maxSegmentFile = 1<<32 - 1

// keep adds the messages of a record, read from the file at payloadAt,
// to the segment's mapped messages, skipping those before the floor.
func (r *replay) keep(batch []Entry, payloadAt uint32) {
	last := &batch[len(batch)-1]
	defer func() { r.seq, r.time = last.Seq, last.Time }()
	if last.Seq < r.floor {
		return
	}
	i := 0
	for i < len(batch) && batch[i].Seq < r.floor {
		i++
	}
	mf := r.mf
	if mf.len() == 0 {
		mf.base, mf.prevTime = batch[i].Seq, r.time
		if i > 0 {
			mf.prevTime = batch[i-1].Time
		}
	}
	for ; i < len(batch); i++ {
		e := &batch[i]
		start := payloadAt + r.dec.bodyAt[i]
		mf.times = append(mf.times, e.Time)
		mf.starts = append(mf.starts, start)
		mf.ends = append(mf.ends, start+uint32(len(e.Body)))
		mf.from = append(mf.from, r.dec.from[i])
		mf.ids = append(mf.ids, e.ID)
	}
}

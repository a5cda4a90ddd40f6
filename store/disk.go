package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultFsyncInterval is the fsync interval of a disk log that does not
// sync before each ack.
const DefaultFsyncInterval = time.Second

// DefaultSegmentBytes caps the size of a disk log's segment files.
const DefaultSegmentBytes = 64 << 20

// maxDiskSegment is the largest SegmentBytes: a segment file, one record
// past it at most, stays addressable by 32-bit offsets (maxSegmentFile).
const maxDiskSegment = 1 << 30

// FsyncPolicy says when a disk log's writes reach the device, and so what
// an acknowledged message survives.
type FsyncPolicy struct {
	// Always: a message is acknowledged, and readers see it, only once an
	// fsync covers it ([DiskLog.Durable]): it survives power loss. One
	// fsync serves every append waiting for it (group commit).
	//
	// Otherwise a message is acknowledged, and readers see it, once it is
	// written to the operating system: it survives the daemon's crash (kill
	// -9); the log fsyncs every Interval, so an OS crash or power cut
	// loses at most the last Interval of messages.
	Always bool
	// Interval is how often a log that does not sync always fsyncs what
	// it has written. 0 means DefaultFsyncInterval (1 s).
	Interval time.Duration
}

func (p FsyncPolicy) String() string {
	if p.Always {
		return "always"
	}
	return "every " + p.interval().String()
}

func (p FsyncPolicy) interval() time.Duration {
	if p.Interval == 0 {
		return DefaultFsyncInterval
	}
	return p.Interval
}

// DiskConfig configures a log kept on disk. The zero value of each field
// but Dir means its default.
type DiskConfig struct {
	// Config is the log's retention and dedup window, as for [New]. Files
	// are deleted whole once retention has dropped every message they hold.
	Config
	// Dir is the log's directory, created if missing. Required. One log
	// per directory; the caller makes sure one process uses it.
	Dir string
	// Fsync is the durability policy.
	Fsync FsyncPolicy
	// WriteBehind lets appends leave their records in memory, to be
	// written together: once this many bytes are pending, at every sync
	// (each Fsync.Interval, [DiskLog.Durable], [DiskLog.Sync]), before a
	// segment is sealed, and at Close. 0, the default, writes each
	// record before Append returns. Only for a log whose every append is
	// kept durable elsewhere until a Sync covers it: a crash (kill -9)
	// loses the pending records, which the log's owner must append again
	// (a cell's state machine replays them from raft's log).
	WriteBehind int
	// SegmentBytes is the size past which a segment file is sealed and
	// the next begun. 0 means min(DefaultSegmentBytes, MaxBytes/8), at
	// least 1 MiB. A segment is also sealed once it holds MaxMessages/8
	// messages, so that retention deletes files an eighth of the log at a
	// time. At most 1 GiB.
	SegmentBytes int64
	// Reserve is the room, in bytes, the log keeps on its disk for itself
	// (the file `reserve`, reserve.go): taken when the disk has room to
	// spare, and written into where a full disk refuses a record that
	// retention makes no room for (a log below its limits). 0 means
	// DefaultReserve (1 MiB), or the segment size if smaller; negative,
	// none.
	Reserve int64

	// syncDir makes a directory's entries durable: syncDir, but for the
	// tests that watch which directories are synced.
	syncDir func(dir string) error
	// syncFile fsyncs the active segment for a sync: (*os.File).Sync, but
	// for the tests that make it fail.
	syncFile func(f *os.File) error
	// remove deletes a Reset's files: os.Remove, but for the tests that
	// make it fail (root deletes what permissions forbid).
	remove func(path string) error
	// writeBehind writes the writer's records (pendwriter.go):
	// (*os.File).WriteAt, but for the tests that hold or fail it.
	writeBehind func(f *os.File, p []byte, off int64) (int, error)
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c DiskConfig) Validate() error {
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is required", ErrInvalidConfig)
	case c.Fsync.Interval < 0:
		return fmt.Errorf("%w: fsync interval %v is negative", ErrInvalidConfig, c.Fsync.Interval)
	case c.WriteBehind < 0:
		return fmt.Errorf("%w: WriteBehind %d is negative", ErrInvalidConfig, c.WriteBehind)
	case c.SegmentBytes < 0 || c.SegmentBytes > maxDiskSegment:
		return fmt.Errorf("%w: SegmentBytes %d: want 0 to %d", ErrInvalidConfig, c.SegmentBytes, maxDiskSegment)
	}
	return c.Config.Validate()
}

// Errors of appending to a disk log, beyond those of [Log.Append]. Each is
// wrapped with the cause (a full disk, a read-only file system...).
var (
	// ErrNotWritable: the log's files cannot be written now; nothing was
	// stored. Appends are tried again (the directory is reopened at most
	// once a second), so a freed disk or a directory writable again brings
	// the log back.
	ErrNotWritable = errors.New("store: log cannot be written")
	// ErrFailed: a write could not be undone, or an fsync failed, so what
	// is on disk is no longer known; the log refuses appends until it is
	// opened again (its reads go on).
	ErrFailed = errors.New("store: log failed")
	// ErrOtherEpoch: the directory holds a log of another epoch than the
	// one configured (Config.Epoch): another history.
	ErrOtherEpoch = errors.New("store: log of another epoch")
	// ErrMaybeWritten, with ErrFailed: the append's record was being
	// written when the write failed, and what part of it was written
	// could not be cut back: it may be in the file, whole, and then it is
	// read back at the next open (a part is cut as a torn tail). The
	// messages may be stored: their sender retries them under the same
	// IDs, never new ones. Only the append whose write failed says so;
	// those after it fail with ErrFailed alone, nothing of theirs written.
	ErrMaybeWritten = errors.New("store: record may be written")
	// ErrReadFault: a file the log maps (the history read back at Open:
	// mapped.go) could not be read where the log read it: the disk
	// answered an I/O error for a page not in memory, or the file was
	// cut shorter since it was mapped. Reading it was a fault (SIGBUS)
	// that crashed the process; the read is refused instead (readfault.go).
	ErrReadFault = errors.New("store: a mapped log file could not be read")
	// ErrClosed: the log is closed ([DiskLog.Close], [Log.Close]). What it
	// held is not read, written nor synced any more. Writes (Append,
	// Reset, Sync) answer it with ErrFailed; queries (After, Since) alone.
	ErrClosed = errors.New("store: log closed")
)

// DiskLog is a group's log kept on disk: the in-memory [Log] serves every
// query, and each batch appended is first written as one record to the
// newest segment file. The index of every message held (time, ID, sender,
// where its body is) is in memory, so reads never search the disk: bodies
// appended since the log was opened are in memory too, and those of the
// history read back at Open are the files themselves, mapped (mapped.go),
// read from the page cache. Its methods are safe for concurrent use.
type DiskLog struct {
	mem    *Log
	dir    string
	policy FsyncPolicy
	epoch  uint64
	segMax int64 // seal a segment file past this many bytes,
	segMsg int   // or this many messages
	behind int   // write once this many bytes are pending (WriteBehind)

	wmu     sync.Mutex // serialises writers; guards the fields below
	f       *os.File   // the active segment, open for writing; nil when not writable
	fbase   uint64     // its base
	fsize   int64      // the end of its last record, pending or written
	pend    []byte     // records encoded, not written yet: the file ends at fsize-len(pend)
	fcount  int        // messages in it
	enc     *recordEncoder
	idx     []idxEntry // its index so far
	idxAt   int64      // offset of its last index entry
	segs    []segFile  // every segment file, oldest first; the last is active
	tailSeq uint64     // last message written (== mem's)
	tailT   int64
	failed  error       // sticky: ErrFailed
	roErr   error       // why f is nil (ErrNotWritable)
	roTried time.Time   // when f was last tried
	unbegun bool        // a new log whose files could not be created yet (begin)
	wr      *pendWriter // writes pending records off the appends (WriteBehind; pendwriter.go), or nil

	fmu sync.RWMutex // held for reading while f is synced; for writing to swap f

	smu     sync.Mutex // group commit
	scond   *sync.Cond
	syncing bool
	synced  uint64 // the last sequence number known on the device
	syncErr error  // sticky: ErrFailed
	syncs   atomic.Uint64

	cmu       sync.Mutex // guards the checkpoint's writes and the fields below
	cpt       *os.File
	cptSynced uint64 // synced, as the checkpoint says it
	cptFirst  uint64 // first, as the checkpoint says it (as of this run)
	cptAhead  bool   // the file's first is past what the log holds (openCheckpoint); d.wmu

	spare      bool      // the spare file is there (fromSpare)
	spareTried time.Time // when Expire last tried to make it

	gate *gate // the record gate of the log's file system (room.go)

	resWant  int64     // the reserve's size (DiskConfig.Reserve)
	resSize  int64     // its file's size now (reserve.go)
	resTried time.Time // when it was last made whole, or tried

	syncDir  func(dir string) error // DiskConfig.syncDir
	syncFile func(f *os.File) error // DiskConfig.syncFile
	remove   func(path string) error

	closeOnce sync.Once
	closed    atomic.Bool // Close has stopped the files: set under d.wmu
	stop      chan struct{}
	done      chan struct{}
}

// segFile is one segment file of the log.
type segFile struct {
	base, last uint64 // last: base-1 while empty
	lastTime   int64
}

func segName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }
func idxName(base uint64) string { return fmt.Sprintf("%020d.idx", base) }

const cptName = "checkpoint"

// Open opens the log in cfg.Dir, creating it if need be, and reads it back
// into memory (see [Recovery] for what it found). If the files cannot be
// written (a read-only file system), the log opens for reading and its
// appends fail with ErrNotWritable until they can be. Unless the policy
// syncs always, it starts a goroutine that fsyncs every interval, until
// Close.
//
// Errors: cfg.Validate's (ErrInvalidConfig), ErrCorrupt and
// ErrFutureVersion (naming the file and offset: the log must not serve
// what it holds), and the file system's.
func Open(cfg DiskConfig) (*DiskLog, Recovery, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Recovery{}, err
	}
	mem, err := New(cfg.Config)
	if err != nil {
		return nil, Recovery{}, err
	}
	d := &DiskLog{mem: mem, dir: cfg.Dir, policy: cfg.Fsync, stop: make(chan struct{}), done: make(chan struct{})}
	d.scond = sync.NewCond(&d.smu)
	d.syncDir, d.syncFile = cfg.syncDir, cfg.syncFile
	if d.syncDir == nil {
		d.syncDir = syncDir
	}
	if d.syncFile == nil {
		d.syncFile = (*os.File).Sync
	}
	if d.remove = cfg.remove; d.remove == nil {
		d.remove = os.Remove
	}
	d.segMax = cfg.SegmentBytes
	if d.segMax == 0 {
		d.segMax = min(DefaultSegmentBytes, max(1<<20, mem.lim.maxBytes/8))
	}
	d.segMsg = max(1, mem.lim.maxMessages/8)
	d.behind = cfg.WriteBehind
	switch {
	case cfg.Reserve == 0:
		d.resWant = min(DefaultReserve, d.segMax)
	case cfg.Reserve > 0:
		d.resWant = cfg.Reserve
	}
	start := time.Now()
	rec, err := d.recover()
	if err != nil {
		d.closeFiles()
		mem.unmapAll()
		return nil, rec, fmt.Errorf("open log %s: %w", cfg.Dir, err)
	}
	rec.Took = time.Since(start)
	d.gate = gateOf(d.dir)
	if cfg.Epoch != 0 && d.epoch != cfg.Epoch {
		d.closeFiles()
		mem.unmapAll() // the history read back: a retried open mapped it again
		return nil, rec, fmt.Errorf("open log %s: it holds epoch %d, want %d: %w", cfg.Dir, d.epoch, cfg.Epoch, ErrOtherEpoch)
	}
	mem.epoch = d.epoch
	mem.holdBack = cfg.Fsync.Always
	if d.behind > 0 {
		write := cfg.writeBehind
		if write == nil {
			write = (*os.File).WriteAt
		}
		d.startWriter(write)
	}
	if !cfg.Fsync.Always {
		go d.syncLoop(cfg.Fsync.interval())
	} else {
		close(d.done)
	}
	return d, rec, nil
}

// Epoch names the log's history; it is kept in the files, and changes only
// when they are lost (see Recovery.NewEpoch).
func (d *DiskLog) Epoch() uint64 { return d.epoch }

// Policy returns the log's durability policy.
func (d *DiskLog) Policy() FsyncPolicy { return d.policy }

// Lookup is [Log.Lookup].
func (d *DiskLog) Lookup(batch []Entry, acks []Ack) []Ack { return d.mem.Lookup(batch, acks) }

// Remembers is [Log.Remembers].
func (d *DiskLog) Remembers(after uint64) bool { return d.mem.Remembers(after) }

// Tail is [Log.Tail]: the last message appended, synced or not.
func (d *DiskLog) Tail() (uint64, int64) { return d.mem.Tail() }

// After is [Log.After]. Under FsyncPolicy.Always it sees only what is
// synced. After Close it returns ErrClosed.
func (d *DiskLog) After(seq uint64, limit int, dst []Message) ([]Message, Cursor, error) {
	if d.closed.Load() {
		return closedQuery(dst, seq)
	}
	return d.mem.After(seq, limit, dst)
}

// Since is [Log.Since]. After Close it returns ErrClosed.
func (d *DiskLog) Since(ts int64, limit int, dst []Message) ([]Message, Cursor, error) {
	if d.closed.Load() {
		return closedQuery(dst, 0)
	}
	return d.mem.Since(ts, limit, dst)
}

// Changed is [Log.Changed].
func (d *DiskLog) Changed() <-chan struct{} { return d.mem.Changed() }

// Last is [Log.Last].
func (d *DiskLog) Last() uint64 { return d.mem.Last() }

// Stats is [Log.Stats].
func (d *DiskLog) Stats() Stats { return d.mem.Stats() }

// Append encodes batch, stamped, as one record of the newest segment file,
// writes it, then stores it in memory (see [Log.Append] for what it
// checks). Once it returns the batch is written to the operating system,
// unless the log lets writes lag (DiskConfig.WriteBehind): then the record
// may wait in memory, with the records after it, for the next write. Under
// FsyncPolicy.Always, readers see it only once [DiskLog.Durable] has
// synced it. Retention then deletes the files whose messages are all gone.
//
// Errors: Log.Append's (the log untouched), ErrNotWritable (wrapping the
// cause; nothing stored) and ErrFailed (with ErrMaybeWritten where the
// record may have been written).
func (d *DiskLog) Append(batch []Entry) error {
	if err := d.mem.check(batch); err != nil {
		return err
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.failed != nil {
		return d.failed
	}
	if err := d.mem.follows(batch); err != nil {
		return err
	}
	if err := d.writable(); err != nil {
		return err
	}
	at, err := d.recordRoom(batch)
	if err != nil {
		return err
	}
	if d.fcount == 0 || at-d.idxAt >= indexInterval {
		d.idx = append(d.idx, idxEntry{seq: batch[0].Seq, time: batch[0].Time, offset: at})
		d.idxAt = at
	}
	d.fcount += len(batch)
	last := &batch[len(batch)-1]
	d.tailSeq, d.tailT = last.Seq, last.Time
	d.segs[len(d.segs)-1].last, d.segs[len(d.segs)-1].lastTime = last.Seq, last.Time
	d.mem.appendChecked(batch) // checked above, under d.wmu: memory's one writer
	d.retain()
	d.fillReserve(false)
	return nil
}

// record encodes batch as the next record of the active segment, after
// sealing it if it is full, and writes it unless writes lag (WriteBehind);
// it returns the record's offset. On error nothing of it is in the file
// or pending. d.wmu is held.
func (d *DiskLog) record(batch []Entry) (int64, error) {
	// The writer's last write, if it has ended (or, with as much again
	// pending meanwhile, once it ends): a failed one's records are
	// pending again, before this one's.
	if err := d.reap(len(d.pend) >= d.pendMax()); err != nil {
		return 0, err
	}
	if d.sealsFor(batch) {
		if err := d.rotate(false); err != nil {
			return 0, err
		}
	}
	start := len(d.pend)
	d.pend = d.enc.encode(d.pend, batch)
	n := int64(len(d.pend) - start)
	if n-recHeaderSize > maxRecord {
		d.pend = d.pend[:start]
		d.enc.undo()
		return 0, fmt.Errorf("store: append a record of %d bytes: %w", n, ErrBatchTooLarge)
	}
	at := d.fsize
	d.fsize += n
	// After a write refused (a full disk: a sync's, or the writer's), each
	// append writes inline until one is written: with writes lagging, the
	// refusal was met only by the append that found WriteBehind bytes
	// pending, and a cell's leader whose group logs' disk was full took
	// and acknowledged sends for over a minute (256 KiB of them at a
	// loaded workload's pace) before its state machine stalled (session 22).
	if (len(d.pend) >= d.behind || d.wr != nil && d.wr.failed) && !d.writeBehind() {
		if err := d.write(); err != nil {
			d.pend, d.fsize = d.pend[:start], at
			d.enc.undo()
			return 0, err
		}
	}
	return at, nil
}

// sealsFor reports whether the active segment is sealed before batch's
// record, which then begins the next. d.wmu is held.
func (d *DiskLog) sealsFor(batch []Entry) bool {
	return d.fcount > 0 && (d.fsize >= d.segMax || d.fcount+len(batch) > d.segMsg)
}

// maxKeptPend bounds the buffer of pending records kept from one write to
// the next.
const maxKeptPend = 4 << 20

// write writes the pending records at the end of the active segment. On
// error none of them is in the file (a partial write is cut back) and
// they stay pending, unless the cut failed: then the log has failed. d.wmu
// is held, and the writer settled.
func (d *DiskLog) write() error {
	at := d.fsize - int64(len(d.pend))
	if _, err := d.f.WriteAt(d.pend, at); err != nil {
		// Cut back what part of the records was written, whatever the
		// count says: os.File.WriteAt does not count the bytes of a
		// short write that ended in an error.
		if terr := d.f.Truncate(at); terr != nil {
			d.failed = fmt.Errorf("%w: a partial write to %s could not be undone (%v) after: %v", ErrFailed, d.f.Name(), terr, err)
			return fmt.Errorf("%w (%w)", d.failed, ErrMaybeWritten)
		}
		// WriteAt's error names the file (a *PathError): it was
		// named twice.
		if pe := (*fs.PathError)(nil); !errors.As(err, &pe) {
			err = fmt.Errorf("write %s: %w", d.f.Name(), err)
		}
		if d.wr != nil {
			d.wr.failed = true // the next append writes inline (record)
		}
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	if cap(d.pend) > maxKeptPend {
		d.pend = nil
	}
	d.pend = d.pend[:0]
	if d.wr != nil {
		d.wr.failed = false
	}
	return nil
}

// writable makes sure d.f is open for writing, trying again at most once
// a second after a failure. d.wmu is held.
func (d *DiskLog) writable() error {
	if d.f != nil {
		return nil
	}
	if time.Since(d.roTried) < time.Second {
		return d.roErr
	}
	d.roTried = time.Now()
	if d.unbegun {
		// A new log opened where nothing could be written: its files
		// are created now.
		d.roErr = d.begin()
		return d.roErr
	}
	if len(d.segs) == 0 {
		// A Reset deleted the files and could not begin the next.
		d.roErr = d.rebegin()
		return d.roErr
	}
	f, err := openFile(filepath.Join(d.dir, segName(d.fbase)), os.O_WRONLY, 0)
	if err == nil {
		err = f.Truncate(d.fsize) // a torn tail found while read-only (nothing is pending)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		d.roErr = fmt.Errorf("%w: open %s: %w", ErrNotWritable, segName(d.fbase), err)
		return d.roErr
	}
	if err := d.openCheckpoint(); err != nil {
		f.Close()
		d.roErr = fmt.Errorf("%w: %w", ErrNotWritable, err)
		return d.roErr
	}
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	d.roErr = nil
	return nil
}

// rebegin begins the files of a log whose Reset deleted them and could
// not create the next: a segment at the memory log's tail, synced with its
// directory entry. d.wmu is held.
func (d *DiskLog) rebegin() error {
	path := filepath.Join(d.dir, segName(d.fbase))
	f, err := createSegment(path, segHeader{epoch: d.epoch, base: d.fbase, prevTime: d.tailT})
	if err == nil {
		if err = d.syncDir(d.dir); err != nil {
			f.Close()
			os.Remove(path)
			err = fmt.Errorf("fsync directory %s: %w", d.dir, err)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	d.fmu.Lock()
	d.f = f
	d.fmu.Unlock()
	d.fsize, d.fcount = segHeaderSize, 0
	d.enc = newRecordEncoder()
	d.idx, d.idxAt = nil, 0
	d.segs = []segFile{{base: d.fbase, last: d.fbase - 1, lastTime: d.tailT}}
	return nil
}

// rotate seals the active segment (synced, its index written) and begins
// the next, empty but for its header, synced with its directory entry;
// from the spare file if it cannot be created and spare is set. A log
// with a writer seals on it instead, unless spare is set (seal.go). On
// error the active segment stays as it was. d.wmu is held.
func (d *DiskLog) rotate(spare bool) error {
	if err := d.settle(); err != nil {
		return err
	}
	if !spare && d.sealsBehind() {
		if err := d.rotateBehind(); !errors.Is(err, errNoNext) {
			return err
		}
		// Sealed inline, the next file created under its name.
	}
	// Straight through write: a seal is a record's (record), whose
	// refusal for want of room makes room for what is pending too
	// (recordRoom, alone at the gate, which it may hold here), or
	// retention's (retain), which tries again at a later append.
	if len(d.pend) > 0 {
		if err := d.write(); err != nil {
			return err
		}
	}
	if err := d.f.Sync(); err != nil {
		d.failed = fmt.Errorf("%w: fsync %s: %v", ErrFailed, d.f.Name(), err)
		return d.failed
	}
	x := segIndex{base: d.fbase, last: d.tailSeq, segLen: d.fsize, entries: d.idx}
	// The index is an aid: a missing or damaged one is rebuilt on open.
	writeSynced(filepath.Join(d.dir, idxName(d.fbase)), x.encode(nil))

	base := d.tailSeq + 1
	path := filepath.Join(d.dir, segName(base))
	h := segHeader{epoch: d.epoch, base: base, prevTime: d.tailT}
	f, err := createSegment(path, h)
	if err != nil && spare {
		f, err = d.fromSpare(path, h)
	} else if err == nil && !d.spare {
		d.makeSpare()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotWritable, err)
	}
	if err := d.syncDir(d.dir); err != nil {
		// The new file's entry may not survive a power cut, nor a
		// message acknowledged in it: as a failed fsync (what reached
		// the device is not known), the log fails. The file, empty
		// but for its header, is what a crash here would leave.
		f.Close()
		d.failed = fmt.Errorf("%w: fsync directory %s after creating %s: %v", ErrFailed, d.dir, filepath.Base(path), err)
		return d.failed
	}
	d.fmu.Lock()
	old := d.f
	d.f = f
	d.fmu.Unlock()
	old.Close()
	d.begun(base, f)
	return nil
}

// begun makes f, just created at base, the active segment. d.wmu is held.
func (d *DiskLog) begun(base uint64, f *os.File) {
	d.fbase, d.fsize, d.fcount = base, segHeaderSize, 0
	d.enc = newRecordEncoder()
	d.idx, d.idxAt = nil, 0
	d.segs = append(d.segs, segFile{base: base, last: base - 1, lastTime: d.tailT})
}

// createSegment creates a segment file holding only its header, synced.
func createSegment(path string, h segHeader) (*os.File, error) {
	f, err := openFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	// err is the function's: a header that could not be written (a full
	// disk) or synced fails the creation. (Declared in the if, it was
	// the if's own, and a segment without a header was used: its records
	// behind 48 zero bytes, a file the next start refused as corrupt.)
	_, err = f.Write(h.encode(nil))
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create %s: %w", filepath.Base(path), err)
	}
	return f, nil
}

// spareName is a file of a segment header's size, its blocks allocated
// and synced, kept in the log's directory for the one rotation that must
// succeed on a full disk: retention's, when an age limit has emptied the
// only segment, whose file can go only once the next one exists (its
// header says where the sequence stands). Writing a header over the
// spare's bytes and renaming it takes no new space.
const spareName = "spare"

// makeSpare creates the spare file, if there is room. d.wmu is held, or
// the log is being opened.
func (d *DiskLog) makeSpare() {
	if writeSynced(filepath.Join(d.dir, spareName), make([]byte, segHeaderSize)) == nil {
		d.spare = true
	}
}

// fromSpare makes the spare file the segment at path, with header h,
// synced, and opens it; the caller syncs the directory. d.wmu is held.
func (d *DiskLog) fromSpare(path string, h segHeader) (*os.File, error) {
	if !d.spare {
		return nil, errors.New("no spare file")
	}
	sp := filepath.Join(d.dir, spareName)
	f, err := openFile(sp, os.O_WRONLY, 0)
	if err != nil {
		d.spare = false
		return nil, fmt.Errorf("spare: %w", err)
	}
	_, err = f.WriteAt(h.encode(nil), 0)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		err = os.Rename(sp, path)
	}
	if err != nil {
		return nil, fmt.Errorf("spare for %s: %w", filepath.Base(path), err)
	}
	d.spare = false
	// Opened again under its name, which errors name.
	if f, err = openFile(path, os.O_WRONLY, 0); err != nil {
		os.Remove(path) // not the next segment after all
		return nil, err
	}
	return f, nil
}

// retain deletes the sealed segment files whose messages retention has
// all dropped; and when it has dropped all the active one holds, begins a
// new one so that the old can go too (an age limit empties files), from
// the spare if the disk is too full to create one. Before it deletes a
// file it makes the checkpoint say, durably, that the history begins past
// it: a segment missing below that point was deleted by retention, one
// missing above it was lost (recover). d.wmu is held, the gate not.
func (d *DiskLog) retain() {
	floor := d.mem.firstHeld()
	if len(d.segs) == 1 && d.fcount > 0 && floor > d.tailSeq && d.f != nil {
		// Through the gate, as a record's seal is (record): its pending
		// records and the next segment's header took room ungated,
		// another log's made alone at the gate on a full disk (room.go).
		if d.throughGate(func() error { return d.rotate(true) }) != nil {
			return
		}
	}
	if n := d.filesBefore(floor); n == 0 || !d.dropFiles(n, floor) {
		return
	}
	if !d.spare {
		d.makeSpare() // from the space just freed, if the files were not mapped
	}
}

// filesBefore counts the oldest segment files whose messages all come
// before floor; the active one is never counted, nor one whose seal is
// out (its index would be written after the file was deleted). d.wmu is
// held.
func (d *DiskLog) filesBefore(floor uint64) int {
	n, sealed := 0, len(d.segs)-1
	if d.sealOut() != nil {
		sealed-- // the file before the active one is being sealed (seal.go)
	}
	for n < sealed && d.segs[n].last < floor {
		n++
	}
	return n
}

// dropFiles deletes the files of the n oldest segments, whose messages
// all come before floor, once the checkpoint says, durably, that the
// history begins at floor: a crash between them leaves files the next
// start knows to delete, never a history that begins in files deleted.
// It reports false, deleting nothing, if the checkpoint could not be
// written: the files stay until a pass that can say so. d.wmu is held.
func (d *DiskLog) dropFiles(n int, floor uint64) bool {
	if d.checkpoint(0, floor, true) != nil {
		return false
	}
	for _, s := range d.segs[:n] {
		os.Remove(filepath.Join(d.dir, segName(s.base)))
		os.Remove(filepath.Join(d.dir, idxName(s.base)))
	}
	d.segs = d.segs[n:]
	return true
}

// Expire applies the age limit as of now ([Log.Expire]) and deletes the
// files it emptied. It makes the spare again if it was used and could not
// be made then (the disk was full: the space of the files deleted comes
// back once their mappings go), trying at most once a second.
func (d *DiskLog) Expire(now time.Time) {
	if d.closed.Load() {
		return // its files are closed: nothing is deleted any more
	}
	d.mem.Expire(now)
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.retain()
	if !d.spare && d.f != nil && time.Since(d.spareTried) >= time.Second {
		d.spareTried = time.Now()
		d.makeSpare()
	}
	d.fillReserve(false)
}

// Durable returns once the messages up to seq are as durable as an ack
// promises: at once unless the policy syncs always; else once an fsync
// covers them, one fsync for every caller waiting meanwhile (group commit),
// and then readers see them. (With WriteBehind under the interval policy,
// they may not be written yet: the log's owner keeps them durable.)
// Errors: ErrNotWritable (the pending records could not be written: tried
// again at the next call) and ErrFailed (the fsync failed: the log refuses
// appends from then on).
func (d *DiskLog) Durable(seq uint64) error {
	if !d.policy.Always {
		return nil
	}
	return d.syncTo(seq)
}

// Sync writes what is pending, then fsyncs everything appended so far (and
// publishes it under FsyncPolicy.Always), sharing the fsync with concurrent
// callers. Errors: ErrNotWritable (the pending records could not be
// written: they stay pending) and ErrFailed.
func (d *DiskLog) Sync() error {
	d.wmu.Lock()
	seq := d.tailSeq
	d.wmu.Unlock()
	return d.syncTo(seq)
}

// syncTo returns once an fsync has covered seq: it runs one if none is
// running, or waits for the running one and, if that started too early,
// for the next.
func (d *DiskLog) syncTo(seq uint64) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	for d.synced < seq {
		if d.syncErr != nil {
			return d.syncErr
		}
		if d.syncing {
			d.scond.Wait()
			continue
		}
		d.syncing = true
		d.smu.Unlock()
		target, err := d.fsync()
		d.smu.Lock()
		d.syncing = false
		d.scond.Broadcast()
		if errors.Is(err, ErrNotWritable) {
			return err // pending records not written (a full disk): tried again
		}
		if err != nil {
			// The writers' lock is taken without this one: a Reset holds
			// it while it takes this one (both waited for ever).
			d.syncErr = err
			d.smu.Unlock()
			d.wmu.Lock()
			d.failed = err
			d.wmu.Unlock()
			d.smu.Lock()
			return err
		}
		if target > d.synced {
			d.synced = target
			d.checkpoint(target, 0, false)
		}
		if target < seq { // asked for more than was written: a bug
			return fmt.Errorf("store: sync to %d: only %d written", seq, target)
		}
	}
	return nil
}

// fsync writes the pending records, syncs the active segment and returns
// the last sequence number it covers; it publishes them under
// FsyncPolicy.Always. (Sealed segments were synced when sealed: a seal
// on the writer is waited for first, without d.wmu.)
func (d *DiskLog) fsync() (uint64, error) {
	if err := d.lockSealed(); err != nil {
		d.wmu.Unlock()
		return 0, err
	}
	if d.closed.Load() {
		// What is pending (Close's own sync failed: a full disk) has no
		// file left to go to.
		err := d.failed
		d.wmu.Unlock()
		return 0, err
	}
	if err := d.settle(); err != nil {
		d.wmu.Unlock()
		return 0, err
	}
	if len(d.pend) > 0 {
		// Through the gate, into the reserve on a full disk (room.go).
		if err := d.writeRoom(); err != nil {
			d.wmu.Unlock()
			return 0, err
		}
	}
	target, f := d.tailSeq, d.f
	d.fmu.RLock()
	d.wmu.Unlock()
	var err error
	if f != nil {
		err = d.syncFile(f)
		d.syncs.Add(1)
	}
	d.fmu.RUnlock()
	if err != nil {
		return 0, fmt.Errorf("%w: fsync %s: %v", ErrFailed, f.Name(), err)
	}
	if d.policy.Always {
		d.mem.commit(target)
	}
	return target, nil
}

// openCheckpoint opens the checkpoint, for the writes after each sync.
// If it says the history begins past what the log holds (cptAhead: a
// Reset a crash cut short, or a power cut that took the tail retention
// had passed), it is rewritten, durably, before anything is appended that
// it would hide. d.wmu is held, or the log is being opened.
func (d *DiskLog) openCheckpoint() error {
	d.cmu.Lock()
	var err error
	if d.cpt == nil {
		// Without it, retention could delete no file (dropFiles).
		d.cpt, err = openFile(filepath.Join(d.dir, cptName), os.O_WRONLY|os.O_CREATE, 0o600)
	}
	d.cmu.Unlock()
	if err != nil {
		return err
	}
	if d.cptAhead {
		if err := d.checkpoint(0, 0, true); err != nil {
			return fmt.Errorf("%s: %w", cptName, err)
		}
		d.cptAhead = false
	}
	return nil
}

// checkpoint rewrites the checkpoint: synced, if more than it said, and
// first, the first message the history holds (0: the memory log's first),
// if more than it said. durable: it is fsynced too, as it is before
// retention or a Reset deletes a file; otherwise it is an aid to recovery,
// not synced itself: a stale one errs on the safe side.
func (d *DiskLog) checkpoint(synced, first uint64, durable bool) error {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.cpt == nil {
		return errors.New("store: no checkpoint file open")
	}
	if first == 0 {
		first = d.mem.firstHeld()
	}
	d.cptSynced, d.cptFirst = max(d.cptSynced, synced), max(d.cptFirst, first)
	c := checkpoint{epoch: d.epoch, synced: d.cptSynced, first: d.cptFirst}
	p := c.encode()
	_, err := d.cpt.WriteAt(p[:], 0)
	if err == nil && durable {
		err = d.cpt.Sync()
	}
	return err
}

// syncLoop fsyncs every interval while something is written but not
// synced.
func (d *DiskLog) syncLoop(every time.Duration) {
	defer close(d.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.Sync()
		}
	}
}

// Close stops the sync loop, writes and syncs what is appended, and closes
// the files. It is safe to call more than once; it returns the final
// sync's error.
//
// After Close, Append and Reset fail with ErrClosed (and ErrFailed), and
// so do Sync, and Durable where it waits for a sync (FsyncPolicy.Always),
// unless what they wait for was synced already (Close's own sync, if it
// failed, left records unsynced: they are lost); queries return ErrClosed
// (no message), and Expire does nothing. Messages read from
// the log must not be used after Close: the bodies of history read back
// at Open are the files' mappings, unmapped here (mapped.go).
func (d *DiskLog) Close() error {
	var err error
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.done
		if d.writableNow() {
			err = d.Sync()
		}
		d.wmu.Lock()
		d.settle()
		d.failed = fmt.Errorf("%w: %w", ErrFailed, ErrClosed)
		d.closed.Store(true)
		d.wmu.Unlock()
		d.wr.stop()
		d.mem.Close()
		d.closeFiles()
		d.mem.unmapAll()
	})
	return err
}

func (d *DiskLog) writableNow() bool {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.f != nil && d.failed == nil
}

func (d *DiskLog) closeFiles() {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.cpt != nil {
		d.cpt.Close()
		d.cpt = nil
	}
}

// writeSynced writes a small file whole and syncs it.
func writeSynced(path string, data []byte) error {
	f, err := openFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// errNotRegular is wrapped by the errors of openFile for what is not a
// regular file, with ErrCorrupt.
var errNotRegular = errors.New("not a regular file")

// openFile is os.OpenFile for the log's files, which are regular files:
// anything else under their names (a named pipe, a directory, a device)
// is refused, with errNotRegular and ErrCorrupt, and never waited on. (A
// named pipe in place of a segment, opened as a file, held the daemon's
// start for ever, until session 17.)
func openFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	// O_NONBLOCK: opening a named pipe waits for its other end without
	// it; a regular file ignores it.
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK, perm)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) { // a pipe open for writing with no reader
			err = fmt.Errorf("%s: %w (%w)", filepath.Base(path), errNotRegular, ErrCorrupt)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is %w (%v) (%w)", filepath.Base(path), errNotRegular, st.Mode().Type(), ErrCorrupt)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// syncDir makes the directory's entries (a file created) durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

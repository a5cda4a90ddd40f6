package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// DefaultSegmentBytes is the size past which a segment is closed and the
// next batch of entries starts a new one.
const DefaultSegmentBytes = 64 << 20

const (
	segmentMagic   = "hudrlog\x00"
	segmentVersion = 1
	segmentHeader  = 24
	segmentExt     = ".seg"
)

var (
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("raftlog: store closed")
	// ErrCorrupt is what a CorruptError matches with errors.Is.
	ErrCorrupt = errors.New("raftlog: corrupt")
	// ErrNotContiguous is returned by StoreLogs for entries that do not
	// follow the log's last one (or each other) index by index.
	ErrNotContiguous = errors.New("raftlog: entries not contiguous with the log")
	// ErrMiddleDelete is returned by DeleteRange for a range that touches
	// neither end of the log.
	ErrMiddleDelete = errors.New("raftlog: delete inside the log")
	// ErrTooLarge is returned by StoreLogs for an entry whose record would
	// pass MaxRecordBytes.
	ErrTooLarge = errors.New("raftlog: entry too large")
)

// CorruptError says where a store's files hold what this package did not
// write: Open refuses to serve such a store.
type CorruptError struct {
	Path   string
	Offset int64 // in Path; -1 for the whole file
	Reason string
}

func (e *CorruptError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("raftlog: %s is corrupt: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("raftlog: %s is corrupt at offset %d: %s", e.Path, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Options configures a store. The zero value of each field is its default.
type Options struct {
	// Sync fsyncs each StoreLogs before it returns (the cell's "always"
	// fsync policy). Otherwise StoreLogs returns once its write reached the
	// operating system, and the caller calls Sync on its own schedule.
	Sync bool
	// SegmentBytes is the size past which a segment is closed. Default
	// DefaultSegmentBytes.
	SegmentBytes int64
}

// Store is a raft.LogStore, raft.MonotonicLogStore and raft.StableStore
// on files in one directory. It is safe for concurrent use, and starts no
// goroutine.
type Store struct {
	dir  string
	opts Options

	mu     sync.RWMutex
	closed bool
	// failed, once set, is what every write returns: a write or fsync
	// failed and left the files in a state the store no longer knows.
	failed error
	state  state
	// stateFile holds state (state.go).
	stateFile *stateFileOf
	// segs are the log's segments in index order; the last one is written.
	segs []*segment
	// first and last are the log's first and last indexes, 0 if empty.
	first, last uint64
	// dirty says a segment was created or removed since the directory was
	// last fsynced.
	dirty bool
	buf   []byte // StoreLogs's encoding, reused
	// syncFile, if set, fsyncs a segment's file in place of
	// (*os.File).Sync: for the tests that hold an fsync open or fail it.
	syncFile func(*os.File) error
}

// segment is one segment file and where its records are.
type segment struct {
	path  string
	f     *os.File
	first uint64  // the index of its first record
	offs  []int64 // offs[i] is where record first+i starts
	size  int64   // the end of its last record
}

// end is the offset after record i.
func (g *segment) end(i int) int64 {
	if i+1 < len(g.offs) {
		return g.offs[i+1]
	}
	return g.size
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }

// Open opens the store in dir, creating dir if needed. It reads every
// segment, cuts a torn tail off the last one, and returns a CorruptError
// (ErrCorrupt) for anything else it cannot read.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	// The state file is written (created, or converted from version 1)
	// only once every segment has read back: a directory refused is left
	// as it was.
	st, seq, rewrite, err := readState(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, state: st}
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if s.stateFile, err = openState(dir, st, seq, rewrite); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// load opens and reads dir's segments.
func (s *Store) load() error {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	var firsts []uint64
	for _, e := range names {
		name := e.Name()
		if !strings.HasSuffix(name, segmentExt) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil || segmentName(first) != name {
			return &CorruptError{Path: filepath.Join(s.dir, name), Offset: -1, Reason: "not a segment's name"}
		}
		firsts = append(firsts, first)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	for i, first := range firsts {
		g, err := s.readSegment(first, i == len(firsts)-1)
		if err != nil {
			return err
		}
		if g == nil {
			continue // a last segment created and never written
		}
		if n := len(s.segs); n > 0 {
			prev := s.segs[n-1]
			if want := prev.first + uint64(len(prev.offs)); g.first != want {
				return &CorruptError{Path: g.path, Offset: -1,
					Reason: fmt.Sprintf("starts at index %d, after a segment that ends before %d", g.first, want)}
			}
		}
		s.segs = append(s.segs, g)
	}
	// The head may be past segments that a compaction did not get to
	// remove before it stopped: finish its work.
	for len(s.segs) > 0 {
		g := s.segs[0]
		if g.first+uint64(len(g.offs)) > s.state.head {
			break
		}
		g.f.Close()
		if err := os.Remove(g.path); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		s.segs = s.segs[1:]
		s.dirty = true
	}
	if len(s.segs) > 0 {
		g, l := s.segs[0], s.segs[len(s.segs)-1]
		// (A last segment rolled to and never written ends before its first.)
		s.first, s.last = max(g.first, s.state.head), l.first+uint64(len(l.offs))-1
		if s.last < s.first {
			s.first, s.last = 0, 0
		}
	}
	if s.dirty {
		if err := SyncDir(s.dir); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		s.dirty = false
	}
	return nil
}

// readSegment opens and reads segment first. For the last one, it cuts a
// torn tail off, and returns nil for one too short for its header (created
// and never written: it is removed).
func (s *Store) readSegment(first uint64, last bool) (*segment, error) {
	path := filepath.Join(s.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	g := &segment{path: path, f: f, first: first}
	b, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	corrupt := func(off int, reason string) (*segment, error) {
		f.Close()
		return nil, &CorruptError{Path: path, Offset: int64(off), Reason: reason}
	}
	if len(b) < segmentHeader || allZero(b[:segmentHeader]) {
		if !last || !allZero(b) {
			return corrupt(0, "no segment header")
		}
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("raftlog: %w", err)
		}
		s.dirty = true
		return nil, nil
	}
	if string(b[:8]) != segmentMagic {
		return corrupt(0, "not a segment (bad magic)")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != segmentVersion {
		return corrupt(8, fmt.Sprintf("format version %d, want %d", v, segmentVersion))
	}
	if h := binary.LittleEndian.Uint64(b[16:]); h != first {
		return corrupt(16, fmt.Sprintf("header says first index %d, name says %d", h, first))
	}
	off := segmentHeader
	var l raft.Log
	for off < len(b) {
		n, err := decodeRecord(b[off:], &l)
		if err == nil && l.Index != first+uint64(len(g.offs)) {
			return corrupt(off, fmt.Sprintf("record of index %d where %d belongs", l.Index, first+uint64(len(g.offs))))
		}
		if err != nil {
			if !last {
				return corrupt(off, err.Error())
			}
			if validNext(b, off, first+uint64(len(g.offs))+1) {
				return corrupt(off, err.Error()+", and a valid record follows it")
			}
			// A torn tail: cut it off.
			if err := f.Truncate(int64(off)); err != nil {
				f.Close()
				return nil, fmt.Errorf("raftlog: cut the torn tail of %s: %w", path, err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, fmt.Errorf("raftlog: cut the torn tail of %s: %w", path, err)
			}
			break
		}
		g.offs = append(g.offs, int64(off))
		off += n
	}
	g.size = int64(min(off, len(b)))
	return g, nil
}

// validNext says whether a valid record of index want follows the bad one
// at off in b, by the bad record's length: if so, the bad record is not a
// torn tail but corruption in the middle of the log.
func validNext(b []byte, off int, want uint64) bool {
	if len(b)-off < recordPrefix {
		return false
	}
	n := binary.LittleEndian.Uint32(b[off:])
	next := off + recordPrefix + int(n)
	if n < recordFixed || n > MaxRecordBytes || next >= len(b) {
		return false
	}
	var l raft.Log
	_, err := decodeRecord(b[next:], &l)
	return err == nil && l.Index == want
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// FirstIndex returns the log's first index, 0 if it is empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.first, nil
}

// LastIndex returns the log's last index, 0 if it is empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.last, nil
}

// IsMonotonic tells raft that StoreLogs takes no gap after the last entry
// (raft.MonotonicLogStore): raft then empties the log after installing a
// snapshot rather than leave a gap behind it.
func (s *Store) IsMonotonic() bool { return true }

// GetLog reads entry index into l, whose Data and Extensions are its own.
// Errors: raft.ErrLogNotFound for an index outside the log, a CorruptError
// for a record that does not read back as written.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		return raft.ErrLogNotFound
	}
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > index }) - 1
	g := s.segs[i]
	k := int(index - g.first)
	off, end := g.offs[k], g.end(k)
	b := make([]byte, end-off)
	if _, err := g.f.ReadAt(b, off); err != nil {
		return fmt.Errorf("raftlog: read index %d: %w", index, err)
	}
	if _, err := decodeRecord(b, l); err != nil || l.Index != index {
		if err == nil {
			err = fmt.Errorf("holds index %d", l.Index)
		}
		return &CorruptError{Path: g.path, Offset: off, Reason: fmt.Sprintf("record of index %d: %v", index, err)}
	}
	return nil
}

// StoreLog stores one entry, as StoreLogs does.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends logs, which follow the log's last entry index by index
// (any index if the log is empty), with one write: on the device when it
// returns with Options.Sync, written to the operating system otherwise.
// Errors: ErrNotContiguous, ErrTooLarge (nothing is stored), ErrClosed, and
// the file system's.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.failed != nil:
		return s.failed
	}
	next := logs[0].Index
	if s.last != 0 {
		next = s.last + 1
	}
	if next == 0 {
		return fmt.Errorf("%w: index 0 (raft's first is 1)", ErrNotContiguous)
	}
	size := 0
	for i, l := range logs {
		if l.Index != next+uint64(i) {
			return fmt.Errorf("%w: index %d where %d belongs", ErrNotContiguous, l.Index, next+uint64(i))
		}
		n := recordLen(l)
		if n-recordPrefix > MaxRecordBytes {
			return fmt.Errorf("%w: index %d takes %d bytes, more than %d", ErrTooLarge, l.Index, n, MaxRecordBytes)
		}
		size += n
	}
	if s.last == 0 && s.state.head > next {
		// An emptied log starts again below its old head: drop the head.
		st := s.state
		st.head = 0
		if err := s.stateFile.write(st); err != nil {
			return err
		}
		s.state = st
	}
	g, err := s.active(next)
	if err != nil {
		return err
	}
	if cap(s.buf) < size || cap(s.buf) > 4*size+(1<<20) {
		s.buf = make([]byte, 0, size)
	}
	buf := s.buf[:0]
	offs := g.offs
	for _, l := range logs {
		offs = append(offs, g.size+int64(len(buf)))
		buf = appendRecord(buf, l)
	}
	s.buf = buf
	if _, err := g.f.WriteAt(buf, g.size); err != nil {
		return s.undo(g, fmt.Errorf("raftlog: append: %w", err))
	}
	if s.opts.Sync {
		if err := s.syncLocked(); err != nil {
			return err
		}
	}
	g.offs, g.size = offs, g.size+int64(len(buf))
	if s.last == 0 {
		s.first = next
	}
	s.last = next + uint64(len(logs)) - 1
	return nil
}

// undo cuts what a failed write may have left past g's last record, or
// fails the store if it cannot.
func (s *Store) undo(g *segment, err error) error {
	if terr := g.f.Truncate(g.size); terr != nil {
		s.failed = fmt.Errorf("%w (and cutting it back: %v)", err, terr)
		return s.failed
	}
	return err
}

// active returns the segment the batch starting at next goes to: the last
// one, or a new one if there is none or the last one is full.
func (s *Store) active(next uint64) (*segment, error) {
	if n := len(s.segs); n > 0 && s.last != 0 {
		g := s.segs[n-1]
		if g.size < s.opts.SegmentBytes || len(g.offs) == 0 {
			return g, nil
		}
		// A full segment is on the device before a later one exists, so
		// that only the last segment can have a torn tail.
		if err := s.fsync(g.f); err != nil {
			s.failed = fmt.Errorf("raftlog: sync %s: %w", g.path, err)
			return nil, s.failed
		}
	} else if n > 0 {
		// The log is empty (a tail deleted whole): its segments hold
		// only records below the head.
		if err := s.removeSegments(0, n); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(s.dir, segmentName(next))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftlog: new segment: %w", err)
	}
	hdr := make([]byte, segmentHeader)
	copy(hdr, segmentMagic)
	binary.LittleEndian.PutUint32(hdr[8:], segmentVersion)
	binary.LittleEndian.PutUint64(hdr[16:], next)
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("raftlog: new segment: %w", err)
	}
	g := &segment{path: path, f: f, first: next, size: segmentHeader}
	s.segs = append(s.segs, g)
	s.dirty = true
	return g, nil
}

// removeSegments closes and removes segs[i:j].
func (s *Store) removeSegments(i, j int) error {
	for _, g := range s.segs[i:j] {
		g.f.Close()
		if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.failed = fmt.Errorf("raftlog: remove %s: %w", g.path, err)
			return s.failed
		}
	}
	s.segs = append(s.segs[:i], s.segs[j:]...)
	s.dirty = true
	return nil
}

// DeleteRange deletes entries min to max, both included: the log's head
// (min at or below its first index) or its tail (max at or past its last).
// Errors: ErrMiddleDelete for a range inside the log, ErrClosed, and the
// file system's.
func (s *Store) DeleteRange(min, max uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.failed != nil:
		return s.failed
	case s.last == 0 || min > max || max < s.first || min > s.last:
		return nil
	case min <= s.first:
		return s.deleteHead(max + 1)
	case max >= s.last:
		return s.deleteTail(min)
	}
	return fmt.Errorf("%w: %d to %d of %d to %d", ErrMiddleDelete, min, max, s.first, s.last)
}

// deleteHead makes head the log's first index (past its last: empty). The
// new head is on the device before any segment goes, so that a crash
// between the two leaves the same log.
func (s *Store) deleteHead(head uint64) error {
	st := s.state
	st.head = head
	if err := s.stateFile.write(st); err != nil {
		return err
	}
	s.state = st
	j := 0
	for j < len(s.segs) && s.segs[j].first+uint64(len(s.segs[j].offs)) <= head {
		j++
	}
	if err := s.removeSegments(0, j); err != nil {
		return err
	}
	if head > s.last {
		s.first, s.last = 0, 0
	} else {
		s.first = head
	}
	if s.opts.Sync {
		return s.syncLocked()
	}
	return nil
}

// deleteTail deletes the entries from min (past the log's first) on.
func (s *Store) deleteTail(min uint64) error {
	j := len(s.segs)
	for j > 1 && s.segs[j-1].first >= min {
		j--
	}
	if err := s.removeSegments(j, len(s.segs)); err != nil {
		return err
	}
	g := s.segs[j-1]
	k := int(min - g.first)
	if k < len(g.offs) {
		if err := g.f.Truncate(g.offs[k]); err != nil {
			s.failed = fmt.Errorf("raftlog: truncate %s: %w", g.path, err)
			return s.failed
		}
		g.size, g.offs = g.offs[k], g.offs[:k]
	}
	s.last = min - 1
	if s.opts.Sync {
		return s.syncLocked()
	}
	return nil
}

// Sync puts everything stored before it was called on the device: the
// last segment's writes, and the directory's entries if segments came or
// went.
//
// The last segment's fsync runs without the store's lock, so that
// StoreLogs and GetLog go on meanwhile. Under the interval fsync policy the
// cell calls Sync every second on every member, and that fsync took 5-175
// ms on a busy disk: held under the lock, it stopped raft's loop for as
// long on each of them, the leader's storing its own entries included
// (BENCHMARKS.md, session 17). Entries stored meanwhile go to the same
// file, or to a later segment once this one is full: what Sync promises
// was written before the fsync began, and a segment is synced under the
// lock before a later one is created (active). If the segment was removed
// or rolled past while it synced, the log's last segment as it then
// stands is synced under the lock, as before.
func (s *Store) Sync() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	n := len(s.segs)
	if s.failed != nil || n == 0 {
		defer s.mu.Unlock()
		return s.syncLocked()
	}
	g := s.segs[n-1]
	s.mu.Unlock()
	err := s.fsync(g.f)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !errors.Is(err, os.ErrClosed):
		// What failed to reach the device is not known any more (a
		// later fsync may succeed without it): fail, as under the lock.
		if s.failed == nil {
			s.failed = fmt.Errorf("raftlog: sync: %w", err)
		}
		return s.failed
	case s.failed != nil:
		return s.failed // Close's fsync among others: looked at before closed
	case s.closed:
		return nil // Close synced everything before it closed the files
	case err != nil || len(s.segs) == 0 || s.segs[len(s.segs)-1] != g:
		// g's file was closed (a tail deleted, the log emptied) or
		// another segment is the last now.
		return s.syncLocked()
	}
	return s.syncDirLocked()
}

// fsync syncs a segment's file: (*os.File).Sync, or syncFile's stand-in.
func (s *Store) fsync(f *os.File) error {
	if s.syncFile != nil {
		return s.syncFile(f)
	}
	return f.Sync()
}

func (s *Store) syncLocked() error {
	if s.failed != nil {
		return s.failed
	}
	if n := len(s.segs); n > 0 {
		if err := s.fsync(s.segs[n-1].f); err != nil {
			s.failed = fmt.Errorf("raftlog: sync: %w", err)
			return s.failed
		}
	}
	return s.syncDirLocked()
}

// syncDirLocked syncs the directory if segments came or went since it was
// last synced.
func (s *Store) syncDirLocked() error {
	if s.dirty {
		if err := SyncDir(s.dir); err != nil {
			s.failed = fmt.Errorf("raftlog: sync %s: %w", s.dir, err)
			return s.failed
		}
		s.dirty = false
	}
	return nil
}

// Close syncs the store and closes its files. It is safe to call twice.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	err := s.syncLocked()
	s.closed = true
	s.closeFiles()
	return err
}

func (s *Store) closeFiles() {
	if s.stateFile != nil {
		s.stateFile.f.Close()
	}
	for _, g := range s.segs {
		g.f.Close()
	}
}

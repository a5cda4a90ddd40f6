package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
)

const (
	stateFile  = "state"
	stateMagic = "hudrstat"
	// stateVersion 2: two slots written in turn, in place. (Version 1,
	// a single record rewritten through state.tmp and a rename, needed
	// free space for every vote: on a full disk raft could not save a
	// term and stopped the daemon. It is read, and rewritten as 2, at
	// Open.)
	stateVersion   = 2
	stateVersionV1 = 1
	// stateSlotBytes is the size of each of the two slots: raft keeps three
	// small keys.
	stateSlotBytes = 4096
	// maxStateBytes bounds a version 1 state file.
	maxStateBytes = 1 << 20
	// slotHeader is a slot's magic, version, sequence and body length.
	slotHeader = 8 + 4 + 8 + 4
)

// ErrKeyNotFound is what Get and GetUint64 return for a key never set. Its
// message is "not found", which hashicorp/raft matches to tell a fresh
// member from a failing store.
var ErrKeyNotFound = errors.New("not found")

// errStateTooLarge: a state that does not fit a slot.
var errStateTooLarge = errors.New("raftlog: state larger than its slot")

// state is what the state file holds.
type state struct {
	head uint64
	kv   map[string][]byte
}

// appendBody appends st's head and keys, sorted.
func (st state) appendBody(b []byte) []byte {
	keys := make([]string, 0, len(st.kv))
	for k := range st.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.LittleEndian.AppendUint64(b, st.head)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(st.kv[k])))
		b = append(b, st.kv[k]...)
	}
	return b
}

// decodeBody decodes what appendBody appended.
func decodeBody(p []byte) (state, error) {
	st := state{kv: map[string][]byte{}}
	if len(p) < 12 {
		return st, errors.New("cut short")
	}
	st.head = binary.LittleEndian.Uint64(p)
	n := binary.LittleEndian.Uint32(p[8:])
	p = p[12:]
	field := func() ([]byte, bool) {
		if len(p) < 4 {
			return nil, false
		}
		l := binary.LittleEndian.Uint32(p)
		if uint64(l) > uint64(len(p)-4) {
			return nil, false
		}
		f := p[4 : 4+l]
		p = p[4+l:]
		return f, true
	}
	var prev []byte
	for i := range n {
		k, ok := field()
		if !ok {
			return st, errors.New("key past the end")
		}
		if i > 0 && string(k) <= string(prev) {
			return st, errors.New("keys out of order") // written sorted, each once
		}
		prev = k
		v, ok := field()
		if !ok {
			return st, errors.New("value past the end")
		}
		st.kv[string(k)] = append([]byte(nil), v...)
	}
	if len(p) != 0 {
		return st, errors.New("bytes after the last key")
	}
	return st, nil
}

// encodeSlot returns the slot of st written as the seq-th state: its
// header, body and checksum, padded to stateSlotBytes.
func encodeSlot(st state, seq uint64) ([]byte, error) {
	b := make([]byte, slotHeader, stateSlotBytes)
	copy(b, stateMagic)
	binary.LittleEndian.PutUint32(b[8:], stateVersion)
	binary.LittleEndian.PutUint64(b[12:], seq)
	b = st.appendBody(b)
	if len(b)+4 > stateSlotBytes {
		return nil, fmt.Errorf("%w: %d bytes", errStateTooLarge, len(b)+4)
	}
	binary.LittleEndian.PutUint32(b[20:], uint32(len(b)-slotHeader))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return b[:stateSlotBytes], nil
}

// decodeSlot decodes a slot: its state and sequence.
func decodeSlot(b []byte) (state, uint64, error) {
	if len(b) < slotHeader+4 || string(b[:len(stateMagic)]) != stateMagic {
		return state{}, 0, errors.New("not a state slot")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != stateVersion {
		return state{}, 0, fmt.Errorf("format version %d, want %d", v, stateVersion)
	}
	seq := binary.LittleEndian.Uint64(b[12:])
	n := binary.LittleEndian.Uint32(b[20:])
	if uint64(n) > uint64(len(b)-slotHeader-4) {
		return state{}, 0, errors.New("body past the slot's end")
	}
	end := slotHeader + int(n)
	if crc32.Checksum(b[:end], castagnoli) != binary.LittleEndian.Uint32(b[end:]) {
		return state{}, 0, errors.New("checksum mismatch")
	}
	st, err := decodeBody(b[slotHeader:end])
	return st, seq, err
}

// decodeStateV1 decodes a version 1 state file: magic, version, body,
// checksum.
func decodeStateV1(b []byte) (state, error) {
	if len(b) < len(stateMagic)+4+8+4+4 || string(b[:len(stateMagic)]) != stateMagic {
		return state{}, errors.New("not a state file")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return state{}, errors.New("checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(body[len(stateMagic):]); v != stateVersionV1 {
		return state{}, fmt.Errorf("format version %d, want %d", v, stateVersionV1)
	}
	return decodeBody(body[len(stateMagic)+4:])
}

// stateFileOf is the open state file of a store: two slots, the state
// written last in the slot of its sequence's parity.
type stateFileOf struct {
	f   *os.File
	seq uint64 // the sequence of the state written last
}

// readState reads dir's state file and returns the state it holds: the
// slot with the higher sequence of those that check out (the other is an
// older state, or one whose write a crash cut), and that slot's sequence.
// It writes nothing: rewrite says the file must be written (with
// openState) before it is used, as there is none, or it is of version 1.
func readState(dir string) (st state, seq uint64, rewrite bool, err error) {
	path := filepath.Join(dir, stateFile)
	b, err := readStateBytes(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return state{kv: map[string][]byte{}}, 0, true, nil
	case err != nil:
		return state{}, 0, false, err
	case len(b) != 2*stateSlotBytes:
		st, err := decodeStateV1(b)
		if err != nil {
			return state{}, 0, false, &CorruptError{Path: path, Reason: err.Error()}
		}
		return st, 0, true, nil
	}
	st0, seq0, err0 := decodeSlot(b[:stateSlotBytes])
	st1, seq1, err1 := decodeSlot(b[stateSlotBytes:])
	switch {
	case err0 != nil && err1 != nil:
		return state{}, 0, false, &CorruptError{Path: path, Reason: "neither slot checks out: " + err0.Error() + "; " + err1.Error()}
	case err1 != nil || err0 == nil && seq0 > seq1:
		return st0, seq0, false, nil
	default:
		return st1, seq1, false, nil
	}
}

// openState opens dir's state file, which readState read as st at seq,
// for writing. With rewrite (no file, or one of version 1), it creates
// the file anew, holding st (through state.tmp and a rename).
func openState(dir string, st state, seq uint64, rewrite bool) (*stateFileOf, error) {
	path := filepath.Join(dir, stateFile)
	os.Remove(path + ".tmp") // a write that did not reach its rename
	if rewrite {
		return createState(dir, st)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	return &stateFileOf{f: f, seq: seq}, nil
}

// readStateBytes reads the state file at path, at most maxStateBytes.
func readStateBytes(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxStateBytes {
		return nil, &CorruptError{Path: path, Reason: fmt.Sprintf("%d bytes, more than %d", fi.Size(), maxStateBytes)}
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// createState writes a state file holding st in both slots (sequences 0
// and 1): written to state.tmp, fsynced, renamed over state, and the
// directory fsynced. It takes the file's space once; every later write
// overwrites a slot in place.
func createState(dir string, st state) (*stateFileOf, error) {
	path := filepath.Join(dir, stateFile)
	s0, err := encodeSlot(st, 0)
	if err != nil {
		return nil, err
	}
	s1, _ := encodeSlot(st, 1)
	f, err := os.OpenFile(path+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	_, err = f.Write(append(s0, s1...))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path + ".tmp")
		return nil, fmt.Errorf("raftlog: write %s: %w", path, err)
	}
	return &stateFileOf{f: f, seq: 1}, nil
}

// write makes st the state, on the device when it returns: written over
// the older slot, and fsynced. A crash while it writes leaves that slot
// failing its checksum and the other, the state before, in force.
func (sf *stateFileOf) write(st state) error {
	seq := sf.seq + 1
	b, err := encodeSlot(st, seq)
	if err != nil {
		return err
	}
	if _, err := sf.f.WriteAt(b, int64(seq%2)*stateSlotBytes); err != nil {
		return fmt.Errorf("raftlog: write %s: %w", sf.f.Name(), err)
	}
	if err := sf.f.Sync(); err != nil {
		return fmt.Errorf("raftlog: sync %s: %w", sf.f.Name(), err)
	}
	sf.seq = seq
	return nil
}

// SyncDir makes dir's entries durable: a file created, renamed into
// place or removed in it is there after a crash once SyncDir returns (the
// step after a rename that replaces a file whole). The store uses it for
// its own files; a caller that renames a store's directory into place
// syncs the parent with it.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Set stores val under key, on the device when it returns (raft's votes
// and terms), whatever Options.Sync says.
func (s *Store) Set(key, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	st := state{head: s.state.head, kv: make(map[string][]byte, len(s.state.kv)+1)}
	for k, v := range s.state.kv {
		st.kv[k] = v
	}
	st.kv[string(key)] = append([]byte(nil), val...)
	if err := s.stateFile.write(st); err != nil {
		return err
	}
	s.state = st
	return nil
}

// Get returns the value stored under key, or ErrKeyNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	v, ok := s.state.kv[string(key)]
	if !ok {
		return nil, ErrKeyNotFound
	}
	return append([]byte(nil), v...), nil
}

// SetUint64 stores val under key, as Set does.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.LittleEndian.AppendUint64(nil, val))
}

// GetUint64 returns the number stored under key, or ErrKeyNotFound.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: key %q holds %d bytes, not a number", key, len(v))
	}
	return binary.LittleEndian.Uint64(v), nil
}

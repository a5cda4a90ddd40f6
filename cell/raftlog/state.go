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
	stateFile    = "state"
	stateMagic   = "hudrstat"
	stateVersion = 1
	// maxStateBytes bounds the state file: raft keeps three small keys.
	maxStateBytes = 1 << 20
)

// ErrKeyNotFound is what Get and GetUint64 return for a key never set. Its
// message is "not found", which hashicorp/raft matches to tell a fresh
// member from a failing store.
var ErrKeyNotFound = errors.New("not found")

// state is what the state file holds.
type state struct {
	head uint64
	kv   map[string][]byte
}

func (st state) encode() []byte {
	keys := make([]string, 0, len(st.kv))
	for k := range st.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := append([]byte(stateMagic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[len(stateMagic):], stateVersion)
	b = binary.LittleEndian.AppendUint64(b, st.head)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(st.kv[k])))
		b = append(b, st.kv[k]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeState(b []byte) (state, error) {
	st := state{kv: map[string][]byte{}}
	if len(b) < len(stateMagic)+4+8+4+4 || string(b[:len(stateMagic)]) != stateMagic {
		return st, errors.New("not a state file")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return st, errors.New("checksum mismatch")
	}
	p := body[len(stateMagic):]
	if v := binary.LittleEndian.Uint32(p); v != stateVersion {
		return st, fmt.Errorf("format version %d, want %d", v, stateVersion)
	}
	st.head = binary.LittleEndian.Uint64(p[4:])
	n := binary.LittleEndian.Uint32(p[12:])
	p = p[16:]
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
	for range n {
		k, ok := field()
		if !ok {
			return st, errors.New("key past the end")
		}
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

// readState reads dir's state file; a directory without one has the zero
// state.
func readState(dir string) (state, error) {
	path := filepath.Join(dir, stateFile)
	os.Remove(path + ".tmp") // a write that did not reach its rename
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return state{kv: map[string][]byte{}}, nil
	}
	if err != nil {
		return state{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return state{}, err
	}
	if fi.Size() > maxStateBytes {
		return state{}, &CorruptError{Path: path, Reason: fmt.Sprintf("%d bytes, more than %d", fi.Size(), maxStateBytes)}
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return state{}, err
	}
	st, err := decodeState(b)
	if err != nil {
		return state{}, &CorruptError{Path: path, Reason: err.Error()}
	}
	return st, nil
}

// writeState replaces dir's state file with st, on the device when it
// returns: written to a temporary file, fsynced, renamed over the old one,
// and the directory fsynced.
func writeState(dir string, st state) error {
	path := filepath.Join(dir, stateFile)
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(st.encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(path + ".tmp")
		return fmt.Errorf("raftlog: write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
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
	if err := writeState(s.dir, st); err != nil {
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

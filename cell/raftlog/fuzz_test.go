package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzDecodeRecord decodes any bytes as a record: it never panics, and a
// record it accepts encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for i := uint64(1); i <= 6; i++ {
		rec := appendRecord(nil, entry(i, i))
		f.Add(rec)
		f.Add(rec[:len(rec)-1])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		n, err := decodeRecord(b, &l)
		if err != nil {
			return
		}
		if again := appendRecord(nil, &l); !bytes.Equal(again, b[:n]) {
			t.Fatalf("decoded %+v from %x, which encodes to %x", l, b[:n], again)
		}
	})
}

// FuzzOpenSegment opens a store whose only segment holds the input: Open
// succeeds or fails with ErrCorrupt, never panics, and a store it opens
// serves every entry it counts and opens the same again.
func FuzzOpenSegment(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.StoreLogs(entries(1, 4, 1)); err != nil {
		f.Fatal(err)
	}
	s.Close()
	seg, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add(seg[:segmentHeader])
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			return
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		for i := first; i <= last && last != 0; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("GetLog(%d) of %d to %d: %v", i, first, last, err)
			}
		}
		s.Close()
		s, err = Open(dir, Options{})
		if err != nil {
			t.Fatalf("opened once, then: %v", err)
		}
		defer s.Close()
		if f2, _ := s.FirstIndex(); f2 != first {
			t.Fatalf("first index %d, then %d", first, f2)
		}
		if l2, _ := s.LastIndex(); l2 != last {
			t.Fatalf("last index %d, then %d", last, l2)
		}
	})
}

// FuzzDecodeSlot decodes any bytes as a state slot: it never panics, and a
// slot it accepts encodes back to the same bytes.
func FuzzDecodeSlot(f *testing.F) {
	b, _ := encodeSlot(state{head: 3, kv: map[string][]byte{"CurrentTerm": {7, 0, 0, 0, 0, 0, 0, 0}, "LastVoteCand": []byte("a")}}, 9)
	f.Add(b)
	f.Add(b[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		st, seq, err := decodeSlot(b)
		if err != nil || len(b) != stateSlotBytes {
			return
		}
		again, err := encodeSlot(st, seq)
		if err != nil {
			t.Fatalf("decoded %+v, which does not encode: %v", st, err)
		}
		n := slotHeader + int(binary.LittleEndian.Uint32(b[20:])) + 4
		if !bytes.Equal(again[:n], b[:n]) {
			t.Fatalf("decoded %+v from %x, which encodes to %x", st, b[:n], again[:n])
		}
	})
}

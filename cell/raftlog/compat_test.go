package raftlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/internal/testfixture"
)

// compatMembers returns the raftlog directories of the members of every
// cell fixture that has them (older ones kept raft's log in raft.db), each
// unpacked in a temporary directory, with the index of the snapshot the
// member took.
func compatMembers(t *testing.T) (dirs []string, snapshots []uint64) {
	t.Helper()
	for _, fx := range testfixture.Fixtures(t, "cell") {
		root := testfixture.Unpack(t, fx, "cell.tar.gz")
		for m := 1; m <= 3; m++ {
			cell := filepath.Join(root, "m"+strconv.Itoa(m), "cell")
			if _, err := os.Stat(filepath.Join(cell, "raftlog")); err != nil {
				continue
			}
			snaps, _ := filepath.Glob(filepath.Join(cell, "snapshots", "*"))
			if len(snaps) != 1 {
				t.Fatalf("%s: %d snapshots, want 1", cell, len(snaps))
			}
			// raft names a snapshot term-index-time.
			index, err := strconv.ParseUint(strings.Split(filepath.Base(snaps[0]), "-")[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, filepath.Join(cell, "raftlog"))
			snapshots = append(snapshots, index)
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no cell fixture has a raftlog directory")
	}
	return dirs, snapshots
}

// TestCompatOlderStores: the raft logs older members wrote
// (testdata/compat/cell-*, version 1 segments beside a version 1 state
// file) open under today's code: the term and vote are those raft saved,
// every entry from the log's head to past the member's snapshot reads back
// with its index and a term no later than the current one, and an entry
// appended then reads back after a reopen.
func TestCompatOlderStores(t *testing.T) {
	dirs, snapshots := compatMembers(t)
	for i, dir := range dirs {
		s := open(t, dir, Options{})
		term, err := s.GetUint64([]byte("CurrentTerm"))
		if err != nil || term == 0 {
			t.Fatalf("%s: CurrentTerm %d, %v", dir, term, err)
		}
		if cand, err := s.Get([]byte("LastVoteCand")); err != nil || len(cand) == 0 {
			t.Fatalf("%s: LastVoteCand %q, %v", dir, cand, err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first == 0 || last <= snapshots[i] {
			t.Fatalf("%s: entries %d..%d; the member's snapshot is at %d and entries followed it", dir, first, last, snapshots[i])
		}
		var l raft.Log
		for idx := first; idx <= last; idx++ {
			if err := s.GetLog(idx, &l); err != nil || l.Index != idx || l.Term == 0 || l.Term > term {
				t.Fatalf("%s: entry %d: index %d term %d, %v (current term %d)", dir, idx, l.Index, l.Term, err, term)
			}
		}
		next := &raft.Log{Index: last + 1, Term: term, Type: raft.LogCommand, Data: []byte("after the upgrade")}
		if err := s.StoreLog(next); err != nil {
			t.Fatalf("%s: append after the upgrade: %v", dir, err)
		}
		s.Close()
		s = open(t, dir, Options{})
		if err := s.GetLog(last+1, &l); err != nil || string(l.Data) != "after the upgrade" || l.Term != term {
			t.Fatalf("%s: the entry appended reads back as %+v, %v", dir, l, err)
		}
		if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != term {
			t.Fatalf("%s: CurrentTerm after a reopen %d, %v, want %d", dir, v, err, term)
		}
		s.Close()
	}
}

// TestCompatNewerSegmentUntouched: a segment of a newer format version is
// refused (ErrCorrupt, naming the version) and the directory is left as it
// was: not cut back as a torn tail, not removed.
func TestCompatNewerSegmentUntouched(t *testing.T) {
	dirs, _ := compatMembers(t)
	dir := dirs[0]
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	path := segs[len(segs)-1]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[8:], segmentVersion+1)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := dirFiles(t, dir)
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format version "+strconv.Itoa(segmentVersion+1)) {
		t.Fatalf("Open: %v, want ErrCorrupt naming version %d", err, segmentVersion+1)
	}
	if after := dirFiles(t, dir); after != before {
		t.Errorf("the refused directory changed:\nbefore: %s\nafter:  %s", before, after)
	}
}

// dirFiles describes the files of dir by name and content.
func dirFiles(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		b.WriteString(path + " " + strconv.Itoa(len(data)) + " " + strconv.FormatUint(uint64(crc32.Checksum(data, castagnoli)), 16) + "; ")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

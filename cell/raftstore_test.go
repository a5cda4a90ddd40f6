package cell

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/huddle-chat/huddle/cell/raftlog"
)

func raftEntry(i, term uint64) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d of term %d", i, term))}
}

// writeBolt writes what an older daemon kept in dir/raft.db: entries first
// to last (after a gap at gapAt, if set, as raft leaves after installing a
// snapshot on bbolt) and its term and vote.
func writeBolt(t *testing.T, dir string, gapAt, first, last uint64) {
	t.Helper()
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, oldRaftDB)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if gapAt > 0 {
		if err := b.StoreLogs([]*raft.Log{raftEntry(1, 1), raftEntry(2, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	var logs []*raft.Log
	for i := first; i <= last; i++ {
		logs = append(logs, raftEntry(i, 2))
	}
	if err := b.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]uint64{"CurrentTerm": 9, "LastVoteTerm": 8} {
		if err := b.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set([]byte("LastVoteCand"), []byte("peer-b")); err != nil {
		t.Fatal(err)
	}
}

// checkImported fails unless s holds entries first to last of term 2 and
// the term and vote writeBolt wrote.
func checkImported(t *testing.T, s *raftlog.Store, first, last uint64) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("log %d to %d, want %d to %d", f, l, first, last)
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatal(err)
		}
		if want := raftEntry(i, 2); got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("entry %d: %+v, want %+v", i, got, *want)
		}
	}
	for k, want := range map[string]uint64{"CurrentTerm": 9, "LastVoteTerm": 8} {
		if v, err := s.GetUint64([]byte(k)); err != nil || v != want {
			t.Fatalf("%s = %d, %v, want %d", k, v, err, want)
		}
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "peer-b" {
		t.Fatalf("LastVoteCand = %q, %v", v, err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestImportBolt: a member's directory written by a daemon on raft.db is
// imported into raftlog/ at the first open, raft.db is renamed aside, and
// the next open neither imports again nor loses what was stored since.
func TestImportBolt(t *testing.T) {
	dir := t.TempDir()
	writeBolt(t, dir, 0, 1, 700)
	s, err := openRaftStore(dir, raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkImported(t, s, 1, 700)
	if exists(filepath.Join(dir, oldRaftDB)) || !exists(filepath.Join(dir, importedDB)) {
		t.Fatalf("after the import: raft.db there %v, raft.db.imported there %v", exists(filepath.Join(dir, oldRaftDB)), exists(filepath.Join(dir, importedDB)))
	}
	if err := s.StoreLog(raftEntry(701, 2)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = openRaftStore(dir, raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkImported(t, s, 1, 701)
}

// TestImportBoltAfterGap: the entries before a gap in raft.db (older than
// the snapshot raft installed) are left behind; the run after it is raft's
// log.
func TestImportBoltAfterGap(t *testing.T) {
	dir := t.TempDir()
	writeBolt(t, dir, 3, 40, 90)
	s, err := openRaftStore(dir, raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkImported(t, s, 40, 90)
}

// TestImportBoltInterrupted: an import cut short (raftlog.import/ left
// behind) is done again from the start; a raft.db left beside a raftlog/
// (stopped between the import's rename and raft.db's) is only renamed.
func TestImportBoltInterrupted(t *testing.T) {
	dir := t.TempDir()
	writeBolt(t, dir, 0, 1, 50)
	partial, err := raftlog.Open(filepath.Join(dir, raftLogDir+".import"), raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	partial.StoreLogs([]*raft.Log{raftEntry(1, 7), raftEntry(2, 7)})
	partial.Close()
	s, err := openRaftStore(dir, raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkImported(t, s, 1, 50)
	s.Close()
	if exists(filepath.Join(dir, raftLogDir+".import")) {
		t.Fatal("raftlog.import/ left behind")
	}

	// raft.db beside raftlog/: imported already, renamed aside only.
	os.Rename(filepath.Join(dir, importedDB), filepath.Join(dir, oldRaftDB))
	s, err = openRaftStore(dir, raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkImported(t, s, 1, 50)
	if exists(filepath.Join(dir, oldRaftDB)) {
		t.Fatal("raft.db not renamed aside")
	}
}

// TestImportBoltRefusesCorrupt: a raft.db that bbolt cannot open stops the
// member with an error naming it, and leaves it and no raftlog/ behind.
func TestImportBoltRefusesCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, oldRaftDB), bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := openRaftStore(dir, raftlog.Options{})
	if err == nil {
		s.Close()
		t.Fatal("a junk raft.db was imported")
	}
	if !exists(filepath.Join(dir, oldRaftDB)) || exists(filepath.Join(dir, raftLogDir)) {
		t.Fatalf("after a failed import: %v; raft.db kept %v, raftlog/ made %v", err, exists(filepath.Join(dir, oldRaftDB)), exists(filepath.Join(dir, raftLogDir)))
	}
}

// TestRestartOnBoltState: a member stopped, its raft state turned into the
// raft.db an older daemon kept, and started again imports it and goes on
// with the cell.
func TestRestartOnBoltState(t *testing.T) {
	c := newTestCell(t, 3, true, nil)
	g := c.leader().group("lobby")
	c.sendMany(g.ID, 0, 50)
	follower := c.follower()
	follower.waitLast(g.ID, 50)
	follower.stop()
	dir := filepath.Join(follower.dir, "raft")
	s, err := raftlog.Open(filepath.Join(dir, raftLogDir), raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, oldRaftDB)})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := s.GetLog(i, l); err != nil {
			t.Fatal(err)
		}
		if err := b.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	term, err := s.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		t.Fatal(err)
	}
	b.SetUint64([]byte("CurrentTerm"), term)
	b.Close()
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, raftLogDir)); err != nil {
		t.Fatal(err)
	}
	follower.host = newTestHost(follower.host.dir)
	c.start(follower, false)
	if !exists(filepath.Join(dir, importedDB)) {
		t.Fatal("raft.db not imported")
	}
	if got, err := follower.node.log.GetUint64([]byte("CurrentTerm")); err != nil || got < term {
		t.Fatalf("restarted on raft.db: term %d, %v, want %d or later", got, err, term)
	}
	c.sendMany(g.ID, 50, 25)
	c.sameLogs(g.ID, 75)
}

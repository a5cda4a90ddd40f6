package cell

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/huddle-chat/huddle/cell/raftlog"
)

// Raft's state in a member's Dir: raftlog/ (its log and votes), and, from
// daemons before it, raft.db (bbolt), imported once into raftlog/ and then
// renamed raft.db.imported.
const (
	raftLogDir  = "raftlog"
	oldRaftDB   = "raft.db"
	importedDB  = "raft.db.imported"
	importBatch = 256
)

// stableKeys are the keys hashicorp/raft keeps in its StableStore (its own
// names, unexported there): what an import copies.
var stableKeys = struct{ uint64s, bytes []string }{
	uint64s: []string{"CurrentTerm", "LastVoteTerm"},
	bytes:   []string{"LastVoteCand"},
}

// openRaftStore opens raft's log and votes in dir, importing those of an
// older daemon's raft.db first if dir has one and no raftlog/ yet. The
// import is written to raftlog.import/ and renamed into place once whole,
// so one cut short is done again from the start; raft.db is renamed aside
// after, so it is imported once.
func openRaftStore(dir string, opts raftlog.Options) (*raftlog.Store, error) {
	logDir, db := filepath.Join(dir, raftLogDir), filepath.Join(dir, oldRaftDB)
	_, err := os.Stat(logDir)
	switch {
	case err == nil:
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	default:
		if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
			break
		}
		if err := importBolt(db, logDir); err != nil {
			return nil, fmt.Errorf("import %s: %w", db, err)
		}
	}
	// raft.db beside raftlog/ was imported (the daemon stopped before it
	// was renamed aside).
	if _, err := os.Stat(db); err == nil {
		if err := os.Rename(db, filepath.Join(dir, importedDB)); err != nil {
			return nil, err
		}
		if err := raftlog.SyncDir(dir); err != nil {
			return nil, err
		}
	}
	return raftlog.Open(logDir, opts)
}

// importBolt copies the log and votes of the bbolt store at db into a new
// store at logDir.
func importBolt(db, logDir string) error {
	tmp := logDir + ".import"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: db, NoSync: true})
	if err != nil {
		return err
	}
	defer bolt.Close()
	s, err := raftlog.Open(tmp, raftlog.Options{})
	if err != nil {
		return err
	}
	if err := copyRaftState(bolt, s); err != nil {
		s.Close()
		return err
	}
	if err := s.Close(); err != nil { // Close syncs
		return err
	}
	if err := os.Rename(tmp, logDir); err != nil {
		return err
	}
	return raftlog.SyncDir(filepath.Dir(logDir))
}

// copyRaftState copies every log entry and the votes from one store to
// another.
func copyRaftState(from *raftboltdb.BoltStore, to *raftlog.Store) error {
	first, err := from.FirstIndex()
	if err != nil {
		return err
	}
	last, err := from.LastIndex()
	if err != nil {
		return err
	}
	// A raft on raft-boltdb (which takes gaps) leaves one after installing
	// a snapshot past its log: the entries before the last gap are older
	// than the snapshot, and raft's log is the run after it.
	var l raft.Log
	for i := last; i > first; i-- {
		err := from.GetLog(i-1, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			first = i
			break
		}
		if err != nil {
			return fmt.Errorf("entry %d: %w", i-1, err)
		}
	}
	for i := first; i <= last && last != 0; {
		var batch []*raft.Log
		for ; i <= last && len(batch) < importBatch; i++ {
			l := new(raft.Log)
			if err := from.GetLog(i, l); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			batch = append(batch, l)
		}
		if err := to.StoreLogs(batch); err != nil {
			return err
		}
	}
	for _, k := range stableKeys.uint64s {
		v, err := from.GetUint64([]byte(k))
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := to.SetUint64([]byte(k), v); err != nil {
			return err
		}
	}
	for _, k := range stableKeys.bytes {
		v, err := from.Get([]byte(k))
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := to.Set([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

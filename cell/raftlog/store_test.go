package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// entry is the entry of index i in term: its contents follow from both, so
// a test can tell an entry read back from one invented.
func entry(i, term uint64) *raft.Log {
	rng := rand.New(rand.NewPCG(i, term))
	l := &raft.Log{Index: i, Term: term, Type: raft.LogType(rng.IntN(6))}
	l.Data = make([]byte, rng.IntN(300))
	for k := range l.Data {
		l.Data[k] = byte(rng.Uint32())
	}
	if rng.IntN(4) == 0 {
		l.Extensions = []byte(fmt.Sprintf("ext-%d", i))
	}
	if rng.IntN(2) == 0 {
		l.AppendedAt = time.Unix(1_700_000_000+int64(i), int64(term))
	}
	return l
}

func entries(from, to, term uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, entry(i, term))
	}
	return logs
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkLog fails unless s holds exactly the entries from to last, as
// entry(i, term(i)) made them.
func checkLog(t testing.TB, s *Store, first, last uint64, term func(uint64) uint64) {
	t.Helper()
	gotFirst, _ := s.FirstIndex()
	gotLast, _ := s.LastIndex()
	if gotFirst != first || gotLast != last {
		t.Fatalf("log is %d to %d, want %d to %d", gotFirst, gotLast, first, last)
	}
	for i := first; i <= last && last != 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if want := entry(i, term(i)); !sameLog(&l, want) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, l, *want)
		}
	}
	for _, i := range []uint64{first - 1, last + 1} {
		var l raft.Log
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) && i != 0 {
			t.Fatalf("GetLog(%d) outside the log: %v, want ErrLogNotFound", i, err)
		}
	}
}

func term1(uint64) uint64 { return 1 }

// TestContract runs random sequences of raft's calls, and reopens, on a
// store and on raft's InmemStore, and compares what they answer.
func TestContract(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dir, err := os.MkdirTemp(t.TempDir(), "contract")
		if err != nil {
			rt.Fatal(err)
		}
		opts := Options{Sync: rapid.Bool().Draw(rt, "sync"), SegmentBytes: int64(rapid.IntRange(100, 4000).Draw(rt, "segment"))}
		s, err := Open(dir, opts)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { s.Close() }()
		model := raft.NewInmemStore()
		term := uint64(1)
		compare := func(rt *rapid.T) {
			f1, _ := model.FirstIndex()
			l1, _ := model.LastIndex()
			f2, err := s.FirstIndex()
			if err != nil {
				rt.Fatal(err)
			}
			l2, _ := s.LastIndex()
			if f1 != f2 || l1 != l2 {
				rt.Fatalf("log %d to %d, model %d to %d", f2, l2, f1, l1)
			}
		}
		rt.Repeat(map[string]func(*rapid.T){
			"": compare,
			"store": func(rt *rapid.T) {
				last, _ := model.LastIndex()
				next := last + 1
				if last == 0 {
					next = rapid.Uint64Range(1, 1000).Draw(rt, "start")
				}
				if rapid.IntRange(0, 4).Draw(rt, "newterm") == 0 {
					term++
				}
				logs := entries(next, next+uint64(rapid.IntRange(0, 20).Draw(rt, "n")), term)
				if err := s.StoreLogs(logs); err != nil {
					rt.Fatalf("StoreLogs %d..: %v", next, err)
				}
				model.StoreLogs(logs)
			},
			"gap": func(rt *rapid.T) {
				last, _ := model.LastIndex()
				if last == 0 {
					return // nothing to do on an empty log
				}
				at := last + 1 + uint64(rapid.IntRange(1, 3).Draw(rt, "gap"))
				if rapid.Bool().Draw(rt, "back") {
					at = last
				}
				if err := s.StoreLogs(entries(at, at, term)); !errors.Is(err, ErrNotContiguous) {
					rt.Fatalf("StoreLogs at %d after %d: %v, want ErrNotContiguous", at, last, err)
				}
			},
			"deleteHead": func(rt *rapid.T) {
				first, _ := model.FirstIndex()
				last, _ := model.LastIndex()
				if last == 0 {
					return // nothing to do on an empty log
				}
				max := rapid.Uint64Range(first, last).Draw(rt, "max")
				if err := s.DeleteRange(first, max); err != nil {
					rt.Fatal(err)
				}
				model.DeleteRange(first, max)
			},
			"deleteTail": func(rt *rapid.T) {
				first, _ := model.FirstIndex()
				last, _ := model.LastIndex()
				if last == 0 {
					return // nothing to do on an empty log
				}
				min := rapid.Uint64Range(first, last).Draw(rt, "min")
				if err := s.DeleteRange(min, last); err != nil {
					rt.Fatal(err)
				}
				model.DeleteRange(min, last)
			},
			"get": func(rt *rapid.T) {
				first, _ := model.FirstIndex()
				last, _ := model.LastIndex()
				i := rapid.Uint64Range(first-min(first, 2), last+2).Draw(rt, "index")
				var want, got raft.Log
				werr := model.GetLog(i, &want)
				gerr := s.GetLog(i, &got)
				if (werr == nil) != (gerr == nil) || (gerr != nil && !errors.Is(gerr, raft.ErrLogNotFound)) {
					rt.Fatalf("GetLog(%d): %v, model %v", i, gerr, werr)
				}
				if werr == nil && !sameLog(&got, &want) {
					rt.Fatalf("GetLog(%d) = %+v, model %+v", i, got, want)
				}
			},
			"stable": func(rt *rapid.T) {
				key := []byte(rapid.SampledFrom([]string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}).Draw(rt, "key"))
				if rapid.Bool().Draw(rt, "bytes") {
					v := []byte(rapid.String().Draw(rt, "val"))
					if err := s.Set(key, v); err != nil {
						rt.Fatal(err)
					}
					model.Set(key, v)
				} else {
					v := rapid.Uint64().Draw(rt, "val")
					if err := s.SetUint64(key, v); err != nil {
						rt.Fatal(err)
					}
					model.Set(key, nil) // the model keeps numbers apart
					model.SetUint64(key, v)
				}
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatal(err)
				}
				var err error
				if s, err = Open(dir, opts); err != nil {
					rt.Fatalf("reopen: %v", err)
				}
			},
		})
	})
}

func TestStable(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a key never set: %v, want \"not found\" (raft matches the message)", err)
	}
	if _, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64 of a key never set: %v, want \"not found\"", err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("peer-a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A write that crashed before its rename leaves state.tmp: ignored.
	if err := os.WriteFile(filepath.Join(dir, stateFile+".tmp"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("CurrentTerm after reopen = %d, %v, want 7", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "peer-a" {
		t.Fatalf("LastVoteCand after reopen = %q, %v", v, err)
	}
	s.Close()
	if _, err := s.Get([]byte("CurrentTerm")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	// A slot that does not check out is a write a crash cut short: the
	// other slot, the state before it, is in force.
	path := filepath.Join(dir, stateFile)
	good, _ := os.ReadFile(path)
	if len(good) != 2*stateSlotBytes {
		t.Fatalf("state file of %d bytes, want two slots of %d", len(good), stateSlotBytes)
	}
	_, seq0, _ := decodeSlot(good[:stateSlotBytes])
	_, seq1, _ := decodeSlot(good[stateSlotBytes:])
	newer := 0
	if seq1 > seq0 {
		newer = stateSlotBytes
	}
	b := append([]byte(nil), good...)
	b[newer+30] ^= 1
	os.WriteFile(path, b, 0o600)
	s = open(t, dir, Options{})
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("CurrentTerm with its last write cut = %d, %v, want 7", v, err)
	}
	if _, err := s.Get([]byte("LastVoteCand")); err == nil {
		t.Fatal("LastVoteCand read from a slot that does not check out")
	}
	s.Close()
	// Neither slot checks out: the store is refused, as raft's vote
	// cannot be guessed.
	b = append([]byte(nil), good...)
	b[30] ^= 1
	b[stateSlotBytes+30] ^= 1
	os.WriteFile(path, b, 0o600)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a corrupt state file: %v, want ErrCorrupt", err)
	}
}

// TestStateV1 opens a store whose state file is of version 1 (one record,
// rewritten whole by rename): it is read, and rewritten as two slots.
func TestStateV1(t *testing.T) {
	dir := t.TempDir()
	st := state{head: 5, kv: map[string][]byte{"CurrentTerm": {9, 0, 0, 0, 0, 0, 0, 0}}}
	b := append([]byte(stateMagic), 1, 0, 0, 0)
	b = st.appendBody(b)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := os.WriteFile(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, Options{})
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Fatalf("CurrentTerm = %d, %v, want 9", v, err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 10); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, err := os.Stat(filepath.Join(dir, stateFile)); err != nil || fi.Size() != 2*stateSlotBytes {
		t.Fatalf("state file after open: %v, %v; want two slots", fi, err)
	}
	s = open(t, dir, Options{})
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 10 {
		t.Fatalf("CurrentTerm after reopen = %d, %v, want 10", v, err)
	}
	s.Close()
}

// TestStateTooLarge: a state that does not fit its slot is refused, and
// the state before it stays.
func TestStateTooLarge(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	if err := s.Set([]byte("big"), make([]byte, stateSlotBytes)); !errors.Is(err, errStateTooLarge) {
		t.Fatalf("Set of %d bytes: %v, want errStateTooLarge", stateSlotBytes, err)
	}
	if _, err := s.Get([]byte("big")); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("Get after a refused Set: %v", err)
	}
}

// TestReopenAfterDeletes deletes a head and a tail across segments and
// checks the log reads the same after reopening, and takes appends.
func TestReopenAfterDeletes(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 2000}
	s := open(t, dir, opts)
	if err := s.StoreLogs(entries(1, 100, 1)); err != nil {
		t.Fatal(err)
	}
	for i := uint64(101); i <= 200; i += 10 {
		if err := s.StoreLogs(entries(i, i+9, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if n := segments(t, dir); n < 5 {
		t.Fatalf("%d segments, want several (SegmentBytes 2000)", n)
	}
	if err := s.DeleteRange(1, 135); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(171, 200); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(entries(171, 180, 2)); err != nil {
		t.Fatal(err)
	}
	term := func(i uint64) uint64 {
		if i > 170 {
			return 2
		}
		return 1
	}
	checkLog(t, s, 136, 180, term)
	s.Close()
	s = open(t, dir, opts)
	checkLog(t, s, 136, 180, term)
	if n := segments(t, dir); n > 3 {
		t.Fatalf("%d segments after deleting the head to 135, want the ones holding 136 on", n)
	}
	// Delete it all, as raft does after installing a snapshot; the log
	// starts again past it.
	if err := s.DeleteRange(136, 180); err != nil {
		t.Fatal(err)
	}
	checkLog(t, s, 0, 0, term1)
	s.Close()
	s = open(t, dir, opts)
	checkLog(t, s, 0, 0, term1)
	if err := s.StoreLogs(entries(500, 510, 3)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, opts)
	checkLog(t, s, 500, 510, func(uint64) uint64 { return 3 })
	if err := s.DeleteRange(502, 505); !errors.Is(err, ErrMiddleDelete) {
		t.Fatalf("DeleteRange inside the log: %v, want ErrMiddleDelete", err)
	}
}

func segments(t testing.TB, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// lastSegment returns the path of dir's last segment.
func lastSegment(t testing.TB, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	if len(m) == 0 {
		t.Fatal("no segment")
	}
	sort.Strings(m)
	return m[len(m)-1]
}

// TestTornTail cuts the last record at every byte, and also leaves it
// zeroed from every byte on (as a power cut can leave a file longer than
// what reached it): Open cuts the record off, keeps the rest, and the log
// takes the entry again.
func TestTornTail(t *testing.T) {
	src := t.TempDir()
	s := open(t, src, Options{})
	if err := s.StoreLogs(entries(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	whole, err := os.ReadFile(lastSegment(t, src))
	if err != nil {
		t.Fatal(err)
	}
	start := len(whole) - recordLen(entry(5, 1))
	for cut := start; cut < len(whole); cut++ {
		for _, zeroed := range []bool{false, true} {
			dir := t.TempDir()
			b := bytes.Clone(whole[:cut])
			if zeroed {
				b = append(b, make([]byte, len(whole)-cut)...)
			}
			if err := os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("cut at %d (zeroed %v): Open: %v", cut, zeroed, err)
			}
			checkLog(t, s, 1, 4, term1)
			if err := s.StoreLog(entry(5, 1)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = open(t, dir, Options{})
			checkLog(t, s, 1, 5, term1)
			s.Close()
		}
	}
}

// TestCorruptionRefused flips a byte in records with a valid record after
// them, in the last segment and an earlier one, and removes a middle
// segment: Open refuses each with ErrCorrupt, naming the file.
func TestCorruptionRefused(t *testing.T) {
	src := t.TempDir()
	s := open(t, src, Options{SegmentBytes: 1500})
	for i := uint64(1); i <= 60; i += 3 {
		if err := s.StoreLogs(entries(i, i+2, 1)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	names, _ := filepath.Glob(filepath.Join(src, "*"+segmentExt))
	sort.Strings(names)
	if len(names) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(names))
	}
	copyDir := func(t *testing.T) string {
		dir := t.TempDir()
		for _, n := range names {
			b, _ := os.ReadFile(n)
			os.WriteFile(filepath.Join(dir, filepath.Base(n)), b, 0o600)
		}
		return dir
	}
	cases := []struct {
		name   string
		damage func(dir string) string // returns the file the error names
	}{
		{"bit flip mid last segment", func(dir string) string {
			// The last byte of the last segment's first record: records
			// follow it.
			p := filepath.Join(dir, filepath.Base(names[len(names)-1]))
			var first uint64
			fmt.Sscanf(filepath.Base(p), "%d", &first)
			flip(p, segmentHeader+recordLen(entry(first, 1))-1)
			return p
		}},
		{"bit flip in an earlier segment's last record", func(dir string) string {
			p := filepath.Join(dir, filepath.Base(names[0]))
			fi, _ := os.Stat(p)
			flip(p, int(fi.Size())-1)
			return p
		}},
		{"length field of an earlier segment", func(dir string) string {
			p := filepath.Join(dir, filepath.Base(names[0]))
			flip(p, segmentHeader+2)
			return p
		}},
		{"a middle segment gone", func(dir string) string {
			os.Remove(filepath.Join(dir, filepath.Base(names[1])))
			return filepath.Join(dir, filepath.Base(names[2]))
		}},
		{"bad magic", func(dir string) string {
			p := filepath.Join(dir, filepath.Base(names[0]))
			flip(p, 0)
			return p
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t)
			path := c.damage(dir)
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open served a log with a corrupt middle")
			}
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Path != path {
				t.Fatalf("Open: %v, want a CorruptError naming %s", err, path)
			}
		})
	}
}

func flip(path string, off int) {
	b, _ := os.ReadFile(path)
	b[off] ^= 0x10
	os.WriteFile(path, b, 0o600)
}

// TestRefusals: calls the store must refuse change nothing.
func TestRefusals(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.StoreLogs(entries(1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	big := &raft.Log{Index: 4, Term: 1, Data: make([]byte, MaxRecordBytes)}
	if err := s.StoreLogs([]*raft.Log{entry(4, 1), big}); !errors.Is(err, ErrNotContiguous) {
		t.Fatalf("StoreLogs with a repeated index: %v, want ErrNotContiguous", err)
	}
	if err := open(t, t.TempDir(), Options{}).StoreLog(entry(0, 1)); !errors.Is(err, ErrNotContiguous) {
		t.Fatalf("StoreLog of index 0: %v, want ErrNotContiguous", err)
	}
	if err := s.StoreLogs([]*raft.Log{big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("StoreLogs of %d bytes: %v, want ErrTooLarge", len(big.Data), err)
	}
	checkLog(t, s, 1, 3, term1)
	s.Close()
	if err := s.StoreLog(entry(4, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLog after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

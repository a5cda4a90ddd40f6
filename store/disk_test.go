package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// diskLog opens a disk log in dir, failing the test on error, and closes
// it at cleanup.
func diskLog(t *testing.T, cfg DiskConfig) (*DiskLog, Recovery) {
	t.Helper()
	d, rec, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Dir, err)
	}
	t.Cleanup(func() { d.Close() })
	return d, rec
}

// crash stops d as a SIGKILL would: its files are closed without a sync,
// and the checkpoint says what the last sync covered.
func (d *DiskLog) crash() {
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.done
		// The write out, if any, reached the OS before the kill; the
		// records pending did not.
		d.wmu.Lock()
		d.settle()
		d.wmu.Unlock()
		d.wr.stop()
		d.closeFiles()
	})
}

// writer appends stamped batches to a log, as the group daemon's
// sequencing step does, from the log's tail.
type writer struct {
	rng *rand.Rand
	n   int // messages made, for IDs
}

func newWriter(seed uint64) *writer { return &writer{rng: rand.New(rand.NewPCG(seed, 1))} }

// batch makes k entries stamped after seq and t: random bodies of up to
// maxBody bytes from a few senders, often several in a row from one.
func (w *writer) batch(k, maxBody int, seq uint64, t int64) []Entry {
	b := make([]Entry, k)
	for i := range b {
		w.n++
		seq++
		t += 1 + w.rng.Int64N(1e6)
		body := make([]byte, w.rng.IntN(maxBody+1))
		for j := range body {
			body[j] = byte(w.rng.Uint32())
		}
		from := sender(w.rng.IntN(7))
		if i > 0 && w.rng.IntN(2) == 0 {
			from = b[i-1].From // runs from one sender, as clients batch
		}
		b[i] = Entry{Seq: seq, Time: t, ID: id(w.n), From: from, Body: body}
	}
	return b
}

type appender interface {
	Tail() (uint64, int64)
	Append([]Entry) error
}

// fill appends n messages in batches of up to 16 and returns them.
func (w *writer) fill(t *testing.T, l appender, n, maxBody int) []Entry {
	t.Helper()
	var all []Entry
	for len(all) < n {
		seq, ts := l.Tail()
		b := w.batch(min(1+w.rng.IntN(16), n-len(all)), maxBody, seq, ts)
		if err := l.Append(b); err != nil {
			t.Fatalf("append at %d: %v", seq, err)
		}
		all = append(all, b...)
	}
	return all
}

type querier interface {
	After(uint64, int, []Message) ([]Message, Cursor, error)
}

// checkHolds fails unless l holds exactly want, in order.
func checkHolds(t *testing.T, l querier, want []Entry) {
	t.Helper()
	got, cur, err := l.After(0, len(want)+10, nil)
	if err != nil {
		t.Fatalf("log holds: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("log holds %d messages (first %d, last %d), want %d", len(got), cur.First, cur.Last, len(want))
	}
	for i := range want {
		g, w := &got[i], &want[i]
		if g.Seq != w.Seq || g.Time != w.Time || g.ID != w.ID || *g.From != w.From || !bytes.Equal(g.Body, w.Body) {
			t.Fatalf("message %d: got seq %d time %d id %x from %q, want seq %d time %d id %x from %q (or the body differs)",
				i, g.Seq, g.Time, g.ID, g.From.Name, w.Seq, w.Time, w.ID, w.From.Name)
		}
	}
}

func TestDiskReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, SegmentBytes: 64 << 10}
	d, rec := diskLog(t, cfg)
	if !rec.Created || rec.NewEpoch != "" {
		t.Fatalf("first open: %+v, want Created", rec)
	}
	epoch := d.Epoch()
	w := newWriter(1)
	all := w.fill(t, d, 3000, 200)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, rec := diskLog(t, cfg)
	if rec.Created || rec.NewEpoch != "" || rec.TornBytes != 0 || rec.Messages != len(all) || rec.Segments < 2 {
		t.Fatalf("reopen: %+v, want %d messages in several segments, nothing torn, same epoch", rec, len(all))
	}
	if d2.Epoch() != epoch {
		t.Fatalf("epoch %d after reopening, want %d", d2.Epoch(), epoch)
	}
	checkHolds(t, d2, all)
	if seq, ts := d2.Tail(); seq != all[len(all)-1].Seq || ts != all[len(all)-1].Time {
		t.Fatalf("tail %d %d, want %d %d", seq, ts, all[len(all)-1].Seq, all[len(all)-1].Time)
	}
	// The dedup window came back: a retried ID gets its original stamps.
	acks := d2.Lookup([]Entry{{ID: all[10].ID}, {ID: id(1 << 22)}}, nil)
	if want := (Ack{Seq: all[10].Seq, Time: all[10].Time, Duplicate: true}); acks[0] != want || acks[1] != (Ack{}) {
		t.Fatalf("lookup after reopening: %+v, want %+v then a new ID", acks, want)
	}
	// Appends continue from the tail, in the newest segment's dictionary.
	more := w.fill(t, d2, 100, 50)
	d2.Close()
	d3, _ := diskLog(t, cfg)
	checkHolds(t, d3, append(all, more...))
}

// TestDiskRetention: whole segment files go once retention dropped every
// message they hold, and a reopened log holds what it held before.
func TestDiskRetention(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{MaxMessages: 800, SegmentSize: 50}}
	d, _ := diskLog(t, cfg)
	w := newWriter(2)
	all := w.fill(t, d, 5000, 20)
	st := d.Stats()
	if st.Messages > 800 || st.Messages < 700 {
		t.Fatalf("holds %d messages, want 700..800", st.Messages)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	// Files of up to 100 messages (MaxMessages/8), deleted once all gone
	// from memory: the held messages and at most one file more.
	if len(segs) > 10 {
		t.Fatalf("%d segment files for %d messages held, want at most 10", len(segs), st.Messages)
	}
	held := all[st.First-1:]
	d.Close()
	d2, rec := diskLog(t, cfg)
	if got := d2.Stats(); got.First != st.First || got.Last != st.Last {
		t.Fatalf("reopened: first %d last %d, want %d %d (%+v)", got.First, got.Last, st.First, st.Last, rec)
	}
	checkHolds(t, d2, held)
}

// TestDiskExpire: an age limit empties files, the newest included, and
// the sequence goes on after a reopen.
func TestDiskExpire(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{MaxAge: time.Second}}
	d, _ := diskLog(t, cfg)
	w := newWriter(3)
	all := w.fill(t, d, 100, 10)
	last := all[len(all)-1]
	d.Expire(time.Unix(0, last.Time+int64(2*time.Second)))
	if st := d.Stats(); st.Messages != 0 || st.First != last.Seq+1 {
		t.Fatalf("after expiry: %+v, want nothing held, first %d", st, last.Seq+1)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 || filepath.Base(segs[0]) != segName(last.Seq+1) {
		t.Fatalf("segment files %v, want only an empty %s", segs, segName(last.Seq+1))
	}
	d.Close()
	d2, _ := diskLog(t, cfg)
	if seq, ts := d2.Tail(); seq != last.Seq || ts != last.Time {
		t.Fatalf("tail after reopening %d %d, want %d %d", seq, ts, last.Seq, last.Time)
	}
	more := w.fill(t, d2, 5, 10)
	if more[0].Seq != last.Seq+1 {
		t.Fatalf("next message %d, want %d", more[0].Seq, last.Seq+1)
	}
}

// TestDiskTornTail cuts the newest segment of a crashed log at random
// offsets: it reopens with every whole record before the cut, appends go
// on from there, and nothing else is lost.
func TestDiskTornTail(t *testing.T) {
	src := t.TempDir()
	cfg := DiskConfig{Dir: src, SegmentBytes: 32 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	w := newWriter(4)
	all := w.fill(t, d, 600, 100)
	d.crash()
	newest := filepath.Join(src, segName(d.fbase))
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	// The records of the newest segment: where each ends, and the
	// messages held once it is whole.
	ends := map[int64]uint64{segHeaderSize: d.fbase - 1}
	for off := int64(segHeaderSize); off < int64(len(data)); {
		_, size, _, err := frame(data[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += int64(size)
		ends[off] = 0
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for range 40 {
		cut := segHeaderSize + rng.Int64N(int64(len(data))-segHeaderSize)
		dir := t.TempDir()
		copyDir(t, src, dir)
		if err := os.Truncate(filepath.Join(dir, filepath.Base(newest)), cut); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Dir = dir
		d2, rec, err := Open(c)
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(data), err)
		}
		// Whole records before the cut survive.
		whole := int64(segHeaderSize)
		for e := range ends {
			if e <= cut && e > whole {
				whole = e
			}
		}
		if _, ok := ends[cut]; ok != (rec.TornBytes == 0) {
			t.Fatalf("cut at %d: torn %d bytes, want some exactly when the cut is mid-record", cut, rec.TornBytes)
		}
		if rec.TornBytes != cut-whole {
			t.Fatalf("cut at %d: %d bytes torn, want %d", cut, rec.TornBytes, cut-whole)
		}
		seq, _ := d2.Tail()
		checkHolds(t, d2, all[:seq])
		more := w.fill(t, d2, 3, 10)
		d2.Close()
		d3, _, err := Open(c)
		if err != nil {
			t.Fatalf("reopen after the cut at %d: %v", cut, err)
		}
		checkHolds(t, d3, append(slices.Clone(all[:seq]), more...))
		d3.Close()
	}
}

// TestDiskSyncedTailMissing: a newest segment shorter than what was synced
// lost acknowledged data, which is not a torn tail: the log refuses.
func TestDiskSyncedTailMissing(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir}
	d, _ := diskLog(t, cfg)
	newWriter(5).fill(t, d, 100, 100)
	d.Close() // syncs: the checkpoint says all 100
	path := filepath.Join(dir, segName(1))
	st, _ := os.Stat(path)
	os.Truncate(path, st.Size()-50)
	_, _, err := Open(cfg)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
}

// TestDiskCorrupt flips bytes in the middle of segments: the log refuses
// to open, naming the file and the offset, rather than serve wrong history.
func TestDiskCorrupt(t *testing.T) {
	src := t.TempDir()
	cfg := DiskConfig{Dir: src, SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	newWriter(6).fill(t, d, 800, 100)
	d.crash() // nothing synced since open: only checksums tell
	segs, _ := filepath.Glob(filepath.Join(src, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	rng := rand.New(rand.NewPCG(6, 6))
	for i, seg := range []string{segs[0], segs[len(segs)/2], segs[len(segs)-1]} {
		for range 10 {
			dir := t.TempDir()
			copyDir(t, src, dir)
			path := filepath.Join(dir, filepath.Base(seg))
			data, _ := os.ReadFile(path)
			// Mid-file: past the header, and (in the newest segment)
			// before its last record, so that whole records follow.
			end := len(data)
			if i == 2 {
				end = lastRecordStart(t, data)
			}
			at := segHeaderSize + rng.IntN(end-segHeaderSize)
			data[at] ^= byte(1 + rng.IntN(255))
			os.WriteFile(path, data, 0o600)
			c := cfg
			c.Dir = dir
			_, _, err := Open(c)
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(filepath.Base(seg))) || !bytes.Contains([]byte(err.Error()), []byte("offset")) {
				t.Fatalf("byte %d of %s flipped: Open: %v, want ErrCorrupt naming the file and offset", at, filepath.Base(seg), err)
			}
		}
	}
}

func lastRecordStart(t *testing.T, data []byte) int {
	t.Helper()
	last := segHeaderSize
	for off := segHeaderSize; off < len(data); {
		_, size, _, err := frame(data[off:])
		if err != nil {
			t.Fatal(err)
		}
		last = off
		off += size
	}
	return last
}

// TestDiskFutureVersion: a file from a newer format is refused, not
// misread.
func TestDiskFutureVersion(t *testing.T) {
	for _, name := range []string{segName(1), cptName} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := DiskConfig{Dir: dir}
			d, _ := diskLog(t, cfg)
			newWriter(7).fill(t, d, 10, 10)
			d.Close()
			path := filepath.Join(dir, name)
			data, _ := os.ReadFile(path)
			binary.LittleEndian.PutUint32(data[8:], diskVersion+1)
			binary.LittleEndian.PutUint32(data[44:], crc32.Checksum(data[:44], castagnoli))
			os.WriteFile(path, data, 0o600)
			if _, _, err := Open(cfg); !errors.Is(err, ErrFutureVersion) {
				t.Fatalf("Open: %v, want ErrFutureVersion", err)
			}
		})
	}
}

// TestDiskIndexRebuilt: a sealed segment's missing or damaged index is
// written again, the same as before.
func TestDiskIndexRebuilt(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, SegmentBytes: 32 << 10}
	d, _ := diskLog(t, cfg)
	all := newWriter(8).fill(t, d, 2000, 100)
	d.Close()
	idxs, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idxs) < 3 {
		t.Fatalf("%d index files, want several", len(idxs))
	}
	before := make(map[string][]byte)
	for _, p := range idxs {
		before[p], _ = os.ReadFile(p)
	}
	os.Remove(idxs[0])
	data := slices.Clone(before[idxs[1]])
	data[len(data)-7] ^= 1
	os.WriteFile(idxs[1], data, 0o600)
	d2, rec := diskLog(t, cfg)
	if rec.IndexesRebuilt != 2 {
		t.Fatalf("%d indexes rebuilt, want 2", rec.IndexesRebuilt)
	}
	checkHolds(t, d2, all)
	for _, p := range idxs {
		if got, _ := os.ReadFile(p); !bytes.Equal(got, before[p]) {
			t.Fatalf("%s differs after the rebuild", filepath.Base(p))
		}
	}
	x, err := readIndex(idxs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Every entry points at a record starting with the message it names.
	seg, _ := os.ReadFile(filepath.Join(dir, segName(x.base)))
	for _, e := range x.entries {
		payload, _, _, err := frame(seg[e.offset:])
		if err != nil || binary.LittleEndian.Uint64(payload[1:]) != e.seq {
			t.Fatalf("index entry %+v: %v", e, err)
		}
	}
}

// TestDiskHistoryLost: segment files deleted under a checkpoint are a new
// epoch, said so; a missing directory is a new log; a missing middle
// segment is refused.
func TestDiskHistoryLost(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, SegmentBytes: 16 << 10}
	d, _ := diskLog(t, cfg)
	newWriter(9).fill(t, d, 1000, 100)
	epoch := d.Epoch()
	d.Close()

	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	mid := t.TempDir()
	copyDir(t, dir, mid)
	os.Remove(filepath.Join(mid, filepath.Base(segs[len(segs)/2])))
	c := cfg
	c.Dir = mid
	if _, _, err := Open(c); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a middle segment missing: %v, want ErrCorrupt", err)
	}

	for _, s := range segs {
		os.Remove(s)
	}
	d2, rec := diskLog(t, cfg)
	if rec.NewEpoch == "" || d2.Epoch() == epoch || d2.Stats().Last != 0 {
		t.Fatalf("segments deleted: %+v epoch %d (was %d), want a new epoch, said why", rec, d2.Epoch(), epoch)
	}
	d2.Close()
	os.RemoveAll(dir)
	_, rec = diskLog(t, cfg)
	if !rec.Created {
		t.Fatalf("directory deleted: %+v, want Created", rec)
	}
}

// TestDiskDurable: under fsync always, readers see an append only once
// it is synced, and one fsync serves every caller waiting for it.
func TestDiskDurable(t *testing.T) {
	dir := t.TempDir()
	d, _ := diskLog(t, DiskConfig{Dir: dir, Fsync: FsyncPolicy{Always: true}})
	w := newWriter(10)
	var all []Entry
	for range 10 {
		all = append(all, w.fill(t, d, 4, 10)...)
	}
	if got, _, _ := d.After(0, 100, nil); len(got) != 0 || d.Last() != 0 {
		t.Fatalf("before a sync readers see %d messages, want none", len(got))
	}
	changed := d.Changed()
	before := d.syncs.Load()
	var wg sync.WaitGroup
	for i := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Durable(all[i].Seq); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := d.syncs.Load() - before; n != 1 {
		t.Fatalf("%d fsyncs for %d callers waiting on what was written before any, want 1", n, len(all))
	}
	select {
	case <-changed:
	default:
		t.Fatal("readers not woken by the sync")
	}
	checkHolds(t, d, all)
	d.Close()
	d2, _ := diskLog(t, DiskConfig{Dir: dir, Fsync: FsyncPolicy{Always: true}})
	checkHolds(t, d2, all)
}

// TestDiskConcurrent appends from several goroutines through Durable
// while readers follow, under both policies.
func TestDiskConcurrent(t *testing.T) {
	for _, always := range []bool{false, true} {
		t.Run(fmt.Sprint("always=", always), func(t *testing.T) {
			cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 8 << 10, Fsync: FsyncPolicy{Always: always, Interval: time.Millisecond}}
			d, _ := diskLog(t, cfg)
			var mu sync.Mutex
			w := newWriter(11)
			var all []Entry
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 50 {
						mu.Lock()
						seq, ts := d.Tail()
						b := w.batch(1+w.rng.IntN(4), 64, seq, ts)
						err := d.Append(b)
						all = append(all, b...)
						mu.Unlock()
						if err == nil {
							err = d.Durable(b[len(b)-1].Seq)
						}
						if err != nil {
							t.Error(err)
							return
						}
						if d.Last() < b[len(b)-1].Seq {
							t.Errorf("acknowledged %d, readers see up to %d", b[len(b)-1].Seq, d.Last())
							return
						}
					}
				}()
			}
			wg.Wait()
			checkHolds(t, d, all)
			d.Close()
			d2, _ := diskLog(t, cfg)
			checkHolds(t, d2, all)
		})
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskDedupWindow: a log read back from past its retention remembers
// exactly the last DedupWindow IDs, then and as it goes on.
func TestDiskDedupWindow(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 4 << 10, Config: Config{MaxMessages: 300, DedupWindow: 100}}
	d, _ := diskLog(t, cfg)
	w := newWriter(12)
	all := w.fill(t, d, 1000, 30)
	d.Close()
	d2, _ := diskLog(t, cfg)
	if st := d2.Stats(); st.First <= 1 {
		t.Fatalf("first held %d, want retention to have dropped the start", st.First)
	}
	check := func(all []Entry) {
		t.Helper()
		n := len(all)
		for i := n - 150; i < n; i++ {
			a := d2.Lookup([]Entry{{ID: all[i].ID}}, nil)[0]
			if remembered := i >= n-100; a.Duplicate != remembered || remembered && (a.Seq != all[i].Seq || a.Time != all[i].Time) {
				t.Fatalf("message %d of %d: lookup %+v, remembered want %v", i+1, n, a, remembered)
			}
		}
	}
	check(all)
	for range 3 {
		all = append(all, w.fill(t, d2, 70, 30)...)
		check(all)
	}
}

// TestDiskWriteBehind: with WriteBehind, records wait in memory until
// enough are pending, a sync, a segment sealed, or Close; a crash loses
// only those, and the log reads back as a prefix of what was appended,
// with nothing torn. Appending the rest again (as a cell's state machine
// replays raft's entries) makes it whole.
func TestDiskWriteBehind(t *testing.T) {
	for _, always := range []bool{false, true} {
		t.Run(fmt.Sprint("always=", always), func(t *testing.T) {
			cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 64 << 10, WriteBehind: 8 << 10,
				Fsync: FsyncPolicy{Always: always, Interval: time.Hour}}
			d, _ := diskLog(t, cfg)
			w := newWriter(13)
			few := w.fill(t, d, 5, 20)
			if got := dirBytes(t, cfg.Dir); got != segHeaderSize {
				t.Fatalf("segment files hold %d bytes after appending less than WriteBehind, want the header alone (%d)", got, segHeaderSize)
			}
			if always {
				if err := d.Durable(few[len(few)-1].Seq); err != nil {
					t.Fatal(err)
				}
			}
			checkHolds(t, d, few) // readers see what is pending
			all := append(few, w.fill(t, d, 2000, 200)...)
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
			synced := len(all)
			all = append(all, w.fill(t, d, 300, 200)...)
			if len(d.pend) == 0 {
				// The last append handed everything pending to the
				// writer (it was idle by then: a matter of timing). One
				// message more stays pending, under WriteBehind.
				all = append(all, w.fill(t, d, 1, 200)...)
			}
			if len(d.pend) == 0 {
				t.Fatal("nothing pending before the crash: the test proves nothing")
			}
			d.crash()

			d2, rec := diskLog(t, cfg)
			if rec.TornBytes != 0 || rec.Segments < 2 {
				t.Fatalf("reopened: %+v, want several segments and nothing torn", rec)
			}
			got, _, _ := d2.After(0, len(all)+1, nil)
			if len(got) < synced || len(got) >= len(all) {
				t.Fatalf("reopened with %d messages: want at least the %d synced, and fewer than the %d appended", len(got), synced, len(all))
			}
			checkHolds(t, d2, all[:len(got)])
			appendRest(t, cfg, d2, all, len(got))
		})
	}
}

// appendRest appends all[held:] again to d, the log reopened after a crash
// that kept only all[:held] (as a cell's state machine replays raft's
// entries), in batches of other sizes than the first time; closed and
// opened again, it must hold all.
func appendRest(t *testing.T, cfg DiskConfig, d *DiskLog, all []Entry, held int) {
	t.Helper()
	rest := all[held:]
	for i := 0; i < len(rest); i += 7 {
		if err := d.Append(rest[i:min(i+7, len(rest))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, _ := diskLog(t, cfg)
	checkHolds(t, d2, all)
}

// dirBytes returns the bytes of the segment files in dir.
func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var n int64
	for _, s := range segs {
		st, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// TestDiskSegmentCreationCut: a crash while the next segment was being
// created (SIGKILL between the file's creation and its header's write, or
// a power cut before either reached the device) leaves the newest segment
// shorter than its header, or zeros: it holds no record, so nothing in it
// was ever acknowledged. The log opens, with everything before it, removes
// it, and goes on; it refused to open (the group was not served) as if the
// file were corrupt. A short segment that is not the newest, or that does
// not follow on from the one before it, is still corruption.
func TestDiskSegmentCreationCut(t *testing.T) {
	src := t.TempDir()
	cfg := DiskConfig{Dir: src, SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	w := newWriter(8)
	all := w.fill(t, d, 1000, 100)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	tail, tailT := d.Tail()
	d.crash()
	h := segHeader{epoch: d.epoch, base: tail + 1, prevTime: tailT}
	header := h.encode(nil)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"half a header", header[:20]},
		{"a header of zeros", make([]byte, segHeaderSize)},
		{"zeros past a header", make([]byte, 3*segHeaderSize)},
	} {
		dir := t.TempDir()
		copyDir(t, src, dir)
		unborn := filepath.Join(dir, segName(tail+1))
		if err := os.WriteFile(unborn, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Dir = dir
		d2, rec, err := Open(c)
		if err != nil {
			t.Fatalf("%s: Open: %v, want the log with the segment's creation cut", tc.name, err)
		}
		if rec.TornFile != segName(tail+1) || rec.TornBytes != int64(len(tc.data)) {
			t.Errorf("%s: torn %q %d bytes, want %s %d", tc.name, rec.TornFile, rec.TornBytes, segName(tail+1), len(tc.data))
		}
		if seq, ts := d2.Tail(); seq != tail || ts != tailT {
			t.Fatalf("%s: tail %d at %d, want %d at %d", tc.name, seq, ts, tail, tailT)
		}
		checkHolds(t, d2, all)
		more := w.fill(t, d2, 30, 100)
		d2.Close()
		d3, _ := diskLog(t, c)
		checkHolds(t, d3, append(slices.Clone(all), more...))
		d3.Close()
	}

	// Not the newest: a segment after it holds messages.
	dir := t.TempDir()
	copyDir(t, src, dir)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	if err := os.Truncate(segs[len(segs)-2], 20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(DiskConfig{Dir: dir, SegmentBytes: cfg.SegmentBytes}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a cut segment before the newest: Open: %v, want ErrCorrupt", err)
	}
	// The newest, but not following on: the segment before it is missing.
	dir = t.TempDir()
	copyDir(t, src, dir)
	os.WriteFile(filepath.Join(dir, segName(tail+1000)), nil, 0o600)
	if _, _, err := Open(DiskConfig{Dir: dir, SegmentBytes: cfg.SegmentBytes}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("an empty newest segment after a gap: Open: %v, want ErrCorrupt", err)
	}

	// The first segment of a new log, cut as it was created: a new log.
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, segName(1)), nil, 0o600)
	d4, rec, err := Open(DiskConfig{Dir: dir})
	if err != nil {
		t.Fatalf("an empty first segment: Open: %v, want a new log", err)
	}
	if !rec.Created {
		t.Errorf("an empty first segment: %+v, want a new log created", rec)
	}
	w.fill(t, d4, 5, 10)
	d4.Close()
}

// TestDiskCrashes crashes a disk log (its files closed unsynced, as a
// SIGKILL leaves them) after random work, and reopens it, again and again:
// batches stamped by a Sequencer at the log's tail, on a clock that now and
// then steps back an hour (across a crash too), repeated IDs among them,
// age-outs and count retention emptying and deleting segment files, syncs
// and rotations, and now and then a next segment whose creation the crash
// cut short. Each reopening holds every message from its first to the
// tail it had, with the stamps they were given, and nothing after; it has
// dropped nothing retention had kept, nor taken retention's deletions for
// files lost; its tail's time is the one it had, so stamps go on strictly
// increasing whatever the clock says; and every ID it holds is still
// found (a retry is not stored again).
func TestDiskCrashes(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{MaxMessages: 400, MaxAge: time.Minute, SegmentSize: 40},
		SegmentBytes: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	rng := rand.New(rand.NewPCG(13, 13))
	now := time.Now().UnixNano()
	var all []Entry // every message stored, in order
	var seq Sequencer
	n := 0
	for round := range 40 {
		d, _ := diskLog(t, cfg)
		if round%2 == 1 {
			cfg.Fsync.Always = !cfg.Fsync.Always
		}
		for range 1 + rng.IntN(60) {
			switch r := rng.IntN(20); {
			case r == 0:
				now -= int64(time.Hour) // the clock steps back
			case r == 1:
				now += int64(2 * time.Minute) // past the age limit
				d.Expire(time.Unix(0, now))
			case r == 2:
				if err := d.Sync(); err != nil {
					t.Fatal(err)
				}
			default:
				now += rng.Int64N(int64(time.Second))
				batch := make([]Entry, 1+rng.IntN(16))
				for i := range batch {
					n++
					batch[i] = Entry{ID: id(n), From: sender(rng.IntN(3)), Body: fmt.Appendf(nil, "%d", n)}
					if len(all) > 0 && rng.IntN(10) == 0 {
						batch[i].ID = all[len(all)-1-rng.IntN(min(len(all), 50))].ID // a retry
					}
				}
				acks := d.Lookup(batch, nil)
				seq.Last, seq.LastTime = d.Tail()
				k := seq.Stamp(now, batch, acks)
				if k == 0 {
					continue // every ID a retry
				}
				if err := d.Append(batch[:k]); err != nil {
					t.Fatalf("round %d: append: %v", round, err)
				}
				all = append(all, batch[:k]...)
			}
		}
		tail, tailT := d.Tail()
		if err := d.Durable(tail); err != nil { // under always, published once synced
			t.Fatal(err)
		}
		before := d.Stats()
		if before.Messages == 0 {
			before.First = tail + 1
		}
		d.crash()
		if rng.IntN(4) == 0 {
			// Killed as it created the next segment (TestDiskSegmentCreationCut);
			// unless that segment is there already, begun when an age-out
			// emptied the one before it.
			f, err := os.OpenFile(filepath.Join(dir, segName(tail+1)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err == nil {
				f.Close()
			} else if !errors.Is(err, fs.ErrExist) {
				t.Fatal(err)
			}
		}

		d2, rec := diskLog(t, cfg)
		if rec.MissingLast != 0 {
			t.Fatalf("round %d: messages %d to %d reported missing after the crash, where retention deleted files", round, rec.MissingFirst, rec.MissingLast)
		}
		if s, st := d2.Tail(); s != tail || st != tailT {
			t.Fatalf("round %d: tail %d at %d after the crash, want %d at %d", round, s, st, tail, tailT)
		}
		after := d2.Stats()
		if after.Messages == 0 {
			after.First = tail + 1 // a log that holds nothing says 0
		}
		// Retention drops a memory segment at a time, and the history
		// read back is cut into segments at other places than the one
		// appended was (and from the checkpoint's floor, as of the last
		// sync): it may keep up to a segment less than before, never
		// less than its limit allows.
		if after.First > before.First && after.Messages < cfg.MaxMessages-cfg.SegmentSize {
			t.Fatalf("round %d: first held %d after the crash, was %d, and it holds %d messages: retained messages lost", round, after.First, before.First, after.Messages)
		}
		checkHolds(t, d2, all[after.First-1:])
		var ids []Entry
		for _, e := range all[after.First-1:] {
			ids = append(ids, Entry{ID: e.ID})
		}
		for i, a := range d2.Lookup(ids, nil) {
			if e := all[int(after.First)-1+i]; !a.Duplicate || a.Seq != e.Seq || a.Time != e.Time {
				t.Fatalf("round %d: ID of #%d looked up after the crash: %+v, want its original stamps", round, e.Seq, a)
			}
		}
		d2.Close()
	}
	t.Logf("%d messages stored over 40 crashes", len(all))
}

// TestDiskNewDirsSynced: a new log's directory, and each missing one above
// it that Open creates (the data directory's logs/, a new group's
// directory), is made durable in the directory that holds it, not only the
// files inside it: after a power cut, a log whose files were synced
// (acknowledged under fsync always) could otherwise be gone with the
// directory entry that named it.
func TestDiskNewDirsSynced(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data", "logs", "group")
	var mu sync.Mutex
	synced := map[string]bool{}
	cfg := DiskConfig{Dir: dir, Fsync: FsyncPolicy{Always: true}, syncDir: func(d string) error {
		mu.Lock()
		synced[d] = true
		mu.Unlock()
		return syncDir(d)
	}}
	d, _ := diskLog(t, cfg)
	newWriter(15).fill(t, d, 3, 10)
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{base, filepath.Join(base, "data"), filepath.Join(base, "data", "logs"), dir} {
		if !synced[want] {
			t.Errorf("%s not synced (synced: %v)", want, synced)
		}
	}
}

// TestDiskTailFlipped flips a byte of the newest segment's last record
// (its payload, after its length): past what was synced, it reads as a
// torn tail (a write a power cut left half on the device, never
// acknowledged under the policy that wrote it) and is cut, the records
// before it kept; once synced, it is corruption, and the log refuses to
// open rather than drop an acknowledged message.
func TestDiskTailFlipped(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	for _, synced := range []bool{false, true} {
		dir := t.TempDir()
		cfg := DiskConfig{Dir: dir, Fsync: FsyncPolicy{Interval: time.Hour}}
		d, _ := diskLog(t, cfg)
		w := newWriter(16)
		all := w.fill(t, d, 50, 40)
		if synced {
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		d.crash()
		path := filepath.Join(dir, segName(1))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		last := lastRecordStart(t, data)
		data[last+recHeaderSize+1+rng.IntN(len(data)-last-recHeaderSize-1)] ^= 0x5a
		os.WriteFile(path, data, 0o600)
		d2, rec, err := Open(cfg)
		if synced {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("the synced last record flipped: Open: %v, want ErrCorrupt", err)
			}
			if err == nil {
				d2.Close()
			}
			continue
		}
		if err != nil {
			t.Fatalf("the unsynced last record flipped: Open: %v, want its tail cut", err)
		}
		if rec.TornBytes != int64(len(data)-last) {
			t.Errorf("torn %d bytes, want the last record's %d", rec.TornBytes, len(data)-last)
		}
		seq, _ := d2.Tail()
		if seq >= all[len(all)-1].Seq {
			t.Errorf("tail %d after the last record was cut, want before %d", seq, all[len(all)-1].Seq)
		}
		checkHolds(t, d2, all[:seq])
		d2.Close()
	}
}

// TestDiskResetCut: a Reset deletes the log's segment files, then creates
// the next one at seq+1; a crash between that file's creation and its
// header's write (or a power cut before either reached the device) leaves
// that segment alone, empty. The log opens as one whose files are gone (a
// new history under the configured epoch, which a cell's replica catches
// up from its peers), as Reset's doc says of a crash midway. It was
// refused as corrupt, and the daemon did not serve the group.
func TestDiskResetCut(t *testing.T) {
	const epoch = 77
	for _, data := range [][]byte{nil, make([]byte, segHeaderSize)} {
		dir := t.TempDir()
		cfg := DiskConfig{Dir: dir, Config: Config{Epoch: epoch}}
		d, _ := diskLog(t, cfg)
		w := newWriter(29)
		w.fill(t, d, 40, 100)
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		seq, ts := d.Tail()
		if err := d.Reset(seq+100, ts+100); err != nil {
			t.Fatal(err)
		}
		d.crash()
		// The crash came as the new segment was created: the old files
		// gone, the new one without its header.
		if err := os.WriteFile(filepath.Join(dir, segName(seq+101)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		d2, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("%d bytes: Open after a reset cut at its segment's creation: %v, want a log whose files are gone", len(data), err)
		}
		if rec.NewEpoch == "" || d2.Epoch() != epoch {
			t.Errorf("%d bytes: opened %+v in epoch %d, want a new history in epoch %d", len(data), rec, d2.Epoch(), epoch)
		}
		more := w.fill(t, d2, 5, 10)
		d2.Close()
		d3, _ := diskLog(t, cfg)
		checkHolds(t, d3, more)
		d3.Close()
	}
}

// powerCut returns the newest segment data as a power cut could leave it
// on the device when its first synced bytes were synced and the rest only
// written: each page (cutPage) the sync had not covered reached the
// device or did not, in any order, one that did not reading as the sync
// left it (zeros past synced), and the file as long as it was, or cut at
// a page past the first lost one (its length is metadata, written apart).
// At least one page is lost with a page after it written: a hole followed
// by data. It returns the image and where the first lost byte is.
func powerCut(rng *rand.Rand, data []byte, synced int) ([]byte, int) {
	img := slices.Clone(data)
	first, last := synced/cutPage, (len(data)-1)/cutPage
	lost := make([]bool, last+1)
	for pg := first; pg <= last; pg++ {
		lost[pg] = rng.IntN(2) == 0
	}
	hole := false
	for pg := first; pg < last; pg++ {
		hole = hole || (lost[pg] && !lost[pg+1])
	}
	if !hole && last > first {
		pg := first + rng.IntN(last-first)
		lost[pg], lost[pg+1] = true, false
	}
	at := -1
	for pg := first; pg <= last; pg++ {
		if lost[pg] {
			from := max(pg*cutPage, synced)
			clear(img[from:min((pg+1)*cutPage, len(img))])
			if at < 0 {
				at = from
			}
		}
	}
	if rng.IntN(3) == 0 && at >= 0 {
		// The length as of a later page boundary than the first lost.
		// (None lost, at is -1, and -1/cutPage is 0: the file was cut at
		// the first page boundaries, through what was synced.)
		end := (at/cutPage + 1 + rng.IntN(last-at/cutPage+1)) * cutPage
		img = img[:min(end, len(img))]
	}
	return img, at
}

// TestDiskPowerCutHole: a power cut writes the pages a log wrote since its
// last sync in any order, or not at all, so the newest segment may hold a
// hole (zeros) with whole records after it. Nothing after the last sync
// was acknowledged under fsync always (and under the interval policy, it
// is the last interval, which a power cut may lose): the log opens with
// every record before the hole, cuts the rest as a torn tail, says it was
// a hole (TornHole), and goes on from there. It was refused as corrupt and
// the group went unserved. A hole before the sync point, and bytes that
// are not zeros (not a power cut's), with whole records after them, are
// still refused.
func TestDiskPowerCutHole(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	for _, always := range []bool{false, true} {
		src := t.TempDir()
		cfg := DiskConfig{Dir: src, Fsync: FsyncPolicy{Always: always, Interval: time.Hour}}
		d, _ := diskLog(t, cfg)
		w := newWriter(31)
		acked := w.fill(t, d, 100, 300)
		if err := d.Sync(); err != nil { // acknowledged under always only now
			t.Fatal(err)
		}
		path := filepath.Join(src, segName(1))
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		synced := int(st.Size())
		all := append(slices.Clone(acked), w.fill(t, d, 300, 300)...) // written, never synced
		d.crash()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data)-synced < 8*cutPage {
			t.Fatalf("%d bytes written since the sync, want several pages", len(data)-synced)
		}
		// Where each record starts, and the last message before it.
		starts := map[int]uint64{}
		var dec recordDecoder
		seq, ts := uint64(0), int64(0)
		for off := segHeaderSize; off < len(data); {
			payload, size, _, err := frame(data[off:])
			if err != nil {
				t.Fatal(err)
			}
			starts[off] = seq
			es, err := dec.decode(payload, seq, ts, nil)
			if err != nil {
				t.Fatal(err)
			}
			seq, ts = es[len(es)-1].Seq, es[len(es)-1].Time
			off += size
		}
		t.Logf("always=%v: %d records, %d bytes synced of %d", always, len(starts), synced, len(data))
		for trial := range 40 {
			img, at := powerCut(rng, data, synced)
			dir := t.TempDir()
			copyDir(t, src, dir)
			if err := os.WriteFile(filepath.Join(dir, segName(1)), img, 0o600); err != nil {
				t.Fatal(err)
			}
			// The cut: the start of the record the first lost byte is in.
			cut := segHeaderSize
			for off := range starts {
				if off <= at && off > cut {
					cut = off
				}
			}
			c := cfg
			c.Dir = dir
			d2, rec, err := Open(c)
			if err != nil {
				t.Fatalf("always=%v, trial %d: the first lost byte at %d (%d synced): Open: %v, want the tail cut", always, trial, at, synced, err)
			}
			if rec.TornBytes != int64(len(img)-cut) || rec.TornHole != !zeros(img[cut:]) {
				t.Errorf("always=%v, trial %d: torn %d bytes, hole %v; want %d, %v", always, trial, rec.TornBytes, rec.TornHole, len(img)-cut, !zeros(img[cut:]))
			}
			tail, _ := d2.Tail()
			if tail != starts[cut] || tail < uint64(len(acked)) {
				t.Fatalf("always=%v, trial %d: tail %d, want %d (%d synced)", always, trial, tail, starts[cut], len(acked))
			}
			checkHolds(t, d2, all[:tail])
			more := w.fill(t, d2, 5, 300)
			d2.Close()
			d3, _ := diskLog(t, c)
			checkHolds(t, d3, append(slices.Clone(all[:tail]), more...))
			d3.Close()
		}

		// Refused: a hole in what was synced (a page before the sync
		// point; the page the sync point is in, as a whole), and damage
		// past it that is not zeros, each with the data after it whole.
		// Without a checkpoint that reads back (removed, or damaged), the
		// sync point is not known: a hole is not taken for a power cut's
		// (the checkpoint is made with the log, before any append, and
		// rewritten in place: no crash loses it), and until session 14's
		// hostile round a synced page lost was cut with all after it.
		mid := (synced/cutPage + 2) * cutPage
		for _, tc := range []struct {
			name     string
			from, to int
			fill     byte
			cpt      []byte // the checkpoint's bytes instead; nil: kept
		}{
			{"a synced page lost", cutPage, 2 * cutPage, 0, nil},
			{"the page of the sync point lost whole", synced / cutPage * cutPage, (synced/cutPage + 1) * cutPage, 0, nil},
			{"a page past the sync point garbled", mid, mid + cutPage, 0xa5, nil},
			{"a synced page lost, the checkpoint removed", cutPage, 2 * cutPage, 0, []byte{}},
			{"a synced page lost, the checkpoint damaged", cutPage, 2 * cutPage, 0, make([]byte, cptSize)},
		} {
			img := slices.Clone(data)
			for i := tc.from; i < tc.to; i++ {
				img[i] = tc.fill
			}
			dir := t.TempDir()
			copyDir(t, src, dir)
			if err := os.WriteFile(filepath.Join(dir, segName(1)), img, 0o600); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.cpt == nil:
			case len(tc.cpt) == 0:
				if err := os.Remove(filepath.Join(dir, cptName)); err != nil {
					t.Fatal(err)
				}
			default:
				if err := os.WriteFile(filepath.Join(dir, cptName), tc.cpt, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c := cfg
			c.Dir = dir
			d2, _, err := Open(c)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("always=%v: %s: Open: %v, want ErrCorrupt", always, tc.name, err)
			}
			if err == nil {
				d2.Close()
			}
		}
	}
}

// TestDiskOldestMissing: retention deletes the oldest segment files, and
// may be interrupted by a crash at any point; a file deleted by hand (or
// lost with the disk) leaves the same directory behind. Retention now
// makes the checkpoint say, durably, where the history begins before it
// deletes a file, so that a log whose oldest files are missing past that
// point says so (Recovery.MissingFirst, MissingLast) and serves the rest,
// while retention's deletions, crash or not, say nothing. The log opened
// without a word, its first message moved up.
func TestDiskOldestMissing(t *testing.T) {
	src := t.TempDir()
	cfg := DiskConfig{Dir: src, Config: Config{MaxMessages: 800}, SegmentBytes: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	w := newWriter(37)
	all := w.fill(t, d, 3000, 100) // retention deletes files as it goes; nothing is synced
	d.crash()
	segs, _ := filepath.Glob(filepath.Join(src, "*.seg"))
	if len(segs) < 3 || filepath.Base(segs[0]) == segName(1) {
		t.Fatalf("segments %v: want several, retention having deleted the first", segs)
	}

	// Retention's deletions, interrupted by the crash: nothing missing.
	dir := t.TempDir()
	copyDir(t, src, dir)
	c := cfg
	c.Dir = dir
	d2, rec := diskLog(t, c)
	if rec.MissingLast != 0 {
		t.Errorf("after retention's deletions: missing %d to %d, want nothing", rec.MissingFirst, rec.MissingLast)
	}
	d2.Close()
	cpt, err := readCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	first := cpt.first // where retention last said the history begins

	// The oldest file deleted by hand.
	dir = t.TempDir()
	copyDir(t, src, dir)
	if err := os.Remove(filepath.Join(dir, filepath.Base(segs[0]))); err != nil {
		t.Fatal(err)
	}
	next, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(segs[1]), ".seg"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = dir
	d3, rec := diskLog(t, c)
	if rec.MissingFirst != first || rec.MissingLast != next-1 {
		t.Errorf("the oldest segment deleted: missing %d to %d, want %d to %d", rec.MissingFirst, rec.MissingLast, first, next-1)
	}
	checkHolds(t, d3, all[next-1:])
	d3.Close()
}

// TestDiskCheckpointAhead: a Reset makes the checkpoint say, durably, that
// the history begins after its seq before it deletes the old files, so a
// crash midway leaves the newest of them with a checkpoint past what they
// hold: the log opens empty, standing after them. What is appended from
// there (acknowledged once written, under the interval policy) must not be
// hidden by that checkpoint after the next crash: the log rewrites it,
// durably, before its first append. (The same checkpoint follows a power
// cut that took the tail retention's checkpoint had passed.)
func TestDiskCheckpointAhead(t *testing.T) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, SegmentBytes: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	w := newWriter(43)
	w.fill(t, d, 400, 100)
	seq, _ := d.Tail()
	// A Reset to seq+100, cut short: its checkpoint written, the oldest
	// file deleted, the others not yet.
	if err := d.checkpoint(0, seq+101, true); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 2 {
		t.Fatalf("segments %v, want several", segs)
	}
	if err := os.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	d.crash()
	d2, rec := diskLog(t, cfg)
	if rec.MissingLast != 0 {
		t.Errorf("after a Reset cut short: missing %d to %d, want nothing", rec.MissingFirst, rec.MissingLast)
	}
	if s, _ := d2.Tail(); s != seq {
		t.Fatalf("tail %d after a Reset cut short, want %d", s, seq)
	}
	checkHolds(t, d2, nil)
	more := w.fill(t, d2, 5, 100)
	d2.crash()
	d3, _ := diskLog(t, cfg)
	checkHolds(t, d3, more)
	d3.Close()
}

// TestDiskPowerCuts crashes a disk log after random work, as TestDiskCrashes
// does, but half the time as a power cut: the newest segment as the device
// could hold it (powerCut: the pages written since its last sync lost at
// random, holes included; sealed segments were synced as they were
// sealed). Each reopening holds, exactly, every message from its first to
// its tail, which is at least the last one synced, and what is appended
// next survives the next crash (a checkpoint that retention made say the
// history begins past the tail the cut left does not hide it).
func TestDiskPowerCuts(t *testing.T) {
	// Write-behind: the records pending are lost too, and segments are
	// sealed on the log's writer (seal.go).
	for _, behind := range []int{0, 1 << 10} {
		t.Run(fmt.Sprint("writebehind=", behind), func(t *testing.T) { testDiskPowerCuts(t, behind) })
	}
}

func testDiskPowerCuts(t *testing.T, behind int) {
	dir := t.TempDir()
	cfg := DiskConfig{Dir: dir, Config: Config{MaxMessages: 200, MaxAge: time.Minute, SegmentSize: 25},
		SegmentBytes: 64 << 10, Fsync: FsyncPolicy{Interval: time.Hour}, WriteBehind: behind}
	if behind > 0 {
		// Segments of several writes (a segment holds MaxMessages/8),
		// so that the newest holds some, past its sync, as the crash
		// comes.
		cfg.MaxMessages, cfg.SegmentSize = 800, 100
	}
	rng := rand.New(rand.NewPCG(47, 47))
	now := time.Now().UnixNano()
	var all []Entry // every message stored and not lost, in order
	var seq Sequencer
	n, cuts, holes, ahead, lost := 0, 0, 0, 0, 0
	syncBase, syncOff := uint64(1), int64(segHeaderSize) // the newest segment's synced end, as of the last sync
	d, _ := diskLog(t, cfg)
	for round := range 60 {
		for range 1 + rng.IntN(60) {
			switch r := rng.IntN(40); {
			case r == 0:
				now += int64(2 * time.Minute) // past the age limit
				d.Expire(time.Unix(0, now))
			case r == 1:
				if err := d.Sync(); err != nil {
					t.Fatal(err)
				}
				syncBase, syncOff = d.fbase, d.fsize
			default:
				now += rng.Int64N(int64(time.Second))
				batch := make([]Entry, 1+rng.IntN(16))
				for i := range batch {
					n++
					batch[i] = Entry{ID: id(n), From: sender(rng.IntN(3)), Body: bytes.Repeat([]byte{byte(n)}, 50+rng.IntN(200))}
				}
				seq.Last, seq.LastTime = d.Tail()
				k := seq.Stamp(now, batch, d.Lookup(batch, nil))
				if err := d.Append(batch[:k]); err != nil {
					t.Fatalf("round %d: append: %v", round, err)
				}
				all = append(all, batch[:k]...)
			}
		}
		tail, _ := d.Tail()
		held := d.Stats()
		if held.Messages == 0 {
			held.First = tail + 1
		}
		newest := d.fbase
		synced, off := newest-1, int(segHeaderSize) // the sealed segments' messages at least
		if syncBase == newest {
			d.smu.Lock()
			synced, off = max(synced, d.synced), int(syncOff)
			d.smu.Unlock()
		}
		d.crash()
		path := filepath.Join(dir, segName(newest))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 && len(data) > off {
			img, _ := powerCut(rng, data, off)
			if err := os.WriteFile(path, img, 0o600); err != nil {
				t.Fatal(err)
			}
			cuts++
		}
		cpt, err := readCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}

		var rec Recovery
		d, rec = diskLog(t, cfg)
		got, _ := d.Tail()
		if got < synced || got > tail {
			t.Fatalf("round %d: tail %d after the crash, want %d to %d", round, got, synced, tail)
		}
		if rec.TornHole {
			holes++
		}
		if cpt.first > got+1 {
			ahead++
		}
		lost += int(tail - got)
		all = all[:got]
		first := got + 1
		if st := d.Stats(); st.Messages > 0 {
			first = st.First
		}
		// What was held before the crash and not cut is held still, as
		// far as retention lets it (TestDiskCrashes says why a segment's
		// worth less).
		if kept := int(got + 1 - min(held.First, got+1)); int(got+1-first) < min(kept, cfg.MaxMessages-cfg.SegmentSize) {
			t.Fatalf("round %d: holds %d to %d after the crash, held %d to %d before: retained messages lost", round, first, got, held.First, tail)
		}
		checkHolds(t, d, all[first-1:])
	}
	d.Close()
	t.Logf("%d messages stored over 60 crashes, %d of them power cuts (%d with holes, %d leaving a checkpoint past the tail), %d unsynced messages lost",
		len(all), cuts, holes, ahead, lost)
}

// TestDiskSyncFailsDuringReset: an fsync that fails while a Reset runs. The
// sync's owner held the group commit's lock while it took the writers' to
// fail the log, and the Reset held the writers' while it took the group
// commit's to say what was synced: both waited for ever (a cell replica
// resetting its log, for a catch-up or a message over its retention, on a
// disk that returns EIO). Now the sync fails the log and the Reset
// returns.
func TestDiskSyncFailsDuringReset(t *testing.T) {
	inSync, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cfg := DiskConfig{Dir: t.TempDir(), Fsync: FsyncPolicy{Interval: time.Hour}, syncFile: func(*os.File) error {
		once.Do(func() { close(inSync) })
		<-release
		return errors.New("input/output error")
	}}
	d, _, err := Open(cfg) // closed at the end: a deadlocked log would not close
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(53)
	w.fill(t, d, 10, 10)
	synced := make(chan error, 1)
	go func() { synced <- d.Sync() }()
	<-inSync
	seq, ts := d.Tail()
	reset := make(chan error, 1)
	go func() { reset <- d.Reset(seq+5, ts+5) }()
	// The failing fsync returns once the Reset holds the writers' lock.
	pace := time.NewTicker(time.Millisecond)
	defer pace.Stop()
	for d.wmu.TryLock() {
		d.wmu.Unlock()
		<-pace.C
	}
	close(release)
	deadline := time.After(10 * time.Second)
	for range 2 {
		select {
		case err := <-synced:
			if !errors.Is(err, ErrFailed) {
				t.Errorf("the failed sync: %v, want ErrFailed", err)
			}
		case err := <-reset:
			if err != nil {
				t.Errorf("the reset: %v", err)
			}
		case <-deadline:
			t.Fatal("the sync and the reset still waiting 10 s on: deadlocked")
		}
	}
	if err := d.Append(w.batch(1, 10, seq+5, ts+5)); !errors.Is(err, ErrFailed) {
		t.Errorf("append after the failed fsync: %v, want ErrFailed", err)
	}
	d.Close()
}

package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// holdSeal makes the next seal on the writer of the log in dir wait at
// the point at (sealTestHold) until release is called; held receives its
// job there. Call it before opening the log, whose Close at cleanup waits
// for the seal: the seal is released first.
func holdSeal(t *testing.T, dir string, at int) (held chan *sealJob, release func()) {
	held, rel := make(chan *sealJob, 1), make(chan struct{})
	var once, relOnce sync.Once
	sealTestHold = func(point int, j *sealJob) {
		if point == at && filepath.Dir(j.old.Name()) == dir {
			once.Do(func() {
				held <- j
				<-rel
			})
		}
	}
	release = func() { relOnce.Do(func() { close(rel) }) }
	t.Cleanup(func() { sealTestHold = nil })
	return held, release
}

// fillUntilSealed appends a message at a time until the log begins a new
// segment, and returns them, the last in the new segment.
func fillUntilSealed(t *testing.T, d *DiskLog, w *writer) []Entry {
	t.Helper()
	fbase := func() uint64 {
		d.wmu.Lock()
		defer d.wmu.Unlock()
		return d.fbase
	}
	base := fbase()
	var all []Entry
	for fbase() == base {
		all = append(all, w.fill(t, d, 1, 200)...)
		if len(all) > 10000 {
			t.Fatal("10,000 messages appended and no segment sealed")
		}
	}
	return all
}

// waitHeld returns the seal held on the writer, failing the test if none
// begins there: the seal ran inline, in the append.
func waitHeld(t *testing.T, held chan *sealJob) *sealJob {
	t.Helper()
	select {
	case j := <-held:
		return j
	case <-time.After(10 * time.Second):
		t.Fatal("a segment was sealed and no seal began on the writer 10 s on: sealed inline, in the append")
		return nil
	}
}

// TestDiskSealBehind: a log whose writes lag seals a full segment on its
// writer, not in the append that fills it (in a cell, raft's apply
// goroutine, which every send waits for, waited for the seal's four
// fsyncs: 31-167 ms per 10 s, BENCHMARKS.md, session 17). Held at each
// point of the seal: the appends go on, readers see them, and none of
// their records reaches the new file, which is zeros until the old one is
// synced; a Sync waits for the seal, without holding the appends; a kill
// -9 there, and a power cut that loses what the old file had not synced,
// leave a log that opens, a prefix of what was appended, and takes the
// rest again.
func TestDiskSealBehind(t *testing.T) {
	for _, at := range []int{sealBegun, sealSynced, sealHeader, sealRenamed} {
		t.Run(fmt.Sprint("at=", at), func(t *testing.T) {
			cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 64 << 10, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
			held, release := holdSeal(t, cfg.Dir, at)
			d, _ := diskLog(t, cfg)
			t.Cleanup(release)
			w := newWriter(61)
			all := w.fill(t, d, 50, 200)
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
			d.wmu.Lock()
			syncedN, syncedOff := len(all), int(d.fsize)
			d.wmu.Unlock()
			all = append(all, fillUntilSealed(t, d, w)...)
			j := waitHeld(t, held)
			sealed := int(j.x.last) // the messages of the old file

			// The appends go on, past WriteBehind many times over.
			all = append(all, w.fill(t, d, 300, 200)...)
			checkHolds(t, d, all)
			// The next file holds no record, and is named as a segment
			// only once the old one is synced and its header written.
			next, other := filepath.Join(cfg.Dir, nextName), filepath.Join(cfg.Dir, segName(j.x.last+1))
			if at == sealRenamed {
				next, other = other, next
			}
			data, err := os.ReadFile(next)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, segHeaderSize)
			if at >= sealHeader {
				want = j.header
			}
			if !bytes.Equal(data, want) {
				t.Fatalf("%s holds %d bytes while its seal is held (%d zeros), want %d, %s", filepath.Base(next), len(data), bytes.Count(data, []byte{0}), segHeaderSize, map[bool]string{true: "the header", false: "zeros"}[at >= sealHeader])
			}
			if _, err := os.Stat(other); err == nil {
				t.Fatalf("%s is there while the seal is held at %d", filepath.Base(other), at)
			}

			// A sync waits for the seal, and not under the writers' lock.
			synced := make(chan error, 1)
			go func() { synced <- d.Sync() }()
			for syncing := false; !syncing; runtime.Gosched() {
				d.smu.Lock()
				syncing = d.syncing
				d.smu.Unlock()
			}
			seq, ts := d.Tail()
			b := w.batch(1, 200, seq, ts)
			appended := make(chan error, 1)
			go func() { appended <- d.Append(b) }()
			select {
			case err := <-appended:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("an append waited 10 s for a sync waiting for the seal")
			}
			all = append(all, b...)
			select {
			case err := <-synced:
				t.Fatalf("Sync returned (%v) while the seal was held", err)
			default:
			}

			// A kill -9 now.
			killed := t.TempDir()
			copyDir(t, cfg.Dir, killed)
			kcfg := cfg
			kcfg.Dir = killed
			d2, rec := diskLog(t, kcfg)
			if seq, _ := d2.Tail(); int(seq) != sealed {
				t.Fatalf("killed with the seal held: tail %d, want the old file's %d (%+v)", seq, sealed, rec)
			}
			checkHolds(t, d2, all[:sealed])
			appendRest(t, kcfg, d2, all, sealed)

			// A power cut now: the old file's pages past its last sync
			// lost at random, before the seal's fsync.
			if at == sealBegun {
				cut := t.TempDir()
				copyDir(t, cfg.Dir, cut)
				old := filepath.Join(cut, segName(j.x.base))
				data, err := os.ReadFile(old)
				if err != nil {
					t.Fatal(err)
				}
				img, _ := powerCut(rand.New(rand.NewPCG(61, 1)), data, syncedOff)
				if err := os.WriteFile(old, img, 0o600); err != nil {
					t.Fatal(err)
				}
				ccfg := cfg
				ccfg.Dir = cut
				d3, rec, err := Open(ccfg)
				if err != nil {
					t.Fatalf("a power cut with the seal held: Open: %v", err)
				}
				seq, _ := d3.Tail()
				if int(seq) < syncedN || int(seq) >= sealed {
					t.Fatalf("a power cut with the seal held: tail %d, want %d to %d (%+v)", seq, syncedN, sealed-1, rec)
				}
				checkHolds(t, d3, all[:seq])
				appendRest(t, ccfg, d3, all, int(seq))
			}

			release()
			if err := <-synced; err != nil {
				t.Fatal(err)
			}
			all = append(all, w.fill(t, d, 300, 200)...)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d4, rec := diskLog(t, cfg)
			if rec.TornBytes != 0 || rec.IndexesRebuilt != 0 {
				t.Errorf("reopened: %+v, want nothing torn nor rebuilt", rec)
			}
			checkHolds(t, d4, all)
		})
	}
}

// TestDiskSealBehindFails: a seal on the writer whose fsync fails fails
// the log, as the inline seal did: the sync after it, and the appends,
// are refused with ErrFailed.
func TestDiskSealBehindFails(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 64 << 10, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	held, release := holdSeal(t, cfg.Dir, sealBegun)
	d, _ := diskLog(t, cfg)
	t.Cleanup(release)
	w := newWriter(62)
	fillUntilSealed(t, d, w)
	j := waitHeld(t, held)
	j.old.Close() // its fsync fails
	release()
	if err := d.Sync(); !errors.Is(err, ErrFailed) {
		t.Fatalf("sync after the seal's fsync failed: %v, want ErrFailed", err)
	}
	seq, ts := d.Tail()
	if err := d.Append(w.batch(1, 10, seq, ts)); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the seal's fsync failed: %v, want ErrFailed", err)
	}
}

// TestDiskSealBehindRetention: retention deletes no file whose seal is
// out. An age-out that empties the log while the seal is held leaves the
// file; deleted then, the seal wrote its index after it, beside no
// segment. Once the seal is done the next pass deletes both.
func TestDiskSealBehindRetention(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), Config: Config{MaxAge: time.Minute}, SegmentBytes: 64 << 10, WriteBehind: 8 << 10,
		Fsync: FsyncPolicy{Interval: time.Hour}}
	held, release := holdSeal(t, cfg.Dir, sealBegun)
	d, _ := diskLog(t, cfg)
	t.Cleanup(release)
	w := newWriter(63)
	fillUntilSealed(t, d, w) // stamped near 1970: all past the age limit
	j := waitHeld(t, held)
	d.Expire(time.Now())
	if _, err := os.Stat(filepath.Join(cfg.Dir, segName(j.x.base))); err != nil {
		t.Errorf("the file being sealed, after an age-out: %v, want it kept until its seal is done", err)
	}
	release()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Expire(time.Now())
	names, err := filepath.Glob(filepath.Join(cfg.Dir, "*.idx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range names {
		if _, err := os.Stat(strings.TrimSuffix(idx, ".idx") + ".seg"); err != nil {
			t.Errorf("%s left without its segment: %v", filepath.Base(idx), err)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, segName(j.x.base))); err == nil {
		t.Errorf("%s kept after its seal and an age-out, want it deleted", segName(j.x.base))
	}
}

// TestDiskSealBehindNextTaken: where the next file cannot be created
// under its name (a directory there; a named pipe alike), the segment is
// sealed inline, and the log goes on. Every seal was refused
// (ErrNotWritable), and with it every append once the segment was full.
func TestDiskSealBehindNextTaken(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), SegmentBytes: 16 << 10, WriteBehind: 8 << 10, Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	if err := os.Mkdir(filepath.Join(cfg.Dir, nextName), 0o700); err != nil {
		t.Fatal(err)
	}
	w := newWriter(64)
	all := w.fill(t, d, 300, 200) // several segments
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, rec := diskLog(t, cfg)
	if rec.Segments < 3 {
		t.Fatalf("reopened %+v, want several segments", rec)
	}
	checkHolds(t, d2, all)
}

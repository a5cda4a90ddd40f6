package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestDiskFullUnderLoad lets four writers fill the disk under a log (a
// small tmpfs), appending through the daemon's path (Lookup, Stamp and
// Append under one lock, then Durable), under each policy, with segments
// small enough that the disk may run out as one is sealed or created. Four
// times it fills, and a piece of ballast is removed. Every append that
// fails says ErrNotWritable, never ErrFailed (which would refuse appends
// until a restart); with room again appends are stored, with no
// reopening; and a crash and reopening holds exactly
// the appends that returned nil (written to the OS; acknowledged once
// Durable returned too), in order, with nothing of the refused ones.
func TestDiskFullUnderLoad(t *testing.T) {
	for _, always := range []bool{false, true} {
		t.Run(fmt.Sprintf("always=%v", always), func(t *testing.T) {
			mnt, _ := testdisk.Small(t, "1m")
			const ballasts = 4
			for i := range ballasts {
				if err := os.WriteFile(filepath.Join(mnt, fmt.Sprint("ballast", i)), make([]byte, 160<<10), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := DiskConfig{Dir: filepath.Join(mnt, "log"), SegmentBytes: 16 << 10, Fsync: FsyncPolicy{Always: always, Interval: 50 * time.Millisecond}}
			d, _, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu          sync.Mutex // the sequencing step's
				seq         Sequencer
				appended    []Entry // in the file: written to the OS
				acked       int
				refused     int
				lastRefusal error
				n           int
				failures    = make(chan error, 1)
			)
			// send appends one batch as the group daemon does; it reports
			// whether the batch was acknowledged.
			send := func(k int) bool {
				mu.Lock()
				batch := make([]Entry, 1+k%4)
				for i := range batch {
					n++
					batch[i] = Entry{ID: id(n), From: sender(k), Body: fmt.Appendf(nil, "%0200d", n)}
				}
				acks := d.Lookup(batch, nil)
				seq.Last, seq.LastTime = d.Tail()
				m := seq.Stamp(time.Now().UnixNano(), batch, acks)
				err := d.Append(batch[:m])
				if err == nil {
					appended = append(appended, batch[:m]...)
				}
				mu.Unlock()
				if err == nil {
					err = d.Durable(batch[m-1].Seq)
				}
				switch {
				case err == nil:
					mu.Lock()
					acked += m
					mu.Unlock()
					return true
				case errors.Is(err, ErrNotWritable):
					mu.Lock()
					refused++
					lastRefusal = err
					mu.Unlock()
				default:
					select {
					case failures <- err:
					default:
					}
				}
				return false
			}
			refusals := func() int { mu.Lock(); defer mu.Unlock(); return refused }
			stored := func() int { mu.Lock(); defer mu.Unlock(); return acked }
			pace := time.NewTicker(5 * time.Millisecond) // the test's look at the writers
			defer pace.Stop()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for k := range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
							send(k)
						}
					}
				})
			}
			// The log fills the disk itself, at whatever point of a record,
			// a seal or a segment's creation it reaches the end; then a
			// piece of ballast goes, and it fills it again.
			for cycle := range ballasts {
				refusedAt := refusals()
				for refusals() == refusedAt {
					select {
					case err := <-failures:
						t.Fatalf("an append on the full disk: %v, want ErrNotWritable", err)
					case <-pace.C:
					}
				}
				storedAt := stored()
				if err := os.Remove(filepath.Join(mnt, fmt.Sprint("ballast", cycle))); err != nil {
					t.Fatal(err)
				}
				// Stored again once there is room, without reopening.
				deadline := time.After(30 * time.Second)
				for stored() == storedAt {
					select {
					case err := <-failures:
						t.Fatalf("cycle %d: an append with room again: %v, want success", cycle, err)
					case <-pace.C:
					case <-deadline:
						t.Fatalf("cycle %d: appends still refused 30 s after the disk had room again (%d refused, the last: %v)", cycle, refusals(), lastRefusal)
					}
				}
			}
			close(stop)
			wg.Wait()
			select {
			case err := <-failures:
				t.Fatalf("an append: %v, want success or ErrNotWritable", err)
			default:
			}
			tail, _ := d.Tail()
			if err := d.Durable(tail); err != nil {
				t.Fatal(err)
			}
			d.crash()
			d2, _, err := Open(cfg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer d2.Close()
			checkHolds(t, d2, appended)
			t.Logf("%d messages stored (%d acknowledged) and held, %d appends refused while the disk was full", len(appended), acked, refused)
		})
	}
}

// TestDiskFullAtSegmentCreation: the disk is full just as the log seals a
// segment and creates the next. The creation fails (ErrNotWritable), and
// nothing else changes; with room again the next append creates it, and
// the log reopens. The creation's failure to write the header went
// unseen: the append wrote its record behind 48 zero bytes, and the next
// start refused the group's whole history as corrupt.
func TestDiskFullAtSegmentCreation(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "log"), SegmentBytes: 1} // each append seals the segment before it
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(14)
	all := w.fill(t, d, 3, 10)
	free := fill()
	seq, ts := d.Tail()
	if err := d.Append(w.batch(1, 10, seq, ts)); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("append on the full disk, sealing a segment: %v, want ErrNotWritable", err)
	}
	free()
	all = append(all, w.fill(t, d, 3, 10)...)
	d.crash()
	d2, _, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer d2.Close()
	checkHolds(t, d2, all)
}

// TestDiskFullNewLog: a log opened for the first time on a full disk (a
// group added to a daemon whose disk is full) opens empty and refuses
// appends with ErrNotWritable, as a log that cannot be written does; once
// there is room its first append creates its files, under the epoch it
// opened with. Open failed ("no space left on device"), and the daemon
// served the group as one whose history could not be read, telling the
// operator to restore it from a backup, until it was restarted.
func TestDiskFullNewLog(t *testing.T) {
	for _, nested := range []bool{false, true} {
		mnt, fill := testdisk.Small(t, "256k")
		dir := filepath.Join(mnt, "log")
		if nested { // the directory itself cannot be made
			dir = filepath.Join(mnt, "data", "logs", "group")
		} else if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		free := fill()
		cfg := DiskConfig{Dir: dir}
		d, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("nested %v: Open on a full disk: %v, want an empty log that cannot be written yet", nested, err)
		}
		if !rec.Created || !errors.Is(rec.ReadOnly, ErrNotWritable) {
			t.Errorf("nested %v: Open on a full disk: %+v, want Created and ReadOnly", nested, rec)
		}
		epoch := d.Epoch()
		w := newWriter(17)
		if err := d.Append(w.batch(1, 10, 0, 0)); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("nested %v: append on the full disk: %v, want ErrNotWritable", nested, err)
		}
		free()
		var all []Entry
		deadline := time.After(30 * time.Second)
		pace := time.NewTicker(20 * time.Millisecond) // the log tries again at most once a second
		for len(all) == 0 {
			b := w.batch(1, 10, 0, 0)
			switch err := d.Append(b); {
			case err == nil:
				all = b
			case !errors.Is(err, ErrNotWritable):
				t.Fatalf("nested %v: append with room again: %v", nested, err)
			}
			select {
			case <-pace.C:
			case <-deadline:
				t.Fatalf("nested %v: appends still refused 30 s after the disk had room", nested)
			}
		}
		pace.Stop()
		all = append(all, w.fill(t, d, 5, 10)...)
		d.crash()
		d2, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("nested %v: reopen: %v", nested, err)
		}
		if d2.Epoch() != epoch || rec.Created || rec.NewEpoch != "" {
			t.Errorf("nested %v: reopened in epoch %d (%+v), want %d", nested, d2.Epoch(), rec, epoch)
		}
		checkHolds(t, d2, all)
		d2.Close()
	}
}

// TestDiskFullAtReset: a Reset on a full disk deletes the log's files but
// cannot begin the next (the memory log maps the segments it read at
// open, so deleting them frees nothing yet); it says ErrNotWritable, and
// the log is reset all the same, in memory as on disk: it holds nothing
// and stands after the Reset's seq; once there is room the next append
// begins the files there, and a Reset tried again resets. Appends opened
// the deleted segment again and failed until the daemon restarted (R,
// session 13); then the memory log kept, and served, the messages whose
// files were gone until a restart (this is the first check below).
func TestDiskFullAtReset(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "log")} // one segment: no index to delete
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(23)
	all := w.fill(t, d, 40, 100)
	d.crash()
	d, _, err = Open(cfg) // its segments mapped
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	checkHolds(t, d, all)
	free := fill()
	seq, ts := d.Tail()
	if err := d.Reset(seq+10, ts+10); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("reset on the full disk: %v, want ErrNotWritable", err)
	}
	// Memory and disk agree: the files are gone, and so are the messages.
	checkHolds(t, d, nil)
	if s, st := d.Tail(); s != seq+10 || st != ts+10 {
		t.Fatalf("tail %d at %d after the reset failed, want %d at %d", s, st, seq+10, ts+10)
	}
	crashed := t.TempDir() // the log as a crash now would leave it
	copyDir(t, cfg.Dir, crashed)
	if d2, _, err := Open(DiskConfig{Dir: crashed}); err != nil {
		t.Fatalf("open the files a failed reset left: %v", err)
	} else {
		checkHolds(t, d2, nil)
		d2.Close()
	}
	// Tried again further on, still full: the checkpoint says where the
	// files will begin, so that they are not taken for files after lost
	// ones.
	if err := d.Reset(seq+20, ts+20); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("reset again on the full disk: %v, want ErrNotWritable", err)
	}
	if cpt, err := readCheckpoint(cfg.Dir); err != nil || cpt.first != seq+21 {
		t.Errorf("checkpoint after the second failed reset: %+v (%v), want first %d", cpt, err, seq+21)
	}
	seq, ts = seq+20, ts+20
	if err := d.Append(w.batch(1, 10, seq, ts)); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("append on the full disk after the reset failed: %v, want ErrNotWritable", err)
	}
	free()
	// With room, an append after the reset's seq is taken (the log
	// tries again at most once a second).
	after := w.batch(2, 10, seq, ts)
	deadline := time.After(30 * time.Second)
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	for {
		err := d.Append(after)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNotWritable) {
			t.Fatalf("append with room again, after the reset failed: %v", err)
		}
		select {
		case <-pace.C:
		case <-deadline:
			t.Fatalf("appends still refused 30 s after the disk had room, after the reset failed: %v", err)
		}
	}
	checkHolds(t, d, after)
	d.crash()
	d, rec, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if rec.NewEpoch != "" || rec.Created || rec.MissingLast != 0 {
		t.Errorf("reopened as a new log, or one missing files: %+v", rec)
	}
	checkHolds(t, d, after)
	// And a reset now resets.
	seq, ts = d.Tail()
	if err := d.Reset(seq+10, ts+10); err != nil {
		t.Fatalf("reset with room: %v", err)
	}
	more := w.batch(3, 10, seq+10, ts+10)
	if err := d.Append(more); err != nil {
		t.Fatal(err)
	}
	d.crash()
	d, rec, err = Open(cfg)
	if err != nil {
		t.Fatalf("reopen after the reset: %v", err)
	}
	if rec.MissingLast != 0 {
		t.Errorf("reopened after a reset as a log missing files: %+v", rec)
	}
	checkHolds(t, d, more)
}

// TestDiskFullAgedOut: a disk full while the log's one segment holds
// nothing retention keeps (all of it aged out). Retention must begin the
// next segment before it deletes that one (its header says where the
// sequence stands), which needs space: the full disk stayed full for
// good, and every send was refused. It now begins it from the spare file
// each log keeps, deletes the old one, and, its space back (at once, or
// for a file read back at open, which is mapped, once its mapping has had
// its grace, when Expire unmaps it, or at the next append refused for
// want of room, which puts a copy in the mapping's place), appends are
// stored again, and the spare is made again; a restart finds the sequence
// going on from where it stood.
func TestDiskFullAgedOut(t *testing.T) {
	for _, c := range []struct{ mapped, grace bool }{{false, false}, {true, true}, {true, false}} {
		mnt, fill := testdisk.Small(t, "256k")
		cfg := DiskConfig{Dir: filepath.Join(mnt, "log"), Config: Config{MaxAge: time.Minute}}
		d, _, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w := newWriter(41)
		w.fill(t, d, 100, 1000) // one segment of ~50 KiB
		if c.mapped {
			d.crash()
			if d, _, err = Open(cfg); err != nil {
				t.Fatal(err)
			}
		}
		fill() // for good
		seq, ts := d.Tail()
		big := w.batch(4, 0, seq, ts)
		for i := range big {
			big[i].Body = bytes.Repeat([]byte{byte(i + 1)}, 4000) // new pages
		}
		if err := d.Append(big); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("%+v: append on the full disk: %v, want ErrNotWritable", c, err)
		}
		now := time.Unix(0, ts).Add(2 * time.Minute) // all of it aged out
		d.Expire(now)
		if st := d.Stats(); st.Messages != 0 {
			t.Fatalf("%+v: %d messages held after they aged out", c, st.Messages)
		}
		if c.grace {
			// The deleted file's space comes back once its mapping's
			// grace is over, at the next Expire.
			d.mem.mu.Lock()
			for i := range d.mem.retired {
				d.mem.retired[i].at = d.mem.retired[i].at.Add(-mapGrace - time.Second)
			}
			d.mem.mu.Unlock()
			d.Expire(now)
		}
		if err := d.Append(big); err != nil {
			t.Fatalf("%+v: append once everything aged out: %v, want the aged-out segment's space freed", c, err)
		}
		// And the spare is made again, for the next time: at once where
		// the file's space came back as it was deleted, else by an
		// age-out pass (which tries at most once a second).
		deadline := time.After(30 * time.Second)
		pace := time.NewTicker(20 * time.Millisecond)
		for {
			if _, err := os.Stat(filepath.Join(cfg.Dir, spareName)); err == nil {
				break
			}
			select {
			case <-pace.C:
				d.Expire(time.Unix(0, big[len(big)-1].Time)) // nothing more to age out
			case <-deadline:
				t.Fatalf("%+v: no spare 30 s after the space came back", c)
			}
		}
		pace.Stop()
		d.crash()
		d2, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("%+v: reopen: %v", c, err)
		}
		if rec.NewEpoch != "" || rec.MissingLast != 0 {
			t.Errorf("%+v: reopened %+v, want the history going on", c, rec)
		}
		checkHolds(t, d2, big)
		more := w.fill(t, d2, 1, 10)
		if more[0].Seq != seq+5 {
			t.Errorf("%+v: the next message after a restart is %d, want %d", c, more[0].Seq, seq+5)
		}
		d2.Close()
	}
}

// TestDiskSpareCrafted: a spare file found at open that is not one was
// taken for the spare. One longer than a header (a file left there by
// hand, or copied in with the directory from elsewhere): the segment made
// from it on a full disk kept its bytes past the header, after the
// records appended there, and a restart refused the group as corrupt. A
// link to a file elsewhere: the header and the records were written into
// that file. A spare that is not a regular file of a header's size is
// made again at open.
func TestDiskSpareCrafted(t *testing.T) {
	for _, kind := range []string{"long", "link"} {
		t.Run(kind, func(t *testing.T) { testDiskSpareCrafted(t, kind) })
	}
}

func testDiskSpareCrafted(t *testing.T, kind string) {
	mnt, fill := testdisk.Small(t, "256k")
	cfg := DiskConfig{Dir: filepath.Join(mnt, "log"), Config: Config{MaxAge: time.Minute}}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(43)
	w.fill(t, d, 100, 1000)
	d.Close()
	sp := filepath.Join(cfg.Dir, spareName)
	os.Remove(sp)
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	switch kind {
	case "long":
		err = os.WriteFile(sp, bytes.Repeat([]byte{0xaa}, 4096), 0o600)
	case "link":
		if err = os.WriteFile(elsewhere, make([]byte, segHeaderSize), 0o600); err == nil {
			err = os.Symlink(elsewhere, sp)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if d, _, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	fill() // for good
	seq, ts := d.Tail()
	d.Expire(time.Unix(0, ts).Add(2 * time.Minute)) // all of it aged out: the next segment from the spare
	// The space of the file read back comes back once its mapping's grace
	// is over, at the next Expire.
	d.mem.mu.Lock()
	for i := range d.mem.retired {
		d.mem.retired[i].at = d.mem.retired[i].at.Add(-mapGrace - time.Second)
	}
	d.mem.mu.Unlock()
	d.Expire(time.Unix(0, ts).Add(2 * time.Minute))
	more := w.batch(3, 100, seq, ts+int64(2*time.Minute))
	if err := d.Append(more); err != nil {
		t.Fatalf("append once everything aged out: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, rec, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen after a segment was made from the spare: %v", err)
	}
	defer d.Close()
	if rec.TornBytes != 0 {
		t.Errorf("reopened with %d bytes cut from %s, want none", rec.TornBytes, rec.TornFile)
	}
	checkHolds(t, d, more)
	if kind == "link" {
		if b, err := os.ReadFile(elsewhere); err != nil || !bytes.Equal(b, make([]byte, segHeaderSize)) {
			t.Errorf("the file the spare linked to holds %d bytes (%v), want its %d zeros untouched", len(b), err, segHeaderSize)
		}
	}
}

// TestDiskFullRetentionMakesRoom: a disk full while the log stands at its
// count limit, so that retention, with the next message stored, deletes
// the oldest file. With count or byte limits only nothing evicts but an
// append, and the full disk refused every append: it stayed full for
// good. Now the log deletes that file first and stores the message in
// its room, and goes on storing on the full disk, three times its limit
// over, each file retention drops making room for the next; the same
// once the log is read back at a restart, its files mapped (their space
// comes back only once unmapped: the log puts a copy in the mapping's
// place, and a body read before reads the same after). A crash and
// reopening hold exactly what retention kept. Below its limit, where
// retention would drop nothing, the append is refused and nothing is
// dropped.
func TestDiskFullRetentionMakesRoom(t *testing.T) {
	mnt, fill := testdisk.Small(t, "256k")
	const limit = 80 // files of 10 messages (an eighth), as the memory log's segments
	cfg := DiskConfig{Dir: filepath.Join(mnt, "log"), Config: Config{MaxMessages: limit}}
	d, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	var all []Entry
	add := func() error {
		seq, ts := d.Tail()
		n := len(all) + 1
		e := Entry{Seq: seq + 1, Time: ts + 1000, ID: id(n), From: sender(1), Body: bytes.Repeat([]byte{byte(n)}, 1000)}
		err := d.Append([]Entry{e})
		if err == nil {
			all = append(all, e)
		}
		return err
	}
	retained := func() []Entry { return all[len(all)-d.Stats().Messages:] }
	for range limit / 2 {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	free := fill()
	if err := add(); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("append on the full disk below the retention limit: %v, want ErrNotWritable", err)
	}
	checkHolds(t, d, all)
	free()
	for range limit / 2 {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	free = fill()
	for i := range 3 * limit {
		if err := add(); err != nil {
			t.Fatalf("append %d on the disk full at the retention limit: %v, want the oldest file deleted for it", i, err)
		}
	}
	kept := retained()
	checkHolds(t, d, kept)
	d.crash()
	// The newest file with a torn tail of two pages, cut at the reopening
	// after it was mapped: its mapping runs past the file's end, where
	// reading faults (SIGBUS). A copy of the mapping reads only what was
	// read back.
	free()
	newest := filepath.Join(cfg.Dir, segName(kept[len(kept)-1].Seq-limit/8+1))
	f, err := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 2*cutPage)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, rec, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if rec.TornFile != filepath.Base(newest) || rec.TornBytes != 2*cutPage {
		t.Fatalf("reopened %+v, want %s's torn tail of %d bytes cut", rec, filepath.Base(newest), 2*cutPage)
	}
	checkHolds(t, d, kept)
	fill()
	before, _, _ := d.After(0, limit, nil) // bodies in the files' mappings
	for i := range 3 * limit {
		if err := add(); err != nil {
			t.Fatalf("append %d on the disk full at the retention limit, the log read back: %v, want the oldest file detached and deleted for it", i, err)
		}
	}
	for i := range before {
		if g, w := before[i].Body, kept[i].Body; !bytes.Equal(g, w) {
			t.Fatalf("message %d, read before its file was detached and deleted, now reads %x..., want %x...", kept[i].Seq, g[:8], w[:8])
		}
	}
	kept = retained()
	checkHolds(t, d, kept)
	d.crash()
	if d, rec, err = Open(cfg); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if rec.MissingLast != 0 || rec.NewEpoch != "" {
		t.Errorf("reopened %+v, want the history going on", rec)
	}
	checkHolds(t, d, kept)
	// The operator's way out where the disk is too small for what
	// retention keeps: lower limits, and a restart. The files they no
	// longer keep go at the first age-out pass, and their space comes
	// back at once: nothing read them, and they are not left mapped.
	d.crash()
	d.mem.unmapAll() // as the process's end would
	cfg.MaxMessages = limit / 2
	if d, _, err = Open(cfg); err != nil {
		t.Fatalf("reopen with lower limits: %v", err)
	}
	kept = kept[limit/2:]
	checkHolds(t, d, kept)
	fill()
	d.Expire(time.Now())
	if err := os.WriteFile(filepath.Join(mnt, "probe"), make([]byte, 8*cutPage), 0o600); err != nil { // more than their indexes
		t.Fatalf("the files lower limits dropped at a restart, deleted: their space is not back: %v", err)
	}
	t.Logf("%d messages stored on the full disk, %d retained", len(all), len(kept))
}

// TestDiskFullMidRecord: the disk fills in the middle of a record (one
// larger than the room left: the kernel writes what fits, then refuses the
// rest). The append is refused with ErrNotWritable and the part written is
// cut back: the file ends where it did, so a smaller record that fits is
// written right after the last whole one, and a restart (a crash, no
// sync) reads back exactly the messages acknowledged, nothing torn
// before them.
func TestDiskFullMidRecord(t *testing.T) {
	mnt, fill := testdisk.Small(t, "1m")
	for _, policy := range []FsyncPolicy{{Always: true}, {Interval: time.Hour}} {
		t.Run(policy.String(), func(t *testing.T) {
			cfg := DiskConfig{Dir: filepath.Join(mnt, policy.String()), Fsync: policy, Reserve: -1}
			d, _, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			w := newWriter(21)
			all := w.fill(t, d, 20, 100)
			seg := filepath.Join(cfg.Dir, segName(1))
			free := fill()
			defer free()
			// The ballast's last pages, freed: room for part of a record.
			st, err := os.Stat(filepath.Join(mnt, "ballast"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(mnt, "ballast"), st.Size()-3*cutPage); err != nil {
				t.Fatal(err)
			}
			before, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			seq, ts := d.Tail()
			big := w.batch(1, 0, seq, ts)
			big[0].Body = bytes.Repeat([]byte{0xa5}, 64*cutPage)
			if err := d.Append(big); !errors.Is(err, ErrNotWritable) {
				t.Fatalf("a record larger than the room left: %v, want ErrNotWritable", err)
			}
			after, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			if after.Size() != before.Size() {
				t.Fatalf("the segment is %d bytes after the refused record, was %d: its part written was not cut back", after.Size(), before.Size())
			}
			small := w.batch(2, 100, seq, ts)
			if err := d.Append(small); err != nil {
				t.Fatalf("a record that fits, after: %v", err)
			}
			if err := d.Durable(small[1].Seq); err != nil {
				t.Fatal(err)
			}
			all = append(all, small...)
			checkHolds(t, d, all)
			d.crash()
			d2, rec, err := Open(cfg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer d2.Close()
			if rec.TornBytes != 0 {
				t.Errorf("reopened with %d bytes torn from %s: the refused record's part was left", rec.TornBytes, rec.TornFile)
			}
			checkHolds(t, d2, all)
		})
	}
}

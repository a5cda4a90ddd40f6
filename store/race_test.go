package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// raceBody is a body whose contents the reader can check: the ID, then
// bytes derived from it, of a length derived from it.
func raceBody(id [16]byte) []byte {
	n := binary.LittleEndian.Uint32(id[:4])
	b := make([]byte, 16+int(n%200))
	copy(b, id[:])
	for i := 16; i < len(b); i++ {
		b[i] = byte(n) + byte(i)
	}
	return b
}

// checkRun reports whether msgs is a gapless run, strictly ordered in seq and
// time, with intact bodies, that starts right after from (or at first, if
// messages were evicted).
func checkRun(msgs []Message, from uint64, cur Cursor) error {
	for i, m := range msgs {
		want := from + 1
		if i > 0 {
			want = msgs[i-1].Seq + 1
			if m.Time <= msgs[i-1].Time {
				return fmt.Errorf("seq %d time %d not after %d", m.Seq, m.Time, msgs[i-1].Time)
			}
		} else if want < cur.First {
			want = cur.First
		}
		if m.Seq != want {
			return fmt.Errorf("message %d has seq %d, want %d (cursor %+v)", i, m.Seq, want, cur)
		}
		if !bytes.Equal(m.Body, raceBody(m.ID)) {
			return fmt.Errorf("seq %d: body corrupted", m.Seq)
		}
		if *m.From != sender(int(m.ID[4])) {
			return fmt.Errorf("seq %d: from %+v, want %+v", m.Seq, m.From, sender(int(m.ID[4])))
		}
	}
	if len(msgs) > 0 && cur.Next != msgs[len(msgs)-1].Seq {
		return fmt.Errorf("cursor Next %d, last returned %d", cur.Next, msgs[len(msgs)-1].Seq)
	}
	if cur.Next > cur.Last || (cur.First > cur.Last+1) {
		return fmt.Errorf("cursor inconsistent: %+v", cur)
	}
	return nil
}

// TestConcurrent runs writers, After and Since readers and a watcher at once
// under eviction; run it with -race.
func TestConcurrent(t *testing.T) {
	log, err := New(Config{MaxMessages: 4000, SegmentSize: 64, DedupWindow: 500})
	if err != nil {
		t.Fatal(err)
	}
	l := &testLog{Log: log}
	const writers, readers, batches = 4, 4, 300
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		nextID  atomic.Uint32
		retries atomic.Uint64
		failure = make(chan error, writers+readers+1)
	)
	fail := func(err error) {
		select {
		case failure <- err:
		default:
		}
	}
	var writing sync.WaitGroup
	for w := range writers {
		writing.Add(1)
		wg.Go(func() {
			defer writing.Done()
			var acks []Ack
			batch := make([]Entry, 0, 16)
			var prev [16]byte
			for b := range batches {
				batch = batch[:0]
				for range 1 + b%16 {
					var id [16]byte
					binary.LittleEndian.PutUint32(id[:], nextID.Add(1))
					id[4] = byte(w)
					batch = append(batch, Entry{ID: id, From: sender(w), Body: raceBody(id)})
				}
				if b%5 == 0 && b > 0 {
					batch = append(batch, Entry{ID: prev, From: sender(w), Body: raceBody(prev)}) // a retry
					retries.Add(1)
				}
				prev = batch[0].ID
				var err error
				if acks, err = l.appendTo(acks[:0], batch); err != nil {
					fail(err)
					return
				}
				for i := 1; i < len(acks); i++ {
					if !acks[i].Duplicate && !acks[i-1].Duplicate &&
						(acks[i].Seq != acks[i-1].Seq+1 || acks[i].Time <= acks[i-1].Time) {
						fail(fmt.Errorf("batch not contiguous: %v", acks))
						return
					}
				}
			}
		})
	}
	for r := range readers {
		wg.Go(func() {
			var dst []Message
			var pos uint64
			for !stop.Load() {
				var cur Cursor
				if r%2 == 0 {
					dst, cur, _ = l.After(pos, 1+r*50, dst[:0])
					if err := checkRun(dst, pos, cur); err != nil {
						fail(fmt.Errorf("After(%d): %w", pos, err))
						return
					}
					pos = cur.Next
				} else {
					st := l.Stats()
					dst, cur, _ = l.Since(0, 300, dst[:0])
					if err := checkRun(dst, 0, cur); err != nil {
						fail(fmt.Errorf("Since: %w", err))
						return
					}
					if cur.Last < st.Last {
						fail(fmt.Errorf("Since saw Last %d before Stats' %d", cur.Last, st.Last))
						return
					}
				}
			}
		})
	}
	// A watcher follows the log with Changed and After until writers stop.
	wg.Go(func() {
		var pos uint64
		var dst []Message
		for {
			ch := l.Changed()
			var cur Cursor
			dst, cur, _ = l.After(pos, 1000, dst[:0])
			if err := checkRun(dst, pos, cur); err != nil {
				fail(fmt.Errorf("watcher: %w", err))
				return
			}
			pos = cur.Next
			if cur.More {
				continue
			}
			if stop.Load() && pos == cur.Last {
				return
			}
			<-ch
		}
	})
	writing.Wait()
	stop.Store(true)
	l.append([]Entry{{ID: [16]byte{0xff}, From: sender(0), Body: raceBody([16]byte{0xff})}}) // wake the watcher
	wg.Wait()
	close(failure)
	for err := range failure {
		t.Error(err)
	}
	st := l.Stats()
	// Retries are stored again once they leave the dedup window.
	want := uint64(nextID.Load()) + 1 + retries.Load() - uint64(l.dups)
	if st.Messages > 4000 || st.Last != want {
		t.Errorf("Stats() = %+v, want ≤ 4000 messages and Last %d", st, want)
	}
}

package store

import "testing"

// TestPrefaultAhead: once the appends are past half of what is resident
// of a segment's slab, the next chunk is made resident on the log's own
// goroutine, ahead of the writes, and the appends go on while it works
// (in a cell they are raft's apply, which every send waits for); Close
// waits for it. Before, the writer made each chunk resident itself, when
// its writes reached it.
func TestPrefaultAhead(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan []byte, 1), make(chan struct{})
	l.ahead.fault = func(b []byte) {
		entered <- b
		<-release
	}
	w := newWriter(31)
	var all []Entry
	for len(entered) == 0 {
		if len(all) > 20000 {
			t.Fatal("20,000 messages appended and nothing made resident ahead of them")
		}
		all = append(all, w.fill(t, l, 1, 1000)...)
	}
	if b := <-entered; len(b) == 0 {
		t.Fatal("made resident ahead: an empty range")
	}
	// The appends go on while it works (up to the range it works on).
	more := w.fill(t, l, 100, 1000)
	all = append(all, more...)
	checkHolds(t, l, all)
	close(release)
	l.Close()
	if l.ahead.busy.Load() {
		t.Fatal("Close returned while the prefaulter was at work")
	}
}

// TestPrefaultNoneAfterClose: a memory log's Close waits for the
// prefaulter, and no Append after it (or racing it) starts the goroutine
// again: before, one would, unwaited for, its WaitGroup's Add racing
// Close's Wait.
func TestPrefaultNoneAfterClose(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan []byte, 100)
	l.ahead.fault = func(b []byte) { started <- b }
	l.Close()
	w := newWriter(32)
	w.fill(t, l, 5000, 1000) // past several chunks: each would start it
	l.ahead.wg.Wait()
	if n := len(started); n != 0 {
		t.Fatalf("the prefaulter started %d times after Close", n)
	}
}

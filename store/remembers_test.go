package store

import "testing"

// TestRemembers: Remembers says whether Lookup finds the ID of every
// message stored after a sequence number, and is checked against Lookup
// itself: the window of the last DedupWindow messages, and after a Reset
// nothing before the reset.
func TestRemembers(t *testing.T) {
	const window = 8
	l, err := New(Config{DedupWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	var ids [][16]byte
	appendN := func(n int) {
		t.Helper()
		last, at := l.Tail()
		batch := make([]Entry, n)
		for i := range batch {
			var id [16]byte
			id[0], id[1] = byte(len(ids)), 1
			ids = append(ids, id)
			batch[i] = Entry{ID: id, Seq: last + uint64(i) + 1, Time: at + int64(i) + 1}
		}
		if err := l.Append(batch); err != nil {
			t.Fatal(err)
		}
	}
	// found reports whether Lookup finds every ID stored after after.
	found := func(after uint64) bool {
		last, _ := l.Tail()
		for seq := after + 1; seq <= last; seq++ {
			if acks := l.Lookup([]Entry{{ID: ids[seq-1]}}, nil); !acks[0].Duplicate {
				return false
			}
		}
		return true
	}
	check := func(what string, after uint64, want bool) {
		t.Helper()
		if got := l.Remembers(after); got != want {
			t.Errorf("%s: Remembers(%d) = %v, want %v", what, after, got, want)
		}
		if want && !found(after) {
			t.Errorf("%s: Remembers(%d), but Lookup misses an ID stored after it", what, after)
		}
	}
	check("empty", 0, true)
	appendN(5)
	check("within the window", 0, true)
	check("within the window", 3, true)
	check("past the tail", 9, true)
	appendN(7) // 1..12: the window holds 5..12
	check("the window's first", 4, true)
	check("one the window forgot", 3, false)
	check("the tail", 12, true)
	if found(3) {
		t.Fatal("Lookup finds seq 4's ID, past the window")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.Reset(20, 100))
	ids = append(ids, make([][16]byte, 8)...) // 13..20: never stored here
	check("before a reset", 12, false)
	check("the reset point", 20, true)
	appendN(2)
	check("after a reset", 20, true)
	check("across a reset", 19, false)
	check("before a reset, stored after it", 12, false)
}

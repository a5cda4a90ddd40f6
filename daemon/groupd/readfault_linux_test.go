package groupd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestFetchWatchReadFault: a daemon's fetch and watch read a group's
// history, read back at start, from its segment files, mapped; a page the
// disk can no longer read (here the files cut to nothing under their
// mappings, which the kernel answers as it answers an I/O error) faults as
// the bodies are encoded. That was SIGBUS, the whole daemon gone; it is
// each call's internal error, on its own goroutine, and the daemon serves
// on. (The readers of mapped bodies are these two and a cell's catch-up
// served, TestCatchUpServedReadFault.)
func TestFetchWatchReadFault(t *testing.T) {
	dir := t.TempDir()
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir})
	alice := joined(t, d1, "alice")
	for range 5 {
		_, err := alice.send(gid(d1), outgoing("a", "b"))
		must(t, err)
	}
	stop1()
	d2, _ := startGroupDaemon(t, Config{StateDir: dir}) // its history read back, mapped
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	segs, err := filepath.Glob(filepath.Join(dir, "logs", gid(d2).String(), "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment files: %v", err)
	}
	for _, s := range segs {
		must(t, os.Truncate(s, 0))
	}

	_, _, err = a2.fetch(wire.Fetch{Group: gid(d2)})
	wantCode(t, err, wire.CodeInternal)
	fs := a2.do(wire.OpWatch, wire.Watch{Group: gid(d2)})
	if n := len(fs); n == 0 || fs[n-1].kind != wire.KindError {
		t.Fatalf("a watch whose bodies fault: %d frames, the last not an error", n)
	}
	wantCode(t, fs[len(fs)-1].err, wire.CodeInternal)
	if in := a2.info(gid(d2)); in.Last != 10 {
		t.Fatalf("the daemon after the faults: info says last %d, want 10", in.Last)
	}
}

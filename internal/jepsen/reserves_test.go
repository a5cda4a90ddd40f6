//go:build linux

package jepsen

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestSpendingReservesLeavesNone: the full disk spendingReserves makes
// leaves no group log a reserve to write into. A log makes its reserve
// whole again, at its once-a-second look, where the disk has twice the
// room it lacks free (store/reserve.go, fillReserve); the reserves were
// all removed before their room was filled, so a log looking in between
// found two reserves' room free and took its own back, and the full disk
// fault left it a megabyte to write into (at a loaded workload's rate,
// over a minute of sends stored: a leader whose writes did not fail
// within the fault's wait). Here the logs' look comes at its worst, just
// before each fill, played by the rule store/reserve.go keeps.
func TestSpendingReservesLeavesNone(t *testing.T) {
	logs := t.TempDir()
	fill := testdisk.SmallAt(t, logs, "16m")
	const reserve = 1 << 20 // store.DefaultReserve
	dirs := []string{"a", "b", "c"}
	remake := func(dir string) {
		path := filepath.Join(logs, dir, "reserve")
		if st, err := os.Stat(path); err == nil && st.Size() >= reserve {
			return
		}
		var fs syscall.Statfs_t
		if err := syscall.Statfs(logs, &fs); err != nil {
			t.Fatal(err)
		}
		if int64(fs.Bavail)*fs.Bsize < 2*reserve {
			return // no room to spare
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, reserve); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(logs, d), 0o700); err != nil {
			t.Fatal(err)
		}
		remake(d)
	}
	fills := 0
	looking := func() (free func()) {
		if fills++; fills > 1 {
			// The disk was full, and something of it was freed since:
			// each log looks at its reserve before the room is taken.
			for _, d := range dirs {
				remake(d)
			}
		}
		return fill()
	}
	free := spendingReserves(t, looking, logs)()
	defer free()
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(logs, d, "reserve")); err == nil && st.Size() > 0 {
			t.Errorf("log %s has a reserve of %d bytes on the disk made full (%d fills)", d, st.Size(), fills)
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(logs, &fs); err != nil {
		t.Fatal(err)
	}
	if left := int64(fs.Bavail) * fs.Bsize; left > 0 {
		t.Errorf("%d bytes free on the disk made full", left)
	}
}

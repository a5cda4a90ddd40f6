//go:build linux

package jepsen

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// diskUse is what a member's state disk holds at a round's start, in
// bytes: the disk's use as a whole (statfs), and the parts of it in
// raft's log and raft's snapshots; and the use of its group logs' disk.
type diskUse struct {
	used, raftLog, snapshots int64
	size                     int64 // the disk's size
	logs                     int64
}

// diskUseOf measures the state disk of a member whose state directory
// is dir (a tmpfs of its own, newCell; its group logs on another).
func diskUseOf(dir string) (diskUse, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return diskUse{}, err
	}
	u := diskUse{
		used: int64(fs.Blocks-fs.Bfree) * fs.Bsize,
		size: int64(fs.Blocks) * fs.Bsize,
	}
	var logs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(dir, "logs"), &logs); err != nil {
		return diskUse{}, err
	}
	u.logs = int64(logs.Blocks-logs.Bfree) * logs.Bsize
	u.raftLog = treeBytes(filepath.Join(dir, "cell", "raftlog"))
	u.snapshots = treeBytes(filepath.Join(dir, "cell", "snapshots"))
	return u, nil
}

// treeBytes is the bytes the files under dir take on their disk (blocks,
// as the disk counts them), 0 for none.
func treeBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a file removed while walked: no longer there
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// fullestBefore is the most of a member's state disk that may be in use
// at a round's start (diskUses.measure).
const fullestBefore = 0.9

// diskUses records each member's state disk round by round.
type diskUses struct {
	rounds []string // each round's line
	// worst is the most a member's state disk held at a round's start,
	// of its size, and where.
	worst     float64
	worstWhen string
}

// mib says n bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// measure records the state disks of the members at round's start.
func (d *diskUses) measure(t *testing.T, round int, nodes []*cellNode) {
	t.Helper()
	var parts []string
	for _, cn := range nodes {
		u, err := diskUseOf(cn.dir)
		if err != nil {
			t.Fatalf("measure %s's state disk: %v", cn.name, err)
		}
		parts = append(parts, fmt.Sprintf("%s %s (raft log %s, snapshots %s; group logs' disk %s)",
			cn.name, mib(u.used), mib(u.raftLog), mib(u.snapshots), mib(u.logs)))
		f := float64(u.used) / float64(u.size)
		if f > d.worst {
			d.worst, d.worstWhen = f, fmt.Sprintf("%s at round %d: %s of %s MiB", cn.name, round, mib(u.used), mib(u.size))
		}
		if f > fullestBefore {
			// The round's disk fault would meet a disk the daemon
			// filled itself, and the cell's raft logs (the same on
			// every member) would fill together: a test sized wrong.
			t.Fatalf("%s's state disk holds %s of its %s MiB before round %d's fault (raft log %s MiB): it fills up on its own (newCell's stateDisk)",
				cn.name, mib(u.used), mib(u.size), round, mib(u.raftLog))
		}
	}
	d.rounds = append(d.rounds, fmt.Sprintf("round %d: %s", round, strings.Join(parts, ", ")))
}

// log logs each round's line, and the fullest disk.
func (d *diskUses) log(t *testing.T) {
	for _, s := range d.rounds {
		t.Logf("state disk use (MiB): %s", s)
	}
	t.Logf("the fullest state disk at a round's start: %.0f%%, %s", 100*d.worst, d.worstWhen)
}

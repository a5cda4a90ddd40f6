package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The reserve: room on the disk that a log keeps for itself. On a full
// disk, a log at its limits makes room from its own files (room.go:
// retention deletes its oldest, as it would once the record is stored),
// but a log below its limits has none to delete: on a disk shared with
// groups at theirs, it was refused whenever they had taken every page
// their own deletions freed, which they do at each append. So each log
// keeps a file of zeros, `reserve`, taken only from room the disk can
// spare (free space past it of at least its size again), and where the
// disk refuses a record that retention makes no room for, the log cuts
// the file by what the record needs, alone at the gate, and writes it
// there. Another writer of the process cannot take those pages first,
// and no message is dropped for them. The reserve is made whole again,
// at most once a second, once the disk has room to spare again.
//
// So a group below its limits takes up to its reserve of sends (1 MiB of
// records by default: about a thousand messages of 1 KB) on a disk that
// others keep full, and then is refused until there is room: the groups
// at their limits keep what retention keeps, which is never dropped for
// another group (STORAGE.md, "Durability").

// reserveName is the reserve file in a log's directory.
const reserveName = "reserve"

// DefaultReserve is a disk log's reserve (DiskConfig.Reserve) unless its
// segment size is smaller: then the reserve is a segment.
const DefaultReserve = 1 << 20

// reserveEvery is how often a log looks at its reserve, and makes it whole
// if it is short.
const reserveEvery = time.Second

// openReserve takes the reserve file as recovery finds it: its size
// counts, what is past the reserve's size is cut, and anything but a
// regular file under its name is removed. d is being opened, writable.
func (d *DiskLog) openReserve() {
	path := filepath.Join(d.dir, reserveName)
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return
	case !st.Mode().IsRegular():
		os.Remove(path)
	case st.Size() > d.resWant:
		if os.Truncate(path, d.resWant) == nil {
			d.resSize = d.resWant
		}
	default:
		d.resSize = st.Size()
	}
	d.fillReserve(true)
}

// fillReserve makes the reserve whole if the disk has room to spare: free
// space at least twice what it lacks. Unless now, it looks at most once a
// reserveEvery, at the file's size first: a reserve deleted or cut by
// another hand (an operator freeing room, a test's full disk taking it)
// was taken as whole until a refused record found it gone, too late, or
// until a restart, and was not made again when room came back. A write
// the disk refuses part of the way leaves the reserve as far as it got.
// d.wmu is held, or the log is being opened.
func (d *DiskLog) fillReserve(now bool) {
	if d.resWant == 0 || d.f == nil || (!now && time.Since(d.resTried) < reserveEvery) {
		return
	}
	d.resTried = time.Now()
	if !now {
		d.resSize = 0
		if st, err := os.Lstat(filepath.Join(d.dir, reserveName)); err == nil && st.Mode().IsRegular() {
			d.resSize = min(st.Size(), d.resWant)
		}
	}
	short := d.resWant - d.resSize
	if short <= 0 {
		return
	}
	if free, ok := freeBytes(d.dir); ok && free < 2*short {
		return
	}
	f, err := openFile(filepath.Join(d.dir, reserveName), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if allocate(f, d.resSize, short) == nil {
		d.resSize = d.resWant
		return
	}
	if st, err := f.Stat(); err == nil {
		d.resSize = min(st.Size(), d.resWant)
	}
}

// writeZeros writes n zero bytes to f from off: allocate, where the file
// system cannot allocate otherwise.
func writeZeros(f *os.File, off, n int64) error {
	zeros := make([]byte, min(n, 64<<10))
	for end := off + n; off < end; {
		k, err := f.WriteAt(zeros[:min(int64(len(zeros)), end-off)], off)
		off += int64(k)
		if err != nil {
			return err
		}
	}
	return nil
}

// takeReserve frees what a record of need bytes takes from the reserve,
// in whole pages, so that the record is written there; it reports false
// if the reserve is empty (or cannot be cut). d.wmu is held, and the gate
// alone (room.go), so that no other writer of the process takes the pages.
func (d *DiskLog) takeReserve(need int64) bool {
	if d.resSize == 0 {
		return false
	}
	n := max(0, d.resSize-(need+cutPage-1)/cutPage*cutPage)
	if os.Truncate(filepath.Join(d.dir, reserveName), n) != nil {
		d.resSize = 0 // gone, or not ours: made again when there is room
		return false
	}
	d.resSize = n
	if reserveTestCut != nil {
		reserveTestCut(need)
	}
	return true
}

// reserveTestCut, a test hook, runs at each cut of a reserve.
var reserveTestCut func(need int64)

package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDiskReserveRemade: a reserve deleted, or cut, by another hand (an
// operator freeing room; jepsen's full-disk fault takes the reserves) is
// made whole again at the log's next look (an append or an age-out pass,
// at most once a second) where the disk has room. It was taken as whole
// until a record the disk refused found it gone, and made again only then
// or at a restart: meanwhile the log had no reserve.
func TestDiskReserveRemade(t *testing.T) {
	cfg := DiskConfig{Dir: t.TempDir(), Fsync: FsyncPolicy{Interval: time.Hour}}
	d, _ := diskLog(t, cfg)
	w := newWriter(81)
	w.fill(t, d, 5, 10)
	path := filepath.Join(cfg.Dir, reserveName)
	for _, tc := range []struct {
		name string
		take func() error
		look func()
	}{
		{"deleted, an append", func() error { return os.Remove(path) }, func() { w.fill(t, d, 1, 10) }},
		{"cut, an append", func() error { return os.Truncate(path, DefaultReserve/3) }, func() { w.fill(t, d, 1, 10) }},
		{"deleted, an age-out pass", func() error { return os.Remove(path) }, func() { d.Expire(time.Unix(0, 0)) }},
	} {
		if st, err := os.Stat(path); err != nil || st.Size() != DefaultReserve {
			t.Fatalf("%s: the reserve before: %v, want %d bytes", tc.name, err, DefaultReserve)
		}
		if err := tc.take(); err != nil {
			t.Fatal(err)
		}
		d.wmu.Lock()
		d.resTried = time.Time{} // the log's next look is now, not a second on
		d.wmu.Unlock()
		tc.look()
		if st, err := os.Stat(path); err != nil || st.Size() != DefaultReserve {
			t.Fatalf("%s: the reserve after the log's next look: %v, want it made again, %d bytes", tc.name, err, DefaultReserve)
		}
	}
}

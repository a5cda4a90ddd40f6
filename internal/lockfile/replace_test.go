package lockfile

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestReplaceSyncsInOrder: Replace syncs the new file's data before the
// rename makes it the file, and the directory after, so that a power cut
// leaves the old file or the new one whole, never an empty one (the
// known_registries and joined files were renamed unsynced until session
// 16: an empty known_registries after a crash trusted every registry
// again on first use). The test records each step through the seam.
func TestReplaceSyncsInOrder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "known_registries")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var events []string
	s := syncs{
		file: func(f *os.File) error {
			b, err := os.ReadFile(f.Name())
			if err != nil {
				return err
			}
			events = append(events, "sync file "+string(b))
			return f.Sync()
		},
		rename: func(from, to string) error {
			events = append(events, "rename to "+filepath.Base(to))
			return os.Rename(from, to)
		},
		dir: func(d string) error {
			events = append(events, "sync dir "+filepath.Base(d))
			return syncDir(d)
		},
	}
	if err := replace(path, []byte("new\n"), 0o600, s); err != nil {
		t.Fatal(err)
	}
	want := []string{"sync file new\n", "rename to known_registries", "sync dir " + filepath.Base(dir)}
	if !slices.Equal(events, want) {
		t.Errorf("steps %q, want %q", events, want)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new\n" {
		t.Errorf("file holds %q, %v; want new", b, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "known_registries.tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestReplaceWholeSyncsFile: ReplaceWhole (the list cache's) syncs the new
// file's data before the rename, and leaves the directory unsynced: the
// replace may be lost in a power cut, the file never torn. The cache was
// renamed unsynced until session 17. Its steps are recorded through the
// seam, each calling ReplaceWhole's own, which must be the file's Sync.
func TestReplaceWholeSyncsFile(t *testing.T) {
	if whole.file == nil || reflect.ValueOf(whole.file).Pointer() != reflect.ValueOf((*os.File).Sync).Pointer() || whole.dir != nil {
		t.Fatalf("ReplaceWhole's syncs: want the file's Sync, and no directory sync")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "listing.json")
	var events []string
	s := syncs{
		file: func(f *os.File) error {
			events = append(events, "sync file")
			return whole.file(f)
		},
		rename: func(from, to string) error {
			events = append(events, "rename to "+filepath.Base(to))
			return whole.rename(from, to)
		},
	}
	if err := replace(path, []byte("{}\n"), 0o600, s); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync file", "rename to listing.json"}; !slices.Equal(events, want) {
		t.Errorf("steps %q, want %q", events, want)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "{}\n" {
		t.Errorf("file holds %q, %v", b, err)
	}
}

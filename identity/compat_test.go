package identity

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/internal/testfixture"
)

// TestCompatOlderKeys: the key files older huddles wrote (testdata/compat:
// two users', a registry's, each group daemon's) load under today's code
// with the fingerprints those huddles had, and are left as they were.
func TestCompatOlderKeys(t *testing.T) {
	for _, kind := range []string{"daemon", "cell"} {
		for _, fx := range testfixture.Fixtures(t, kind) {
			t.Run(fx, func(t *testing.T) {
				dir := testfixture.Unpack(t, fx, kind+".tar.gz")
				groups := testfixture.Groups(t, fx)
				keys := map[string]string{ // key file: its fingerprint's text
					"alice-key.pem":       testfixture.Lines(t, fx, "alice.id")[0],
					"bob-key.pem":         testfixture.Lines(t, fx, "bob.id")[0],
					"registry/" + KeyFile: groups[0].ListedBy[0].String(),
				}
				if kind == "daemon" {
					keys["daemon/"+KeyFile] = groups[0].Fingerprint.String()
				} else {
					for i, p := range testfixture.Lines(t, fx, "peers") { // the members' --cell-peer values
						fp, _, _ := strings.Cut(p, "@")
						keys[fmt.Sprintf("m%d/%s", i+1, KeyFile)] = fp
					}
				}
				for file, want := range keys {
					checkOldKey(t, filepath.Join(dir, file), want)
				}
			})
		}
	}
}

// checkOldKey loads the key file at path from a directory of its own and
// fails t unless its fingerprint's text is want and the file is unchanged.
func checkOldKey(t *testing.T, path, want string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if got := id.Fingerprint().String(); got != want {
		t.Errorf("%s: fingerprint %s, the old huddle's %s", path, got, want)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, KeyFile)); !slices.Equal(after, data) {
		t.Errorf("%s: loading it rewrote it", path)
	}
}

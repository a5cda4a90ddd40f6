//go:build linux

package testbin

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// setsPdeathsig matches code that sets SysProcAttr's Pdeathsig.
var setsPdeathsig = regexp.MustCompile(`\bPdeathsig\s*[:=]`)

// TestPdeathsigOnlyThroughStart: no code of the module gives a child a
// parent-death signal of its own, which would follow the thread that
// forked it (TestStartOutlivesItsThread): tests start such children with
// Start. The one exception is loadgen, a tool of the huddle command, which
// may not import testbin; it starts daemons from no locked thread.
func TestPdeathsigOnlyThroughStart(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module's root is not %s: %v", root, err)
	}
	allowed := []string{"internal/testbin/start.go", "loadgen/proc_linux.go"}
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for line := range strings.Lines(string(b)) {
			code, _, _ := strings.Cut(line, "//")
			if setsPdeathsig.MatchString(code) && !slices.Contains(allowed, filepath.ToSlash(rel)) {
				found = append(found, rel+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Errorf("a parent-death signal set outside testbin.Start (start the child with testbin.Start):\n%s", strings.Join(found, "\n"))
	}
}

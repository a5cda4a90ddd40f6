// Package testbin builds the huddle binary for tests that run it as a
// process (the fault and Jepsen-style tests), once per test process, and
// removes it when the tests have run.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once   sync.Once
	binary string
	err    error
)

// Tags are the build tags of the binary Huddle builds: a test package sets
// them in its TestMain, before any test runs (internal/jepsen's
// huddle_testclock, which lets a test move a daemon's clock).
var Tags string

// Huddle returns the path of a huddle binary built from this module's
// sources, building it on the first call; a failed build fails t.
func Huddle(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, mkErr := os.MkdirTemp("", "huddle-test-")
		if mkErr != nil {
			err = mkErr
			return
		}
		binary = filepath.Join(dir, "huddle")
		// go test puts its own toolchain's bin first on the tests' PATH
		// (runtime.GOROOT is deprecated: where the test binary was built).
		gobin, lookErr := exec.LookPath("go")
		if lookErr != nil {
			err = lookErr
			return
		}
		out, buildErr := exec.Command(gobin, "build", "-tags", Tags, "-o", binary, "github.com/huddle-chat/huddle").CombinedOutput()
		if buildErr != nil {
			err = fmt.Errorf("go build: %v\n%s", buildErr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return binary
}

// Main is a testing.M's Run that removes the binary Huddle built once the
// tests have run, and ends the goroutine Start forks from: TestMain
// passes it on, e.g. to goleak.VerifyTestMain.
type Main struct{ M *testing.M }

// Run runs the tests, then ends Start's goroutine and removes the binary.
func (m Main) Run() int {
	code := m.M.Run()
	stopForker()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	return code
}

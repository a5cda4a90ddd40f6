//go:build linux

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testbin"
)

// orphanEnv marks the copy of this test binary TestProcsDieWithTest runs.
const orphanEnv = "HUDDLE_FAULTS_ORPHAN"

// TestProcsDieWithTest runs this test binary again, which starts a huddle
// process as these tests do (start) and is then killed with SIGKILL, its
// cleanups never run (go test's -timeout, the OOM killer, kill -9). The
// huddle process must die with it: a timed-out run of this package left
// its registry and daemon running half an hour later.
func TestProcsDieWithTest(t *testing.T) {
	if os.Getenv(orphanEnv) != "" {
		p := start(t, "registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
		p.line(t, listening)
		testbin.Orphaned(fmt.Sprintf("pid %d tmp %s", p.cmd.Process.Pid, filepath.Dir(t.TempDir())))
	}
	said := testbin.RunKilledCopy(t, "TestProcsDieWithTest", orphanEnv+"=1", binaryEnv+"="+huddle(t))
	var pid int
	var tmp string
	if _, err := fmt.Sscanf(said, "pid %d tmp %s", &pid, &tmp); err != nil || !strings.HasPrefix(tmp, os.TempDir()) {
		t.Fatalf("the killed test said %q: %v", said, err)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL) // if the check below failed
		os.RemoveAll(tmp)
	})
	running, err := testbin.AwaitExit(time.Now().Add(waitTimeout), pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) > 0 {
		t.Fatalf("huddle (pid %d) still runs %v after the test that started it was killed", pid, waitTimeout)
	}
}

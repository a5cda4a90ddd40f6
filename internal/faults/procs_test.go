//go:build linux

package faults

import (
	"bytes"
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
	deadline := time.Now().Add(waitTimeout)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("huddle (pid %d) still runs %v after the test that started it was killed", pid, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running reports whether process pid exists and is not a zombie (one
// that exited and that no one has waited for yet).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

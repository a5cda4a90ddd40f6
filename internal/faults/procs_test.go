//go:build linux

package faults

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
		fmt.Printf("orphan: pid %d tmp %s\n", p.cmd.Process.Pid, filepath.Dir(t.TempDir()))
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProcsDieWithTest$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), orphanEnv+"=1", binaryEnv+"="+huddle(t))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the test that starts huddle and is killed: %v, want killed by SIGKILL\n%s", err, out.String())
	}
	var pid int
	var tmp string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "orphan: "); ok {
			if _, err := fmt.Sscanf(rest, "pid %d tmp %s", &pid, &tmp); err != nil {
				t.Fatalf("%q: %v", rest, err)
			}
		}
	}
	if pid == 0 || !strings.HasPrefix(tmp, os.TempDir()) {
		t.Fatalf("the killed test did not say what it started:\n%s", out.String())
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

//go:build linux

package testbin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// orphanPrefix starts the one line a killed copy prints about what it
// started.
const orphanPrefix = "orphan: "

// RunKilledCopy runs this test binary again, for test alone and with env
// added, to check that what a test starts dies with it. The copy starts
// its processes as the test would and ends with Orphaned, so it dies of
// SIGKILL with its cleanups never run (go test's -timeout, the OOM killer,
// kill -9). RunKilledCopy fails t unless the copy died so and said what it
// started, and returns what it said.
func RunKilledCopy(t testing.TB, test string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the test that starts huddle and is killed: %v, want killed by SIGKILL\n%s", err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if said, ok := strings.CutPrefix(sc.Text(), orphanPrefix); ok {
			return said
		}
	}
	t.Fatalf("the killed test did not say what it started:\n%s", out.String())
	return ""
}

// Orphaned ends the copy RunKilledCopy runs: it prints what the copy
// started (said, for RunKilledCopy to return) and kills this process with
// SIGKILL. It does not return.
func Orphaned(said string) {
	fmt.Println(orphanPrefix + said)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal ends the process
}

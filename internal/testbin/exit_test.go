//go:build linux

package testbin

import (
	"os/exec"
	"slices"
	"testing"
	"time"
)

// TestAwaitExit: a process that runs past the deadline is returned as
// running; one that exited counts as exited before it is reaped (a zombie)
// and after (gone).
func TestAwaitExit(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	running, err := AwaitExit(time.Now().Add(100*time.Millisecond), pid)
	if err != nil || !slices.Equal(running, []int{pid}) {
		t.Fatalf("before the kill: running %v, %v; want [%d]", running, err, pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if running, err := AwaitExit(time.Now().Add(time.Minute), pid); err != nil || len(running) > 0 {
		t.Fatalf("killed, not reaped: running %v, %v; want none", running, err)
	}
	cmd.Wait()
	if running, err := AwaitExit(time.Now().Add(time.Minute), pid); err != nil || len(running) > 0 {
		t.Fatalf("reaped: running %v, %v; want none", running, err)
	}
}

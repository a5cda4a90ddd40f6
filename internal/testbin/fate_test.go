//go:build linux

package testbin

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestFate: an end is unseen unless the test sent an ending signal or
// said it expects the end before it came (a pause is no ending signal);
// Unseen names the process, how it ended and what the test sent; Ends
// notes each unseen end, and a nil Ends nothing.
func TestFate(t *testing.T) {
	end := func(f *Fate, sig syscall.Signal) (*exec.Cmd, bool) {
		cmd := exec.Command("sleep", "60")
		if err := Start(cmd); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(sig)
		cmd.Wait()
		return cmd, f.Ended(cmd.ProcessState)
	}
	var expected Fate
	expected.Expect()
	if _, unseen := end(&expected, syscall.SIGKILL); unseen {
		t.Errorf("an end the test expected is unseen: %s", &expected)
	}
	var killed Fate
	killed.Sent(syscall.SIGTERM, true)
	if _, unseen := end(&killed, syscall.SIGTERM); unseen || !strings.HasSuffix(killed.String(), " terminated") {
		t.Errorf("an end the test caused: unseen %v, %s", unseen, &killed)
	}
	var paused Fate
	if s := paused.String(); s != "running; signals the test sent: none" {
		t.Errorf("a running process: %q", s)
	}
	paused.Sent(syscall.SIGSTOP, false)
	cmd, unseen := end(&paused, syscall.SIGKILL)
	if !unseen {
		t.Fatalf("an end after a pause, by a signal the test did not send, is not unseen: %s", &paused)
	}
	what := paused.Unseen("d2", cmd, []string{"serve", "--listen", "x"})
	if !strings.HasPrefix(what, "d2: huddle serve ended ") || !strings.Contains(what, "(signal: killed); signals the test sent: ") ||
		!strings.Contains(what, " stopped (signal): the test did not end it") {
		t.Errorf("the unseen end: %q", what)
	}
	var none *Ends
	none.Note(what)
	if none.Err() != nil || none.Any() != nil {
		t.Errorf("a nil Ends noted an end")
	}
	e := NewEnds()
	if e.Err() != nil {
		t.Errorf("nothing ended: %v", e.Err())
	}
	e.Note(what)
	e.Note("d3: another")
	<-e.Any()
	if err := e.Err(); err == nil || !strings.Contains(err.Error(), what+"; d3: another") {
		t.Errorf("two ends noted: %v", err)
	}
}

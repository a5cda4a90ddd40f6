//go:build unix

package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Fate is what a test did to a process it started and how the process
// ended, so that an end the test did not cause (a crash, an exit of its
// own, a signal from elsewhere: the OOM killer, another process) is told
// from one it did, and reported when it happens rather than read as a
// liveness defect a minute later: a member of internal/jepsen's
// TestCellFaults died unseen in session 19 and the run failed on "no
// leader". The harnesses (internal/jepsen, internal/faults, e2e) keep one
// per process: the test calls Sent or Expect before it ends the process,
// the goroutine that waits for it calls Ended once cmd.Wait returns.
type Fate struct {
	mu       sync.Mutex
	signals  []string // sent by the test, in order
	expected bool     // the test ended the process, or said it would end
	exitedAt time.Time
	state    *os.ProcessState
}

// Sent records that the test sent the process sig; ending says the signal
// is meant to end it (SIGKILL, SIGTERM), not to pause it (SIGSTOP).
func (f *Fate) Sent(sig os.Signal, ending bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals = append(f.signals, fmt.Sprintf("%s %v", time.Now().UTC().Format("15:04:05.000"), sig))
	f.expected = f.expected || ending
}

// Expect says the process's end is the test's doing without a signal (it
// closed the process's input) or is what the test waits for (a daemon
// refusing its state directory): its end is not unseen. It must be called
// before the process can end, so, for a process meant to end by itself,
// before it starts.
func (f *Fate) Expect() {
	f.mu.Lock()
	f.expected = true
	f.mu.Unlock()
}

// Ended notes that the process ended as state says (cmd.ProcessState
// once cmd.Wait returned), and reports whether the test did not cause
// it (Sent with ending, or Expect, before).
func (f *Fate) Ended(state *os.ProcessState) (unseen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exitedAt, f.state = time.Now(), state
	return !f.expected
}

// String says whether the process runs, or when and how it ended, and
// which signals the test sent it.
func (f *Fate) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sent := "none"
	if len(f.signals) > 0 {
		sent = strings.Join(f.signals, ", ")
	}
	if f.state == nil {
		return "running; signals the test sent: " + sent
	}
	return fmt.Sprintf("ended %s (%v); signals the test sent: %s", f.exitedAt.UTC().Format("15:04:05.000"), f.state, sent)
}

// Unseen describes the unseen end of cmd, which Ended reported, as a
// harness reports it: name (the harness's for the process), huddle's
// verb (the first of args), how it ended and, if a signal ended it, what
// the kernel log says of it (the OOM killer names its victims there).
func (f *Fate) Unseen(name string, cmd *exec.Cmd, args []string) string {
	what := fmt.Sprintf("%s: huddle %s %s: the test did not end it", name, strings.Join(args[:min(1, len(args))], " "), f)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		what += kernelSays(cmd.Process.Pid)
	}
	return what
}

// kernelSays returns the kernel log's lines that name process pid as the
// OOM killer names its victims, as a clause to add to a report ("" if the
// log cannot be read).
func kernelSays(pid int) string {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		return ""
	}
	word := regexp.MustCompile(fmt.Sprintf(`(pid=|[Pp]rocess )%d\b`, pid))
	var said []string
	for line := range strings.Lines(string(out)) {
		if word.MatchString(line) {
			said = append(said, strings.TrimSpace(line))
		}
	}
	if len(said) == 0 {
		return " (the kernel log names it nowhere)"
	}
	return "; the kernel log says: " + strings.Join(said, "; ")
}

// Ends notes the processes of a test (or a lab of several) that ended
// unseen, in the order they ended, so that its waits fail at once on the
// first, naming it, rather than at their deadline. A nil *Ends notes
// nothing, and its Any never fires.
type Ends struct {
	mu    sync.Mutex
	what  []string
	first chan struct{} // closed at the first
}

// NewEnds returns an Ends with nothing noted.
func NewEnds() *Ends { return &Ends{first: make(chan struct{})} }

// Note notes an unseen end, as Fate.Unseen describes it.
func (e *Ends) Note(what string) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.what = append(e.what, what)
	if len(e.what) == 1 {
		close(e.first)
	}
}

// Any returns a channel closed once a process ended unseen.
func (e *Ends) Any() <-chan struct{} {
	if e == nil {
		return nil
	}
	return e.first
}

// Err returns nil while no process ended unseen, else an error naming
// each that did.
func (e *Ends) Err() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.what) == 0 {
		return nil
	}
	return fmt.Errorf("a process ended and the test did not end it: %s", strings.Join(e.what, "; "))
}

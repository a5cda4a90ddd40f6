//go:build linux

package jepsen

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/history"
)

// clockBackBy and clockAheadBy are how far a clock fault moves a member's
// wall clock. Back, far past any timestamp of the run. Ahead, by less:
// every leader after it stamps just after the latest stamp until the real
// time catches up with it, as the round waits for; ahead by more than the
// election after the kill and the second a leader's clock may be behind
// before it says so (cell/propose.go's clockBehind).
const (
	clockBackBy  = time.Hour
	clockAheadBy = 6 * time.Second
)

// setClock moves member n's wall clock by d from the real one (0: back to
// it), at once: the daemon reads its state directory's testclock file
// (cli/testclock_on.go, in the build this package runs) at most 10 ms
// after it changes.
func (n *cellNode) setClock(t *testing.T, d time.Duration) {
	t.Helper()
	path := filepath.Join(n.dir, "testclock")
	if d == 0 {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(path, []byte(d.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// clockBehindLine matches the line a leader logs when its clock is behind
// the group's latest timestamp (cell/propose.go), once per term.
var clockBehindLine = regexp.MustCompile(`msg="cell: this member's clock is behind the group's latest timestamp`)

// clockJump moves the leader's wall clock back (clock-back-leader, an
// hour) or ahead (clock-forward-leader, clockAheadBy) while it leads,
// under the workload, then SIGKILLs it: the next leader's clock is right,
// behind the stamps of the one before it, or ahead of them. The leader stamps every
// message; the checker proves the timestamps still strictly increase
// across the jump and the change of leader, as every replica holds them.
// Whichever leader finds its clock behind the group's latest stamp must
// say so in its log (the old one after the jump back, the next one after
// the jump ahead). The killed member is restarted with its clock jumped,
// then set right again once the sends go on; the round ends once the sends
// are stamped on time again.
func (c *cell) clockJump(t *testing.T, w *workload, h *history.History, kind string, leader *cellNode, term uint64) (string, uint64) {
	t.Helper()
	by := -clockBackBy
	if kind == "clock-forward-leader" {
		by = clockAheadBy
	}
	jumped, startTerm := time.Now(), term
	leader.setClock(t, by)
	h.Fault(jumped, kind, fmt.Sprintf("%s's clock moved %v while it leads", leader.name, by))
	// The leader stamps on its moved clock before it is killed: a message
	// ahead of it is acknowledged dated an hour ahead; one behind it, the
	// leader finds the group's latest stamp ahead of its clock, says so,
	// and stamps just after it.
	deadline := time.Now().Add(waitTimeout)
	for !stampedOn(h, jumped, by) {
		if time.Now().After(deadline) {
			t.Fatalf("%s, its clock moved %v, stamped nothing on it within %v", leader.name, by, waitTimeout)
		}
		<-time.After(20 * time.Millisecond) // polling a condition, with a deadline
	}
	w.waitProgress(t, leader.name+" stamped on its moved clock")
	leader.kill(syscall.SIGKILL)
	leader.up = false
	killed := time.Now()
	h.Fault(killed, kind+"-kill", leader.name+" killed, its clock moved")
	next, term := c.leader(t, term)
	w.waitProgress(t, next.name+" leads after "+leader.name+"'s clock moved")
	w.waitProgress(t, next.name+" leads after "+leader.name+"'s clock moved, again")
	// Said once a term: the old leader may have said it already in its
	// term (its clock moved back in an earlier round, and it led again at
	// once on its restart).
	warned, since := leader, jumped
	if by > 0 {
		warned = next
	} else if at, ok := leader.ledAt(startTerm); ok {
		since = at
	}
	said := "said its clock was behind"
	if len(warned.lines(clockBehindLine, 0, since)) == 0 {
		said = "did not say its clock was behind"
		t.Errorf("%s led with its clock behind the group's latest stamp (%s's moved %v) and did not say so", warned.name, leader.name, by)
	}
	leader.start()
	leader.up = true
	w.waitProgress(t, leader.name+" restarted with its clock moved")
	leader.setClock(t, 0)
	// Every clock right, and the real time past the latest stamp: the
	// sends are stamped on time again, within their attempts.
	restored := time.Now()
	for !stampedOnTime(h, restored) {
		if time.Since(restored) > waitTimeout {
			t.Fatalf("no send stamped within its attempt within %v of the clocks set right", waitTimeout)
		}
		<-time.After(20 * time.Millisecond) // polling a condition, with a deadline
	}
	onTime := time.Since(restored)
	return fmt.Sprintf("%s's clock moved %v while it led; killed %v later, %s led in term %d; %s %s; stamps on time again %v after the clocks were set right",
		leader.name, by, killed.Sub(jumped).Round(time.Millisecond), next.name, term, warned.name, said, onTime.Round(10*time.Millisecond)), term
}

// stampedOn reports whether leader, its clock moved by by at jumped, has
// stamped on it: an ack dated past half the move ahead, or, moved back,
// an ack dated well before its attempt began (stamped just after the
// group's latest stamp, which the clock no longer reaches).
func stampedOn(h *history.History, jumped time.Time, by time.Duration) bool {
	ahead := jumped.Add(by / 2).UnixNano()
	for _, s := range h.Sends() {
		switch {
		case !s.Acked:
		case by > 0 && s.Time > ahead:
			return true
		case by < 0 && s.Start.After(jumped.Add(time.Second)) && s.Time < s.Start.Add(-500*time.Millisecond).UnixNano():
			return true
		}
	}
	return false
}

// stampedOnTime reports whether a send started after since was stamped
// within its attempt (leaders' clocks right, and past the latest stamp).
func stampedOnTime(h *history.History, since time.Time) bool {
	for _, s := range h.Sends() {
		if s.Acked && s.Start.After(since.Add(20*time.Millisecond)) && s.Time >= s.Start.UnixNano() && s.Time <= s.End.UnixNano() {
			return true
		}
	}
	return false
}

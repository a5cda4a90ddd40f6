//go:build linux

package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestSendLinesNearlyFullDisk pipes 200 lines to huddle send while the
// disk of the group's log has room for some 40 of them, then, room made,
// sends the same input again with the run's ID. The daemon refuses a send
// it cannot store whole as unavailable: the CLI reported the whole batch
// unsent (the first 64 lines, none stored, though 40 fitted), and a re-run
// gave every line a new message ID, so the lines stored were stored twice.
// Now a refused send is split until one line alone is refused: the lines
// that fit are stored and reported acknowledged, and the next line alone
// does not fit. And the same input sent again with --id RUN_ID (the
// stopped event's run_id) gives each line its message ID of the first
// run: the lines stored come back as duplicates, and the group holds each
// line once.
func TestSendLinesNearlyFullDisk(t *testing.T) {
	t.Parallel()
	dir, fill := testdisk.Small(t, "2m")
	u := newTestUser(t, startUpWith(t, []string{"--data-dir", dir}, "lobby"))
	u.ok(t, "join", "lobby", "--as", "alice")
	u.ok(t, "send", "lobby", "before") // the log's files exist: what follows needs room for the lines alone
	free := fill()
	ballast := filepath.Join(dir, "ballast")
	st, err := os.Stat(ballast)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ballast, st.Size()-16<<10); err != nil { // room for ~40 lines of 410 bytes
		t.Fatal(err)
	}
	line := func(n int) string { return fmt.Sprintf("line %03d %s", n, strings.Repeat("x", 400)) }
	var in strings.Builder
	for n := 1; n <= 200; n++ {
		in.WriteString(line(n) + "\n")
	}

	code, out, errs := u.runInput(t, in.String(), "send", "lobby", "--json")
	outs := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var stopped stoppedJSON
	if err := json.Unmarshal([]byte(outs[len(outs)-1]), &stopped); err != nil || stopped.Event != "stopped" {
		t.Fatalf("send on a nearly full disk: exit %d, its last line %q (%v); want a stopped event\nstderr:\n%s", code, outs[len(outs)-1], err, errs)
	}
	first := stopped.FirstUnsent
	t.Logf("on the nearly full disk: %d lines acknowledged, line %d the first not sent", stopped.Acked, first)
	if code != ExitRefused || first < 2 || stopped.Acked != first-1 || len(outs) != first || stopped.RunID == "" {
		t.Fatalf("send on a nearly full disk: exit %d, stopped %+v after %d acks; want %d, lines 1 to first_unsent-1 acknowledged, a run_id\nstderr:\n%s",
			code, stopped, len(outs)-1, ExitRefused, errs)
	}
	if !strings.Contains(errs, "or send the same input again with --id "+stopped.RunID) {
		t.Errorf("stderr does not name the run's ID to send the input again with:\n%s", errs)
	}
	// Only what did not fit is unsent: the first line not sent does not
	// fit alone either.
	if c, _, e := u.run(t, "send", "lobby", line(first)); c != ExitRefused || !strings.Contains(e, "cannot store") {
		t.Errorf("line %d, the first reported not sent, sent alone: exit %d, %q; want it refused (it does not fit: the lines before it filled the disk)", first, c, e)
	}

	// Room made, the same input again under the run's ID: done, once.
	free()
	code, out, errs = u.runInput(t, in.String(), "send", "lobby", "--json", "--id", stopped.RunID)
	if code != ExitOK {
		t.Fatalf("the same input again with --id %s: exit %d\nstderr:\n%s", stopped.RunID, code, errs)
	}
	dups := 0
	for l := range strings.Lines(out) {
		var a ackJSON
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatal(err)
		}
		if a.Duplicate != (a.Line < first) {
			t.Errorf("line %d acknowledged with duplicate %v; want %v (lines before %d were stored by the first run)", a.Line, a.Duplicate, a.Line < first, first)
		}
		if a.Duplicate {
			dups++
		}
	}
	held := u.ok(t, "fetch", "lobby")
	for n := 1; n <= 200; n++ {
		if c := strings.Count(held, line(n)); c != 1 {
			t.Errorf("the group holds line %d %d times; want once", n, c)
		}
	}
	t.Logf("sent again: %d lines acknowledged as duplicates, every line held once", dups)
}

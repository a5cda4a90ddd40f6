package cli

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// TestSendLinesStoppedPartway pipes lines to huddle send and has the
// daemon refuse it partway (the user leaves the group after two lines are
// acknowledged, as a daemon whose disk filled refuses with unavailable).
// It said only why it stopped, so a script could not tell which lines
// were stored: running the input again stored them twice (each run gives
// its lines new IDs), and guessing lost lines. It says which lines were
// acknowledged and the first not sent, on stderr and, with --json, in a
// stopped event after the acks; the exit code is still the refusal's.
func TestSendLinesStoppedPartway(t *testing.T) {
	t.Parallel()
	registry := startUp(t, "lobby")
	for _, asJSON := range []bool{false, true} {
		u := newTestUser(t, registry)
		u.ok(t, "join", "lobby", "--as", "alice")
		args := []string{"send", "lobby"}
		if asJSON {
			args = append(args, "--json")
		}
		in, feed := io.Pipe()
		var out, errb syncBuffer
		env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
		e := Env{Stdin: in, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		done := make(chan int, 1)
		go func() { done <- Main(ctx, args, e) }()
		// Line 2 is blank, line 4 too large: neither is a message.
		if _, err := io.WriteString(feed, "one\n\nthree\n"+strings.Repeat("x", 70<<10)+"\nfive\n"); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(waitTimeout)
		for {
			more := out.written()
			if strings.Count(out.String(), "\n") >= 3 {
				break
			}
			select {
			case <-more:
			case <-deadline:
				t.Fatalf("no acks of lines 1, 3 and 5:\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
			}
		}
		u.ok(t, "leave", "lobby")
		if _, err := io.WriteString(feed, "six\nseven\n"); err != nil {
			t.Fatal(err)
		}
		feed.Close()
		var code int
		select {
		case code = <-done:
		case <-ctx.Done():
			t.Fatal("send did not end")
		}
		cancel()
		stderr := errb.String()
		if code != ExitRefused {
			t.Errorf("json %v: exit %d, want %d (refused)\nstderr:\n%s", asJSON, code, ExitRefused, stderr)
		}
		for _, want := range []string{"  3 lines acknowledged (lines 1, 3, 5)\n", "  not sent: line 6 and every line after it; to resume, send from there (tail -n +6 FILE"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("json %v: stderr does not say %q:\n%s", asJSON, want, stderr)
			}
		}
		if !asJSON {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		var stopped map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &stopped); err != nil {
			t.Fatalf("the last line of send --json: %v\n%s", err, out.String())
		}
		got, _ := json.Marshal(stopped)
		if want := `{"acked":3,"acked_lines":[[1,1],[3,3],[5,5]],"event":"stopped","first_unsent":6,"in_doubt":[]}`; string(got) != want {
			t.Errorf("send --json stopped with %s, want %s", got, want)
		}
		for _, l := range lines[:len(lines)-1] {
			if strings.Contains(l, `"event"`) {
				t.Errorf("an ack has an event: %s", l)
			}
		}
	}
}

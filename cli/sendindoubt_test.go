package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestExplainInDoubt: a send whose outcome is unknown (client.ErrInDoubt)
// exits 3 (130 if interrupted), whatever else its error says, and says so:
// exit 1 tells a script that nothing was stored. A send cut short whose
// redial met another key exited 1 as a key mismatch, one whose daemon
// closed the connection as it stopped, or whose retry was refused, as a
// refusal (until session 19).
func TestExplainInDoubt(t *testing.T) {
	mismatch := &identity.MismatchError{Want: wire.Fingerprint{1}, Got: wire.Fingerprint{2}}
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("send group lobby: %w: %w", client.ErrInDoubt, fmt.Errorf("%w: connection lost; connecting again: %w", client.ErrUnreachable, mismatch)), ExitUnreachable},
		{fmt.Errorf("send group lobby: %w: %w", client.ErrInDoubt, client.ErrShuttingDown), ExitUnreachable},
		{fmt.Errorf("%w: %w", client.ErrInDoubt, &wire.Error{Code: wire.CodeNotMember, Message: "send group lobby: not a member"}), ExitUnreachable},
		{fmt.Errorf("%w: %w", client.ErrInDoubt, &wire.Error{Code: wire.CodeUnavailable, Message: "no leader"}), ExitUnreachable},
		{fmt.Errorf("send group lobby: %w: %w", client.ErrInDoubt, context.Canceled), ExitInterrupted},
		{fmt.Errorf("send group lobby: %w: %w", client.ErrInDoubt, context.DeadlineExceeded), ExitUnreachable},
	} {
		msg, code := explain(c.err)
		if code != c.want {
			t.Errorf("explain(%v) exit code = %d, want %d", c.err, code, c.want)
		}
		if !strings.Contains(msg, "outcome unknown") {
			t.Errorf("explain(%v) = %q, which does not say the outcome is unknown", c.err, msg)
		}
		if refusal := groupAdvice(c.err, "lobby"); !errors.Is(refusal, client.ErrInDoubt) {
			t.Errorf("groupAdvice(%v) = %v: no longer in doubt", c.err, refusal)
		}
	}
}

// TestSendCutByShutdownInDoubt: a send the daemon took and left
// unanswered when it closed the connection as it stopped (code 0x2, its
// grace period over) may be stored: huddle send exits 3 and names the ID to
// retry with, on stderr and, with --json, on standard output (TEXT: an
// in_doubt event; lines: the stopped event's in_doubt). It exited 1, its
// line "not sent", and a script resending from there under new IDs
// stored it twice.
func TestSendCutByShutdownInDoubt(t *testing.T) {
	t.Parallel()
	for _, lines := range []bool{false, true} {
		taken, release := make(chan struct{}, 1), make(chan struct{})
		addr, srv := sendDaemonWith(t, server.Config{ShutdownTimeout: 100 * time.Millisecond}, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16}, func(req wire.Send) (wire.Sent, error) {
			taken <- struct{}{}
			<-release // past the grace period, until the connection is closed
			return wire.Sent{}, &wire.Error{Code: wire.CodeUnavailable, Message: "too late"}
		})
		args := []string{"send", "builds", "--json"}
		in := io.Reader(strings.NewReader(""))
		if lines {
			in = strings.NewReader("one\n")
		} else {
			args = append(args, "one")
		}
		var out, errb syncBuffer
		env := map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_REGISTRY": addr}
		e := Env{Stdin: in, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		done := make(chan int, 1)
		go func() { done <- Main(ctx, args, e) }()
		select {
		case <-taken:
		case code := <-done:
			t.Fatalf("lines %v: send ended (exit %d) before the daemon took it:\n%s", lines, code, errb.String())
		}
		closed := make(chan struct{})
		go func() { srv.Close(); close(closed) }()
		var code int
		select {
		case code = <-done:
		case <-ctx.Done():
			t.Fatal("send did not end")
		}
		close(release)
		<-closed
		stderr := errb.String()
		if code != ExitUnreachable {
			t.Errorf("lines %v: exit %d, want %d (outcome unknown)\nstderr:\n%s", lines, code, ExitUnreachable, stderr)
		}
		if !strings.Contains(stderr, "outcome unknown") || strings.Contains(stderr, "not sent: line 1") {
			t.Errorf("lines %v: stderr does not say the outcome is unknown, or says line 1 was not sent:\n%s", lines, stderr)
		}
		var last map[string]any
		outLines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if err := json.Unmarshal([]byte(outLines[len(outLines)-1]), &last); err != nil {
			t.Fatalf("lines %v: the last line of send --json: %v\n%s", lines, err, out.String())
		}
		if lines {
			doubt, _ := last["in_doubt"].([]any)
			if last["event"] != "stopped" || len(doubt) != 1 || last["first_unsent"] != float64(2) {
				t.Errorf("lines %v: send --json ended with %s, want stopped, line 1 in doubt, first_unsent 2", lines, outLines[len(outLines)-1])
			}
		} else if last["event"] != "in_doubt" || last["msg_id"] == nil {
			t.Errorf("lines %v: send --json ended with %s, want an in_doubt event with the msg_id", lines, outLines[len(outLines)-1])
		}
	}
}

// TestChatSendInDoubt: a line huddle chat sent that the daemon took and
// left unanswered as it stopped (code 0x2) may be stored: chat says its
// outcome is unknown (an in_doubt event, with --json) and keeps it, to send
// again under its ID. It said "not sent".
func TestChatSendInDoubt(t *testing.T) {
	t.Parallel()
	taken, release := make(chan struct{}, 1), make(chan struct{})
	addr, srv := sendDaemonWith(t, server.Config{ShutdownTimeout: 100 * time.Millisecond}, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16}, func(req wire.Send) (wire.Sent, error) {
		taken <- struct{}{}
		<-release // past the grace period, until the connection is closed
		return wire.Sent{}, &wire.Error{Code: wire.CodeUnavailable, Message: "too late"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out syncBuffer
	c := chatOn(t, ctx, addr, &out)
	c.json = true
	id := client.NewID()
	sent := make(chan struct{})
	go func() { c.send(ctx, []client.Outgoing{{ID: id, Body: []byte("one")}}); close(sent) }()
	<-taken
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	<-sent
	close(release)
	<-closed
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &ev); err != nil {
		t.Fatalf("chat --json after a send cut by the daemon's stop: %v\n%s", err, out.String())
	}
	if ev["event"] != "in_doubt" || ev["msg_id"] != id.String() || ev["kept"] != true {
		t.Errorf("chat --json after a send cut by the daemon's stop: %s, want an in_doubt event for %s, kept", out.String(), id)
	}
	if events, _ := chatEventKeys(t); !slices.Equal(objectKeys(t, strings.TrimSpace(out.String()), ""), events["in_doubt"]) {
		t.Errorf("chat --json in_doubt event %s: want its keys in README.md's order %v", out.String(), events["in_doubt"])
	}
	if len(c.unsent) != 1 || c.unsent[0].ID != id {
		t.Errorf("chat kept %v, want the line in doubt, under its ID", c.unsent)
	}
}

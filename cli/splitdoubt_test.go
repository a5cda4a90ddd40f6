package cli

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestSendLinesSplitKeepsDoubt: a send of lines refused unavailable
// without unchanged (the daemon's log could not make them durable: they
// may be stored) is split, half by half, as a refusal that may pass with
// fewer lines; when the smaller sends are then refused unchanged (the log,
// failed, stores nothing more), the lines of the first send are still in
// doubt: that a later request stored nothing says nothing of the first.
// huddle send said "not sent: line 2 and every line after it", exit 1, of
// lines its first send may have stored (session 19 until H's fix): a
// script resending from there under new IDs stored them twice.
func TestSendLinesSplitKeepsDoubt(t *testing.T) {
	t.Parallel()
	first := make(chan struct{})
	release := make(chan struct{})
	var sends atomic.Int64
	var doubted atomic.Int64 // how many lines the send in doubt carried
	addr := sendDaemon(t, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}, func(req wire.Send) (wire.Sent, error) {
		switch sends.Add(1) {
		case 1:
			close(first)
			<-release // line 1's ack waits until lines 2-4 are read
			return wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: time.Now().UnixNano()}}}, nil
		case 2:
			doubted.Store(int64(len(req.Messages)))
			return wire.Sent{}, &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000,
				Message: "the group's log could not make the messages durable; they may be stored: try again later with the same message IDs"}
		}
		return wire.Sent{}, &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Unchanged: true,
			Message: "the group's log cannot store messages now; nothing was stored: try again later"}
	})
	var out syncBuffer
	code, stderr := sendBehindLineOne(t, addr, &out, []string{"send", "builds", "--json"}, first, release)
	n := int(doubted.Load())
	if n < 2 {
		t.Fatalf("the send in doubt carried %d lines, want lines 2-4 together (split only splits more than one):\n%s", n, stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	if code != ExitUnreachable {
		t.Errorf("exit %d, want %d (outcome unknown)\nstderr:\n%s", code, ExitUnreachable, stderr)
	}
	if strings.Contains(stderr, "not sent: line 2 ") {
		t.Errorf("stderr says line 2 was not sent, though the send in doubt carried it:\n%s", stderr)
	}
	outLines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var stopped struct {
		Event       string `json:"event"`
		FirstUnsent int    `json:"first_unsent"`
		InDoubt     []struct {
			Line int `json:"line"`
		} `json:"in_doubt"`
	}
	if err := json.Unmarshal([]byte(outLines[len(outLines)-1]), &stopped); err != nil {
		t.Fatalf("the last line of send --json: %v\n%s", err, out.String())
	}
	var lines []int
	for _, d := range stopped.InDoubt {
		lines = append(lines, d.Line)
	}
	want := []int{}
	for l := 2; l < 2+n; l++ {
		want = append(want, l)
	}
	if stopped.Event != "stopped" || stopped.FirstUnsent != 2+n || len(lines) != n || (n > 0 && (lines[0] != 2 || lines[n-1] != 1+n)) {
		t.Errorf("send --json ended with %s: want stopped, lines %v in doubt, first_unsent %d\nstderr:\n%s", outLines[len(outLines)-1], want, 2+n, stderr)
	}
}

// TestSendWithIDRefusedSaysEarlierMayBeStored: huddle send --id ID TEXT
// refused (exit 1: this send stored nothing) may be the retry of a send in
// doubt under that ID, which the refusal does not settle: stderr says so.
// It said only the refusal, which read as "not stored", though the earlier
// send may have stored the message. Without --id (an ID of its own, never
// sent before) it says nothing more.
func TestSendWithIDRefusedSaysEarlierMayBeStored(t *testing.T) {
	t.Parallel()
	addr := sendDaemon(t, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}, func(req wire.Send) (wire.Sent, error) {
		return wire.Sent{}, &wire.Error{Code: wire.CodeUnavailable, RetryAfterMS: 1000, Unchanged: true,
			Message: "the group's log cannot store messages now; nothing was stored: try again later"}
	})
	u := &testUser{home: t.TempDir(), registry: addr}
	id := "0190d6a4-5b7e-7c3a-9f1e-2d4c6b8a0e12"
	code, _, stderr := u.runInput(t, "", "send", "builds", "--id", id, "hello")
	if code != ExitRefused || !strings.Contains(stderr, "a send under --id "+id+" before it") {
		t.Errorf("send --id refused: exit %d, want %d and a word on an earlier send under the ID:\n%s", code, ExitRefused, stderr)
	}
	code, _, stderr = u.runInput(t, "", "send", "builds", "hello")
	if code != ExitRefused || strings.Contains(stderr, "before it") {
		t.Errorf("send refused, its ID its own: exit %d, want %d and no word on an earlier send:\n%s", code, ExitRefused, stderr)
	}
}

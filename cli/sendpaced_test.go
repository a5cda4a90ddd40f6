package cli

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestSendLinesOneByOnePaced: a batch of lines refused as too large is
// sent again one line at a time, and those sends are paced as every
// other: a line refused as rate_limited (sent one by one, lines go out
// faster than a batch) is sent again after the wait the daemon names. It
// ended the run with the lines after it unsent.
func TestSendLinesOneByOnePaced(t *testing.T) {
	var singles, stored atomic.Int64
	addr := sendDaemon(t, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16, FetchPage: 100}, func(req wire.Send) (wire.Sent, error) {
		if len(req.Messages) > 1 {
			return wire.Sent{}, &wire.Error{Code: wire.CodeTooLarge, Message: "the send is too large"}
		}
		if singles.Add(1) == 2 {
			return wire.Sent{}, &wire.Error{Code: wire.CodeRateLimited, RetryAfterMS: 20, Message: "slow down"}
		}
		return wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: uint64(stored.Add(1)), Time: time.Now().UnixNano()}}}, nil
	})
	var out, errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_REGISTRY": addr}
	e := Env{Stdin: strings.NewReader("one\ntwo\nthree\n"), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if code := Main(ctx, []string{"send", "builds"}, e); code != ExitOK || stored.Load() != 3 {
		t.Fatalf("exit %d, %d lines stored; want 0 and 3\nstdout:\n%s\nstderr:\n%s", code, stored.Load(), out.String(), errb.String())
	}
}

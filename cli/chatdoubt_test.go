package cli

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/wire"
)

// TestChatDoubtNoticeSaysWhatIsTrue: a line whose first try was left in
// doubt (refused unavailable without unchanged: a write not made durable)
// stays in doubt whatever its retries are told. huddle chat's notice of a
// retry refused whole quoted the refusal ("nothing was stored") as the
// line's outcome, and a line in doubt it could not keep (a refusal a retry
// does not cure) named its ID but not how to settle it (until session 20).
// Now the first says the doubt is an earlier try's, and the second gives
// the command that sends it again under its ID.
func TestChatDoubtNoticeSaysWhatIsTrue(t *testing.T) {
	t.Parallel()
	refusals := []*wire.Error{
		{Code: wire.CodeUnavailable, Message: "send to builds: the write could not be made durable; retry with the same IDs"},
		{Code: wire.CodeUnavailable, Unchanged: true, Message: "send to builds: the group's log cannot store messages now; nothing was stored: try again later"},
		{Code: wire.CodeNotMember, Message: "send group builds: not a member"},
	}
	var tries atomic.Int32
	addr, _ := sendDaemonWith(t, server.Config{}, wire.Limits{MaxMessageBytes: 1024, MaxBatch: 16}, func(req wire.Send) (wire.Sent, error) {
		return wire.Sent{}, refusals[min(int(tries.Add(1))-1, len(refusals)-1)]
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out syncBuffer
	c := chatOn(t, ctx, addr, &out)
	id := client.NewID()
	// notice returns the last notice printed since the one before.
	seen := 0
	notice := func(what string) string {
		t.Helper()
		text := out.String()[seen:]
		seen += len(text)
		lines := strings.Split(strings.TrimSpace(text), "\n")
		last := lines[len(lines)-1]
		t.Logf("%s: %s", what, last)
		return last
	}

	c.send(ctx, []client.Outgoing{{ID: id, Body: []byte("one")}})
	if got := notice("first try"); !strings.Contains(got, "it may have been stored; kept to send again under its ID") {
		t.Errorf("a send refused unavailable without unchanged: %q, want it may have been stored, kept", got)
	}

	c.retry(ctx)
	got := notice("a retry refused whole")
	if !strings.Contains(got, "outcome unknown: an earlier try of it may have been stored; this try was refused, and stored nothing itself (") ||
		!strings.Contains(got, "kept to send again under its ID") {
		t.Errorf("a retry refused unchanged of a line in doubt: %q, want the doubt an earlier try's, the refusal this try's, kept", got)
	}
	if i, j := strings.Index(got, "nothing was stored"), strings.Index(got, "may have been stored"); i >= 0 && i < j {
		t.Errorf("%q says nothing was stored before it says the line may have been", got)
	}
	if len(c.unsent) != 1 || c.unsent[0].ID != id {
		t.Errorf("chat kept %v, want the line in doubt, under its ID", c.unsent)
	}

	// A refusal no retry cures keeps it still: it may be stored.
	c.retry(ctx)
	if got := notice("a retry refused not_member"); !strings.Contains(got, "an earlier try of it may have been stored") || len(c.unsent) != 1 {
		t.Errorf("a retry refused not_member of a line in doubt: %q, kept %v; want it may have been stored, kept", got, c.unsent)
	}

	// The chat ending (its context) as it sends: not kept, and the user
	// is told how to settle it.
	ended, end := context.WithCancel(ctx)
	end()
	c.retry(ended)
	got = notice("a retry as the chat ends")
	if !strings.Contains(got, "may have been stored") || !strings.Contains(got, "not kept: to settle it, send it again under its ID, which stores it once: huddle send --id "+id.String()+" builds ") {
		t.Errorf("a line in doubt chat cannot keep: %q, want it may have been stored, and how to send it again under its ID", got)
	}
	if len(c.unsent) != 0 {
		t.Errorf("chat kept %v as it ended", c.unsent)
	}
}

// chatOn returns a chat, writing to out, on the group "builds" of the
// daemon sendDaemonWith started at addr.
func chatOn(t *testing.T, ctx context.Context, addr string, out *syncBuffer) *chat {
	t.Helper()
	var errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_REGISTRY": addr}
	e := Env{Stdin: strings.NewReader(""), Stdout: out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	var cf clientFlags
	fs := newFlags(e, "chat", "", "", "")
	cf.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	s, err := open(ctx, e, "chat", &cf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	g, _, err := s.group(ctx, "builds")
	if err != nil {
		t.Fatal(err)
	}
	return &chat{env: e, out: out, g: g, info: client.Info{Name: "builds"}, timeout: waitTimeout, retryNow: make(chan struct{}, 1)}
}

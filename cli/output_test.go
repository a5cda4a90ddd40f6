package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fullDisk is a standard output that cannot be written: a file on a full
// disk (huddle fetch --json > lobby.jsonl).
type fullDisk struct{}

func (fullDisk) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestOutputUnwritable runs fetch, watch and send with an output that
// cannot be written. Fetch used to exit 0, as if the file held every
// message, watch to go on following the group, dropping each message, and
// send to exit 0 with its acks lost. Each stops at the first write
// refused, says so, and exits 1 (a local file unusable).
func TestOutputUnwritable(t *testing.T) {
	reg := startUp(t, "lobby")
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "u")
	u.ok(t, "send", "lobby", "hi")
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	for _, args := range [][]string{
		{"fetch", "lobby", "--json"},
		{"fetch", "lobby"},
		{"watch", "lobby", "--json", "--since", "1h"},
		{"watch", "lobby", "--since", "1h"},
		{"send", "lobby", "an ack nobody reads"},
		{"send", "lobby", "--json", "an ack nobody reads"},
		{"send", "lobby", "--json"}, // lines of standard input
	} {
		var errb syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		code := Main(ctx, args, Env{Stdin: strings.NewReader("one\ntwo\n"), Stdout: fullDisk{}, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
		cancel()
		if want := "write standard output: no space left on device"; code != ExitRefused || !strings.Contains(errb.String(), want) {
			t.Errorf("huddle %s onto a full disk: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), code, errb.String(), ExitRefused, want)
		}
	}
}

// TestSendForBots sends as a script that must know what became of each
// message. Acks of lines read from standard input did not say which line
// they were, so with a line refused (too large) or skipped (blank) a
// script could not tell which acks were whose: each carries its line. And
// a send whose outcome is unknown (timed out) could only be retried as a
// new message, stored twice if the first had been: --id gives the message
// an ID of the script's, and a retry is acknowledged as a duplicate.
func TestSendForBots(t *testing.T) {
	reg := startUpWith(t, []string{"--max-message", "100"}, "lobby")
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "bot")
	code, out, errs := u.runInput(t, "one\n\n"+strings.Repeat("x", 200)+"\nfour\n", "send", "lobby", "--json")
	if code != ExitRefused || !strings.Contains(errs, "line 3 is too large") {
		t.Errorf("send of a line too large: exit %d, stderr %q; want exit 1 naming line 3", code, errs)
	}
	var lines []int
	for _, a := range jsonLinesOf[botAck](t, out) {
		lines = append(lines, a.Line)
	}
	if want := []int{1, 4}; !slices.Equal(lines, want) {
		t.Errorf("acks of the lines %v, want %v\n%s", lines, want, out)
	}

	const id = "01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a01"
	first := jsonLinesOf[botAck](t, u.ok(t, "send", "lobby", "--json", "--id", id, "build", "passed"))
	again := jsonLinesOf[botAck](t, u.ok(t, "send", "lobby", "--json", "--id", id, "build", "passed"))
	if len(first) != 1 || len(again) != 1 || first[0].Duplicate || !again[0].Duplicate || again[0].Seq != first[0].Seq || first[0].MsgID != id || first[0].Line != 0 {
		t.Errorf("send --id, then again: %+v then %+v; want %s stored once, the retry a duplicate", first, again, id)
	}
	// Any random UUID is an ID (PROTOCOL.md §6): a daemon reads nothing
	// from its layout.
	const v4 = "9b2f6c1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
	if a := jsonLinesOf[botAck](t, u.ok(t, "send", "lobby", "--json", "--id", v4, "a v4 ID")); len(a) != 1 || a[0].Duplicate || a[0].MsgID != v4 {
		t.Errorf("send --id %s (a UUIDv4): %+v, want it stored under that ID", v4, a)
	}
	for _, args := range [][]string{
		{"send", "lobby", "--id", "not-a-uuid", "hi"},
		{"send", "lobby", "--id", "00000000-0000-0000-0000-000000000000", "hi"},
	} {
		if code, _, errs := u.runInput(t, "a\nb\n", args...); code != ExitUsage || !strings.Contains(errs, "--id") {
			t.Errorf("huddle %s: exit %d, stderr %q; want a usage error about --id", strings.Join(args, " "), code, errs)
		}
	}
}

// botAck is an ack as a script decodes it.
type botAck struct {
	Seq       uint64 `json:"seq"`
	MsgID     string `json:"msg_id"`
	Duplicate bool   `json:"duplicate"`
	Line      int    `json:"line"`
}

// jsonLinesOf decodes one JSON object per line of out.
func jsonLinesOf[T any](t *testing.T, out string) []T {
	t.Helper()
	var all []T
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		all = append(all, v)
	}
	return all
}

// TestChatJSONGap reads chat --json as a typed decoder does, in one pass.
// Its gap notice said the dropped sequence numbers as "from" and "to", so
// "from" was a number there and a sender's fingerprint in every message
// (watch --json had the same fault): they are from_seq and to_seq.
func TestChatJSONGap(t *testing.T) {
	reg := startUpWith(t, []string{"--max-msgs", "3"}, "lobby")
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "u")
	u.runInput(t, "m1\nm2\nm3\nm4\nm5\n", "send", "lobby") // the group holds #3..#5
	code, out, errs := u.runInput(t, "", "chat", "lobby", "--json", "--history", "4")
	if code != ExitOK {
		t.Fatalf("chat --json --history 4: exit %d, stderr %q", code, errs)
	}
	type line struct {
		Event   string `json:"event"`
		Seq     uint64 `json:"seq"`
		From    string `json:"from"`
		FromSeq uint64 `json:"from_seq"`
		ToSeq   uint64 `json:"to_seq"`
	}
	var got []string
	for _, l := range jsonLinesOf[line](t, out) {
		switch {
		case l.Event == "gap":
			got = append(got, fmt.Sprintf("gap #%d..#%d", l.FromSeq, l.ToSeq))
		case l.Event == "" && l.From != "":
			got = append(got, fmt.Sprintf("#%d", l.Seq))
		}
	}
	if want := []string{"gap #2..#2", "#3", "#4", "#5"}; !slices.Equal(got, want) {
		t.Errorf("chat --json --history 4 of a group holding #3..#5 printed %q, want %q\n%s", got, want, out)
	}
}

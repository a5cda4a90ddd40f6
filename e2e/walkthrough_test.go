//go:build linux

package e2e

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// messageJSON is a message as fetch --json and watch --json print it.
type messageJSON struct {
	Group string `json:"group"` // watch only
	Seq   uint64 `json:"seq"`
	TS    string `json:"ts"`
	MsgID string `json:"msg_id"`
	From  string `json:"from"`
	Name  string `json:"name"`
	Text  string `json:"text"`
}

var messageKeys = []string{"seq", "ts", "msg_id", "from", "name", "text"}

// ackJSON is an acknowledgement as send --json prints it.
type ackJSON struct {
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	MsgID     string `json:"msg_id"`
	Duplicate bool   `json:"duplicate"`
	Line      int    `json:"line"` // of stdin
}

var ackKeys = []string{"seq", "ts", "msg_id", "duplicate"}

// lineAckKeys are the keys of the ack of a line of stdin.
var lineAckKeys = append(slices.Clone(ackKeys), "line")

var (
	fingerprintRE = regexp.MustCompile(`^[a-z2-7]{4}(-[a-z2-7]{4}){12}$`)
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	uuidV7RE      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	// RFC 3339 in UTC with all nine digits of nanoseconds, so that the
	// strings sort as the times do.
	jsonTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)
	// A message as fetch prints it for people: seq, local time, name, text.
	fetchLineRE = regexp.MustCompile(`^ *(\d+)  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})  ([^:]+): (.*)$`)
	sentLineRE  = regexp.MustCompile(`^sent #(\d+) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$`)
)

// parseTS parses a --json timestamp, checking its format.
func parseTS(t *testing.T, s string) time.Time {
	t.Helper()
	if !jsonTimeRE.MatchString(s) {
		t.Errorf("timestamp %q is not RFC 3339 in UTC with nanoseconds", s)
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("timestamp %q: %v", s, err)
	}
	return ts
}

// fetchLine is one message as fetch prints it for people.
type fetchLine struct {
	seq  uint64
	name string
	text string
}

// parseFetch parses fetch's human output, failing t on any other line.
func parseFetch(t *testing.T, out string) []fetchLine {
	t.Helper()
	var got []fetchLine
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		m := fetchLineRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("fetch printed %q, not a message line", l)
		}
		seq, _ := strconv.ParseUint(m[1], 10, 64)
		got = append(got, fetchLine{seq, m[3], m[4]})
	}
	return got
}

// TestWalkthrough follows the README: one `huddle up`, alice and bob join
// lobby and talk, carol (not a member) is refused, and every client verb
// prints what the README says, for people and as --json.
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	up := startDaemon(t, "up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer up.stop(t)
	alice := newUser(t, "alice", up.registry)
	bob := newUser(t, "bob", up.registry)
	carol := newUser(t, "carol", up.registry)
	lobby := up.groups["lobby"]
	if !uuidRE.MatchString(lobby) {
		t.Fatalf("up printed group lobby with UUID %q", lobby)
	}
	if !fingerprintRE.MatchString(up.fp) || !fingerprintRE.MatchString(up.regFP) {
		t.Errorf("up printed fingerprints %q and %q", up.regFP, up.fp)
	}

	// groups: the registry lists lobby, at the group daemon's address.
	listed := waitListed(t, alice, lobby)
	want := groupJSON{UUID: lobby, Name: "lobby", Addrs: []string{up.addr}, Fingerprint: up.fp}
	if len(listed) != 1 || !groupEqual(listed[0], want) {
		t.Errorf("groups --json = %+v, want just %+v", listed, want)
	}
	out := alice.ok(t, "groups")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME ") ||
		!slices.Equal(strings.Fields(lines[1]), []string{"lobby", lobby, "0", "0", up.addr, up.fp[:9]}) {
		t.Errorf("groups printed:\n%s\nwant a header and lobby %s 0 0 %s %s", out, lobby, up.addr, up.fp[:9])
	}

	// join, and again: the second time says so.
	if got, want := alice.ok(t, "join", "lobby", "--as", "alice"), "joined lobby as \"alice\" (0 messages so far)\n"; got != want {
		t.Errorf("join printed %q, want %q", got, want)
	}
	if got, want := alice.ok(t, "join", "lobby", "--as", "alice"), "already in lobby; your name there is now \"alice\"\n"; got != want {
		t.Errorf("second join printed %q, want %q", got, want)
	}
	bob.join(t, "lobby")

	// send: alice from arguments, bob one message per line of stdin.
	out = alice.ok(t, "send", "lobby", "hello,", "anyone", "here?")
	if m := sentLineRE.FindStringSubmatch(strings.TrimSpace(out)); m == nil || m[1] != "1" {
		t.Errorf("send printed %q, want sent #1 at TIME", out)
	}
	acks := jsonLines[ackJSON](t, bob.okInput(t, "hi alice\nbob here\n", "send", "lobby", "--json"), lineAckKeys...)
	if len(acks) != 2 {
		t.Fatalf("send --json of two lines acknowledged %d messages: %+v", len(acks), acks)
	}
	for i, a := range acks {
		if a.Seq != uint64(2+i) || a.Duplicate || !uuidV7RE.MatchString(a.MsgID) || a.Line != i+1 {
			t.Errorf("ack %d = %+v, want seq %d, a UUIDv7 msg_id, not duplicate, line %d", i, a, 2+i, i+1)
		}
		parseTS(t, a.TS)
	}

	// fetch, for people: in order, with names.
	wantLines := []fetchLine{{1, "alice", "hello, anyone here?"}, {2, "bob", "hi alice"}, {3, "bob", "bob here"}}
	if got := parseFetch(t, bob.ok(t, "fetch", "lobby")); !slices.Equal(got, wantLines) {
		t.Errorf("fetch = %+v, want %+v", got, wantLines)
	}

	// fetch --json, field by field.
	msgs := jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json"), messageKeys...)
	aliceFP, bobFP := alice.fingerprint(t), bob.fingerprint(t)
	wantFrom := []string{aliceFP, bobFP, bobFP}
	if len(msgs) != 3 {
		t.Fatalf("fetch --json printed %d messages, want 3: %+v", len(msgs), msgs)
	}
	times := make([]time.Time, len(msgs))
	for i, m := range msgs {
		w := wantLines[i]
		if m.Seq != w.seq || m.Name != w.name || m.Text != w.text || m.From != wantFrom[i] || m.Group != "" {
			t.Errorf("message %d = %+v, want seq %d from %s (%s): %q", i, m, w.seq, w.name, wantFrom[i], w.text)
		}
		if !uuidV7RE.MatchString(m.MsgID) {
			t.Errorf("message %d msg_id %q is not a UUIDv7", i, m.MsgID)
		}
		times[i] = parseTS(t, m.TS)
		if i > 0 && !times[i].After(times[i-1]) {
			t.Errorf("message %d at %s is not after message %d at %s", i, m.TS, i-1, msgs[i-1].TS)
		}
	}
	for i, a := range acks {
		if m := msgs[1+i]; m.MsgID != a.MsgID || m.TS != a.TS || m.Seq != a.Seq {
			t.Errorf("message %+v does not match its ack %+v", m, a)
		}
	}

	// Selections: --since (RFC 3339, Unix seconds, how long ago), --after,
	// --limit.
	between := times[0].Add(times[1].Sub(times[0]) / 2) // after #1, before #2
	for _, tc := range []struct {
		args []string
		want []uint64
	}{
		{[]string{"--since", msgs[1].TS}, []uint64{2, 3}},
		{[]string{"--since", between.Format(time.RFC3339Nano)}, []uint64{2, 3}},
		{[]string{"--since", times[2].Add(time.Nanosecond).Format(time.RFC3339Nano)}, nil},
		{[]string{"--since", strconv.FormatInt(times[0].Unix(), 10)}, []uint64{1, 2, 3}},
		{[]string{"--since", fmt.Sprintf("%.6f", float64(between.UnixMicro())/1e6)}, []uint64{2, 3}},
		{[]string{"--since", strconv.FormatInt(times[2].Unix()+2, 10)}, nil},
		{[]string{"--since", "10m"}, []uint64{1, 2, 3}},
		{[]string{"--since", "0s"}, nil},
		{[]string{"--after", "1"}, []uint64{2, 3}},
		{[]string{"--after", "3"}, nil},
		{[]string{"--after", "0"}, []uint64{1, 2, 3}},
		{[]string{"--limit", "2"}, []uint64{1, 2}},
		{[]string{"--after", "1", "--limit", "1"}, []uint64{2}},
		{[]string{"--since", msgs[1].TS, "--limit", "1"}, []uint64{2}},
	} {
		r := bob.run(t, append([]string{"fetch", "lobby", "--json"}, tc.args...)...)
		var got []uint64
		for _, m := range jsonLines[messageJSON](t, r.stdout, messageKeys...) {
			got = append(got, m.Seq)
		}
		if r.code != 0 || !slices.Equal(got, tc.want) {
			t.Errorf("fetch %v: got seqs %v (exit code %d), want %v\n%s", tc.args, got, r.code, tc.want, r.stderr)
		}
	}

	// carol has not joined: refused, with advice.
	for _, args := range [][]string{
		{"fetch", "lobby"},
		{"send", "lobby", "let me in"},
		{"members", "lobby"},
		{"watch", "lobby"},
	} {
		r := carol.run(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "not a member") || !strings.Contains(r.stderr, "join the group first: huddle join lobby\n") {
			t.Errorf("carol: want exit code 1 and advice to join; got %s", r)
		}
	}
	if r := carol.runInput(t, "line one\n", "send", "lobby"); r.code != 1 || !strings.Contains(r.stderr, "join the group first: huddle join lobby\n") {
		t.Errorf("carol sending from stdin: want exit code 1 and advice to join; got %s", r)
	}

	// members, for people and as JSON.
	out = bob.ok(t, "members", "lobby")
	lines = strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || strings.Fields(lines[0])[0] != "NAME" ||
		!strings.HasPrefix(lines[1], "alice ") || !strings.Contains(lines[1], aliceFP) || strings.Contains(lines[1], "(you)") ||
		!strings.HasPrefix(lines[2], "bob ") || !strings.HasSuffix(lines[2], bobFP+"  (you)") {
		t.Errorf("bob: members printed\n%s\nwant a header, alice, then bob marked (you)", out)
	}
	type memberJSON struct {
		Fingerprint string `json:"fingerprint"`
		Name        string `json:"name"`
		Joined      string `json:"joined"`
		You         bool   `json:"you"`
		Online      bool   `json:"online"`
		LastSeen    string `json:"last_seen"`
	}
	members := jsonLines[memberJSON](t, alice.ok(t, "members", "lobby", "--json"), "fingerprint", "name", "joined", "you", "online", "last_seen")
	if len(members) != 2 ||
		members[0].Name != "alice" || members[0].Fingerprint != aliceFP || !members[0].You ||
		members[1].Name != "bob" || members[1].Fingerprint != bobFP || members[1].You {
		t.Errorf("members --json = %+v, want alice (you) then bob", members)
	}
	for _, m := range members {
		joined := parseTS(t, m.Joined)
		if !joined.Before(times[0]) {
			t.Errorf("%s joined at %s, after the first message", m.Name, m.Joined)
		}
		// Nobody watches: both offline, last seen since they joined (alice
		// asking for the list now, bob at his last send).
		if seen := parseTS(t, m.LastSeen); m.Online || seen.Before(joined) {
			t.Errorf("%s: online %v, last seen %s, joined %s: want offline, seen since joining", m.Name, m.Online, m.LastSeen, m.Joined)
		}
	}

	// info: anyone may ask; it says whether you are a member.
	type infoJSON struct {
		UUID        string         `json:"uuid"`
		Name        string         `json:"name"`
		Epoch       uint64         `json:"epoch"`
		FirstSeq    uint64         `json:"first_seq"`
		LastSeq     uint64         `json:"last_seq"`
		Members     uint64         `json:"members"`
		Private     bool           `json:"private"`
		Member      bool           `json:"member"`
		Fingerprint string         `json:"fingerprint"`
		Addrs       []string       `json:"addrs"`
		Limits      map[string]any `json:"limits"`
		Storage     string         `json:"storage"`
		Fsync       string         `json:"fsync"`
		FsyncMS     uint64         `json:"fsync_interval_ms"`
	}
	for _, tc := range []struct {
		u      *user
		member bool
	}{{alice, true}, {carol, false}} {
		infos := jsonLines[infoJSON](t, tc.u.ok(t, "info", "lobby", "--json"),
			"uuid", "name", "epoch", "first_seq", "last_seq", "members", "private", "member", "fingerprint", "addrs", "limits",
			"storage", "fsync", "fsync_interval_ms")
		if len(infos) != 1 {
			t.Fatalf("info --json printed %d objects", len(infos))
		}
		in := infos[0]
		if in.UUID != lobby || in.Name != "lobby" || in.Epoch == 0 || in.FirstSeq != 1 || in.LastSeq != 3 ||
			in.Members != 2 || in.Private || in.Member != tc.member || in.Fingerprint != up.fp ||
			!slices.Equal(in.Addrs, []string{up.addr}) || in.Limits["max_message_bytes"] != float64(64<<10) ||
			in.Storage != "disk" || in.Fsync != "interval" || in.FsyncMS != 1000 {
			t.Errorf("%s: info --json = %+v", tc.u.name, in)
		}
	}
	out = carol.ok(t, "info", "lobby")
	rows := make(map[string]string)
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if kv := regexp.MustCompile(`\s{2,}`).Split(l, 2); len(kv) == 2 {
			rows[kv[0]] = kv[1]
		}
	}
	for k, v := range map[string]string{
		"name": "lobby", "uuid": lobby, "daemon": up.fp + " at " + up.addr, "private": "no",
		"you are a member": "no", "members": "2", "max message": "64 KiB",
	} {
		if rows[k] != v {
			t.Errorf("carol: info printed\n%s\nwant its row %q to say %q", out, k, v)
		}
	}

	// id: the fingerprint messages carry, stable, and as JSON with the key's path.
	if !fingerprintRE.MatchString(aliceFP) || aliceFP == bobFP {
		t.Errorf("alice's id %q, bob's %q", aliceFP, bobFP)
	}
	if again := alice.fingerprint(t); again != aliceFP {
		t.Errorf("alice's id changed from %s to %s", aliceFP, again)
	}
	type idJSON struct {
		Fingerprint string `json:"fingerprint"`
		Key         string `json:"key"`
	}
	ids := jsonLines[idJSON](t, alice.ok(t, "id", "--json"), "fingerprint", "key")
	if len(ids) != 1 || ids[0].Fingerprint != aliceFP || ids[0].Key != alice.home+"/key.pem" {
		t.Errorf("id --json = %+v, want fingerprint %s, key %s/key.pem", ids, aliceFP, alice.home)
	}

	// The registry's listing catches up with the group within about half a
	// second: the daemon renews early when the counts change.
	var last []groupJSON
	if !eventually(t, waitTimeout, func() bool {
		last = jsonLines[groupJSON](t, carol.ok(t, "groups", "--json"), groupKeys...)
		return len(last) == 1 && last[0].Members == 2 && last[0].LastSeq == 3
	}) {
		t.Errorf("groups --json = %+v, want lobby with 2 members and last_seq 3", last)
	}

	// leave: once, then again (not an error).
	if got, want := bob.ok(t, "leave", "lobby"), "left lobby\n"; got != want {
		t.Errorf("leave printed %q, want %q", got, want)
	}
	if got, want := bob.ok(t, "leave", "lobby"), "you were not in lobby\n"; got != want {
		t.Errorf("leave again printed %q, want %q", got, want)
	}
	if r := bob.run(t, "fetch", "lobby"); r.code != 1 {
		t.Errorf("bob fetching after leaving: %s", r)
	}
}

func groupEqual(a, b groupJSON) bool {
	return a.UUID == b.UUID && a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs) &&
		a.Fingerprint == b.Fingerprint && a.Members == b.Members && a.LastSeq == b.LastSeq
}

// TestSend checks where send's flags end and its text begins (flags may
// come before or after GROUP, the text runs from its first word to the end
// of the command line, and -- lets text start with a dash), and that a send
// waiting for lines on standard input stops when interrupted.
func TestSend(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)

	for _, tc := range []struct {
		input string
		args  []string
		json  bool
	}{
		{"", []string{"send", "lobby", "--json", "--", "--literal"}, true},
		{"", []string{"send", "lobby", "hello", "--json"}, true},
		{"", []string{"send", "lobby", "--", "hello", "--json"}, false},
		{"", []string{"send", "--json", "lobby", "plain", "words"}, true},
		{"line one\nline two\n", []string{"send", "lobby", "--json"}, true},
		{"", []string{"send", "lobby", "--", "-x"}, false},
	} {
		r := alice.runInput(t, tc.input, tc.args...)
		switch {
		case r.code != 0:
			t.Errorf("%s", r)
		case tc.json && tc.input != "":
			jsonLines[ackJSON](t, r.stdout, lineAckKeys...)
		case tc.json:
			jsonLines[ackJSON](t, r.stdout, ackKeys...)
		case !sentLineRE.MatchString(strings.TrimSpace(r.stdout)):
			t.Errorf("want one sent line: %s", r)
		}
	}
	for _, args := range [][]string{{"send", "lobby", "--frobnicate", "x"}, {"send", "lobby", "-1", "degrees"}} {
		if r := alice.run(t, args...); r.code != 2 || !strings.Contains(r.stderr, "huddle send --help") {
			t.Errorf("a word like a flag right after GROUP (text starting with a dash goes after --): want exit code 2: %s", r)
		}
	}
	var texts []string
	for _, m := range jsonLines[messageJSON](t, alice.ok(t, "fetch", "lobby", "--json"), messageKeys...) {
		texts = append(texts, m.Text)
	}
	if want := []string{"--literal", "hello", "hello --json", "plain words", "line one", "line two", "-x"}; !slices.Equal(texts, want) {
		t.Errorf("lobby holds %q, want %q", texts, want)
	}

	// Lines are sent as they come; Ctrl-C stops a send waiting for more.
	send := alice.start(t, "send", "lobby")
	if _, err := io.WriteString(send.stdin, "typed\n"); err != nil {
		t.Fatal(err)
	}
	waitText(t, send, "sent #8 at ")
	code := send.stop(t, syscall.SIGINT)
	if code == 0 || !strings.Contains(send.stderr.String(), "interrupted") {
		t.Errorf("send interrupted while waiting for input: exit code %d, want an error saying so\nstderr:\n%s", code, send.stderr)
	}
	send.noRaces(t)
}

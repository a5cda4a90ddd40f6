package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestJSONKeysInREADMEOrder: join, leave, id, members and info --json print
// their keys in the order README.md lists them (info's limits in the order huddle
// info shows them, which README.md lists too). Scripts read the README's
// contract; the keys came out sorted (maps, until session 22), so a
// script reading a line by position, or a person comparing it with the
// README, saw another order than documented.
func TestJSONKeysInREADMEOrder(t *testing.T) {
	u := newTestUser(t, startUp(t, "lobby", "dev"))
	joined := u.ok(t, "join", "lobby", "--as", "ann", "--json")

	documented := readmeKeys(t)

	if got, want := objectKeys(t, joined, ""), documented("join"); !slices.Equal(got, want) {
		t.Errorf("join --json keys %v, README.md lists %v\n%s", got, want, joined)
	}
	u.ok(t, "join", "dev", "--as", "ann")
	left := u.ok(t, "leave", "dev", "--json")
	if got, want := objectKeys(t, left, ""), documented("leave"); !slices.Equal(got, want) {
		t.Errorf("leave --json keys %v, README.md lists %v\n%s", got, want, left)
	}
	id := u.ok(t, "id", "--json")
	if got, want := objectKeys(t, id, ""), documented("id"); !slices.Equal(got, want) {
		t.Errorf("id --json keys %v, README.md lists %v\n%s", got, want, id)
	}
	members := u.ok(t, "members", "lobby", "--json")
	if got, want := objectKeys(t, members, ""), documented("members"); !slices.Equal(got, want) {
		t.Errorf("members --json keys %v, README.md lists %v\n%s", got, want, members)
	}
	info := u.ok(t, "info", "lobby", "--json")
	want := slices.DeleteFunc(documented("info"), func(k string) bool { return k == "replicas" }) // a cell's group only
	if got := objectKeys(t, info, ""); !slices.Equal(got, want) {
		t.Errorf("info --json keys %v, README.md lists %v\n%s", got, want, info)
	}
	if got, want := objectKeys(t, info, "limits"), documented("limits"); !slices.Equal(got, want) {
		t.Errorf("info --json limits keys %v, README.md lists %v\n%s", got, want, info)
	}
}

// readmeKeys returns what looks up, in README.md, the keys listed for a
// --json object: "members `{fingerprint, name, ...}`" or "`info` `{uuid,
// ...}`" in the --json paragraph (not chat's "`/info` `{...}`").
func readmeKeys(t *testing.T) func(what string) []string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return func(what string) []string {
		t.Helper()
		m := regexp.MustCompile("(?:^|[^/\\w])`?" + regexp.QuoteMeta(what) + "`? `\\{([^}]*)\\}`").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README.md lists no keys for %s --json (%s `{...}`)", what, what)
		}
		var keys []string
		for _, k := range strings.Split(string(m[1]), ",") {
			keys = append(keys, strings.TrimSpace(k))
		}
		return keys
	}
}

// objectKeys returns the keys of the JSON object line (of its object
// under key in, if in is set), in the order the line has them.
func objectKeys(t *testing.T, line, in string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if in != "" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("decode %q: %v", line, err)
		}
		dec = json.NewDecoder(strings.NewReader(string(obj[in])))
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%q: not an object (%v, %v)", line, tok, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("decode %q: %v", line, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("decode %q: %v", line, err)
		}
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		t.Fatalf("decode %q: %v", line, err)
	}
	return keys
}

// TestWatchEventKeysInREADMEOrder: watch --json's gap and reset events
// print their keys in the order README.md lists them (sorted, from a map,
// until session 22).
func TestWatchEventKeysInREADMEOrder(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme = regexp.MustCompile(`\s+`).ReplaceAll(readme, []byte(" ")) // its lines wrap inside the braces
	for _, ev := range []client.Event{{Kind: client.EventGap, From: 3, To: 9}, {Kind: client.EventReset, Epoch: 7}} {
		kind := map[client.EventKind]string{client.EventGap: "gap", client.EventReset: "reset"}[ev.Kind]
		m := regexp.MustCompile("`\\{(group, uuid, event: \"" + kind + "\"[^}]*)\\}`").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README.md lists no keys for watch's %s event", kind)
		}
		var want []string
		for _, k := range strings.Split(string(m[1]), ",") {
			k, _, _ = strings.Cut(strings.TrimSpace(k), ":") // event: "gap"
			want = append(want, k)
		}
		var out bytes.Buffer
		if err := printEvent(Env{Stdout: &out, Stderr: io.Discard}, true, "lobby", "u", "", "lobby", newNameBook(), ev); err != nil {
			t.Fatal(err)
		}
		if got := objectKeys(t, out.String(), ""); !slices.Equal(got, want) {
			t.Errorf("watch --json %s event keys %v, README.md lists %v\n%s", kind, got, want, out.String())
		}
	}
}

// TestCellStatusKeysInREADMEOrder: cell status --json's object, its
// members (with figures, a stall, or an error), its groups, key
// mismatches, leader claims and the daemon asked, and cell add's and
// remove's members, print their keys in the order README.md lists them
// (sorted, from maps, until session 23). The status is one of a cell whose
// two members claim to lead (terms 5 and 4), one stalled and reporting a
// wrong key, a third catching up and not answering, asked of a daemon the
// cell removed: every key but asked's "waiting", checked alone below.
func TestCellStatusKeysInREADMEOrder(t *testing.T) {
	documented := readmeKeys(t)
	replica := func(b byte, catchingUp bool) wire.Replica {
		return wire.Replica{Addr: fmt.Sprintf("10.0.0.%d:7374", b), Fingerprint: wire.Fingerprint{b}, CatchingUp: catchingUp}
	}
	a, b, c, removed := replica(1, false), replica(2, false), replica(3, true), replica(9, false)
	members := []wire.Replica{a, b, c}
	named := wire.Fingerprint{7}
	stA := client.CellStatus{Self: a, State: "leader", Term: 5, CommitIndex: 9, AppliedIndex: 8, LastIndex: 9, Members: members,
		Groups:        []wire.CellGroup{{Group: wire.UUID{1}, Name: "lobby", Epoch: 1, Last: 3, Members: 2}},
		GroupsOmitted: 1,
		Stall:         &wire.CellStall{StalledMS: 1500, Index: 9, Group: "lobby", Cause: "disk full"},
		KeyMismatches: []wire.CellKeyMismatch{{Member: a, Addr: b.Addr, Named: &named, Presented: b.Fingerprint}}}
	stB := client.CellStatus{Self: b, State: "leader", Term: 4, Members: members}
	views := []memberView{{replica: a, status: &stA}, {replica: b, status: &stB}, {replica: c, err: errors.New("no answer")}}
	status := func(first client.CellStatus, views []memberView) string {
		t.Helper()
		var out bytes.Buffer
		if err := printCellStatus(Env{Stdout: &out, Stderr: io.Discard}, first, views, true); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	line := status(client.CellStatus{Self: removed, State: "follower", Members: members}, views)

	if got, want := objectKeys(t, line, ""), documented("cell status"); !slices.Equal(got, want) {
		t.Errorf("cell status --json keys %v, README.md lists %v\n%s", got, want, line)
	}
	// Each list's objects: their keys in README's order, those absent
	// from one (a member's figures, say) left out, and every key README
	// lists printed by one of them.
	inOrder := func(what, in string, want []string) {
		t.Helper()
		seen := map[string]bool{}
		for _, obj := range listed(t, line, in) {
			got := objectKeys(t, obj, "")
			for _, k := range got {
				seen[k] = true
			}
			if !slices.Equal(got, slices.DeleteFunc(slices.Clone(want), func(k string) bool { return !slices.Contains(got, k) })) {
				t.Errorf("cell status --json %s keys %v, not in README.md's order %v\n%s", what, got, want, obj)
			}
		}
		for _, k := range want {
			if !seen[k] {
				t.Errorf("cell status --json: no %s has README.md's key %q\n%s", what, k, line)
			}
		}
	}
	inOrder("member", "members", documented("cell member"))
	inOrder("group", "groups", documented("cell group"))
	inOrder("key mismatch", "key_mismatches", documented("key mismatch"))
	inOrder("leader claim", "leader_claims", regexpKeys(t, "`leader_claims` \\(`\\[\\{([^}]*)\\}\\]`"))
	var obj struct {
		Members []json.RawMessage `json:"members"`
	}
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatal(err)
	}
	if got, want := objectKeys(t, string(obj.Members[0]), "stall"), documented("stall"); !slices.Equal(got, want) {
		t.Errorf("cell status --json stall keys %v, README.md lists %v\n%s", got, want, line)
	}
	if got, want := objectKeys(t, string(obj.Members[0]), ""), documented("cell member"); !slices.Equal(got, slices.DeleteFunc(slices.Clone(want), func(k string) bool { return k == "catching_up" || k == "error" })) {
		t.Errorf("cell status --json: the leader's keys %v, want README.md's %v but catching_up and error\n%s", got, want, obj.Members[0])
	}
	if got, want := objectKeys(t, line, "leader"), []string{"addr", "fingerprint"}; !slices.Equal(got, want) {
		t.Errorf("cell status --json leader keys %v, want %v", got, want)
	}
	if got, want := objectKeys(t, line, "asked"), slices.DeleteFunc(documented("asked"), func(k string) bool { return k == "waiting" }); !slices.Equal(got, want) {
		t.Errorf("cell status --json asked keys %v (of a member removed), README.md lists %v\n%s", got, want, line)
	}
	// A daemon waiting to be added: no members known, asked says so.
	waiting := status(client.CellStatus{Self: removed, State: "follower"}, nil)
	if got, want := objectKeys(t, waiting, "asked"), documented("asked"); !slices.Equal(got, want) {
		t.Errorf("cell status --json asked keys %v (of a daemon waiting), README.md lists %v\n%s", got, want, waiting)
	}

	// cell add and remove: {members: [{addr, fingerprint, leader, voter}]}.
	var out bytes.Buffer
	if err := printMembers(Env{Stdout: &out, Stderr: io.Discard}, []client.Replica{{Addr: a.Addr, Fingerprint: a.Fingerprint, Leader: true}, {Addr: c.Addr, Fingerprint: c.Fingerprint, CatchingUp: true}}, true); err != nil {
		t.Fatal(err)
	}
	want := regexpKeys(t, "`cell add` and `cell remove` print `\\{members: \\[\\{([^}]*)\\}\\]\\}`")
	for _, m := range listed(t, out.String(), "members") {
		if got := objectKeys(t, m, ""); !slices.Equal(got, want) {
			t.Errorf("cell add --json member keys %v, README.md lists %v\n%s", got, want, m)
		}
	}
}

// listed returns the objects of the JSON list under key in, in the
// object line.
func listed(t *testing.T, line, in string) []string {
	t.Helper()
	var obj map[string]json.RawMessage
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	if err := json.Unmarshal(obj[in], &list); err != nil || len(list) == 0 {
		t.Fatalf("%s: no list %s (%v)", line, in, err)
	}
	var out []string
	for _, o := range list {
		out = append(out, string(o))
	}
	return out
}

// regexpKeys returns the comma-separated keys README.md lists in the
// first group of re.
func regexpKeys(t *testing.T, re string) []string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(re).FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no %s", re)
	}
	var keys []string
	for _, k := range strings.Split(string(m[1]), ",") {
		keys = append(keys, strings.TrimSpace(k))
	}
	return keys
}

// chatEventKeys returns the keys README.md lists for each event of chat
// --json, by the event's name ("members" for /members' answer), each
// beginning with event and group, and the keys of /members' members.
func chatEventKeys(t *testing.T) (events map[string][]string, member []string) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\s+`).ReplaceAllString(string(readme), " ") // its lines wrap inside the braces
	start := strings.Index(text, "`chat --json` prints messages as fetch does and these events")
	end := strings.Index(text[max(start, 0):], "members `{fingerprint")
	if start < 0 || end < 0 {
		t.Fatal("README.md has no paragraph on chat --json's events")
	}
	events = map[string][]string{}
	for _, m := range regexp.MustCompile("`/?(\\w+)` `\\{([^}]*)\\}").FindAllStringSubmatch(text[start:start+end], -1) {
		keys := []string{"event", "group"}
		list := m[2]
		if outer, inner, ok := strings.Cut(list, "[{"); ok { // /members' {members: [{name, ...}]}
			list = outer
			for _, k := range strings.Split(inner, ",") {
				member = append(member, strings.TrimSpace(k))
			}
		}
		for _, k := range strings.Split(list, ",") {
			k, _, _ = strings.Cut(strings.TrimSpace(k), ":")
			keys = append(keys, k)
		}
		events[m[1]] = keys
	}
	if len(events) < 10 || len(member) == 0 {
		t.Fatalf("README.md's chat --json events: %v, /members' members %v; want every event with keys", events, member)
	}
	return events, member
}

// TestChatEventKeysInREADMEOrder: chat --json's events print event, group
// and then their keys in the order README.md lists them (sorted, from a
// map, until session 23: start was {event, group, members, uuid}), as do
// /members' members. The events a chat from a pipe gives: start, and the
// answers to commands (TestChatSendInDoubt checks in_doubt's).
func TestChatEventKeysInREADMEOrder(t *testing.T) {
	events, member := chatEventKeys(t)
	u := newTestUser(t, startUp(t, "lobby"))
	u.ok(t, "join", "lobby", "--as", "ann")
	code, out, errs := u.runInput(t, "/help\n/members\n/info\n/retry\n/drop\n/nonsense\n", "chat", "lobby", "--json")
	if code != ExitOK {
		t.Fatalf("chat --json: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	var seen []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Event == "" {
			t.Fatalf("chat --json line %q (%v): want an event", line, err)
		}
		seen = append(seen, ev.Event)
		want, ok := events[ev.Event]
		if ev.Event == "reconnected" || ev.Event == "queued" { // README lists them without keys
			want, ok = []string{"event", "group"}, true
		}
		if !ok {
			t.Errorf("chat --json event %q: README.md lists no keys for it\n%s", ev.Event, line)
			continue
		}
		if got := objectKeys(t, line, ""); !slices.Equal(got, want) {
			t.Errorf("chat --json %s event keys %v, README.md lists %v\n%s", ev.Event, got, want, line)
		}
		if ev.Event == "members" {
			for _, m := range listed(t, line, "members") {
				if got := objectKeys(t, m, ""); !slices.Equal(got, member) {
					t.Errorf("chat --json /members member keys %v, README.md lists %v\n%s", got, member, m)
				}
			}
		}
	}
	// The answers, in the commands' order; a watch's event between them
	// (a connection lost on a loaded machine) is checked above too.
	want := []string{"start", "help", "members", "info", "retrying", "dropped", "error"}
	if got := slices.DeleteFunc(seen, func(e string) bool { return !slices.Contains(want, e) }); !slices.Equal(got, want) {
		t.Errorf("chat --json events %v, want %v\n%s", got, want, out)
	}
}

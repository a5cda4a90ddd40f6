package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/client"
)

// TestJSONKeysInREADMEOrder: join, leave, members and info --json print
// their keys in the order README.md lists them (info's limits in the order huddle
// info shows them, which README.md lists too). Scripts read the README's
// contract; the keys came out sorted (maps, until session 22), so a
// script reading a line by position, or a person comparing it with the
// README, saw another order than documented.
func TestJSONKeysInREADMEOrder(t *testing.T) {
	u := newTestUser(t, startUp(t, "lobby", "dev"))
	joined := u.ok(t, "join", "lobby", "--as", "ann", "--json")

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := func(what string) []string {
		t.Helper()
		// "members `{fingerprint, name, ...}`" or "`info` `{uuid, ...}`"
		// in the --json paragraph (not chat's "`/info` `{...}`").
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

	if got, want := objectKeys(t, joined, ""), documented("join"); !slices.Equal(got, want) {
		t.Errorf("join --json keys %v, README.md lists %v\n%s", got, want, joined)
	}
	u.ok(t, "join", "dev", "--as", "ann")
	left := u.ok(t, "leave", "dev", "--json")
	if got, want := objectKeys(t, left, ""), documented("leave"); !slices.Equal(got, want) {
		t.Errorf("leave --json keys %v, README.md lists %v\n%s", got, want, left)
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

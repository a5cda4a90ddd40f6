package cli

import (
	"encoding/json"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestJSONKeysInREADMEOrder: members --json and info --json print their
// keys in the order README.md lists them (info's limits in the order huddle
// info shows them, which README.md lists too). Scripts read the README's
// contract; the keys came out sorted (maps, until session 22), so a
// script reading a line by position, or a person comparing it with the
// README, saw another order than documented.
func TestJSONKeysInREADMEOrder(t *testing.T) {
	u := newTestUser(t, startUp(t, "lobby"))
	u.ok(t, "join", "lobby", "--as", "ann")

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

package cli

import (
	"strings"
	"testing"
)

// TestFetchSelections: --since 0 is the Unix epoch (everything), not "0s
// ago" (nothing); --last N gives the newest N, where --limit N gives the
// oldest.
func TestFetchSelections(t *testing.T) {
	reg := startUp(t)
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "alice")
	for _, m := range []string{"one", "two", "three", "four"} {
		u.ok(t, "send", "lobby", m)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--since", "0"}, []string{"one", "two", "three", "four"}},
		{[]string{"--since", "1970-01-01"}, []string{"one", "two", "three", "four"}},
		{[]string{"--since", "10d"}, []string{"one", "two", "three", "four"}},
		{[]string{"--last", "2"}, []string{"three", "four"}},
		{[]string{"--last", "10"}, []string{"one", "two", "three", "four"}},
		{[]string{"--limit", "2"}, []string{"one", "two"}},
	} {
		out := u.ok(t, append([]string{"fetch", "lobby"}, tc.args...)...)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if _, text, ok := strings.Cut(line, "alice: "); ok {
				got = append(got, text)
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("fetch %v: %q, want %q", tc.args, got, tc.want)
		}
	}
}

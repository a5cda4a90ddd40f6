package cli

import (
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// TestShownIsWireRule: the CLI shows a peer's text by wire's rule
// (wire.Unshown), as the client's errors quote it (wire.Shown): the two
// were written apart and had to be kept alike by hand. They differ in one
// thing, on purpose: shown does not cut (see its comment).
func TestShownIsWireRule(t *testing.T) {
	for _, s := range []string{
		"lobby", "café ☕", "שלום עולם", "a\tb", "line\nbreak", "\x1b]0;title\x07", "\u009b2J", "del\x7f",
		"left\u202eright", "zero\u200bwidth", "join\u200dme", "\ufeffbom", "sep\u2028arator\u2029", "bad\xffbyte", "\xe2\x82",
	} {
		if got, want := shown(s), wire.Shown(s); got != want {
			t.Errorf("shown(%q) = %q, wire.Shown %q", s, got, want)
		}
	}
	long := strings.Repeat("n", wire.MaxShownMessage+100)
	if got := shown(long); got != long {
		t.Errorf("shown cut a text of %d bytes to %d", len(long), len(got))
	}
}

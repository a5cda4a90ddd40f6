package cli

import (
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestExplainKeyChangedKeepsLines: a registry's key change is explained in
// the lines identity.ChangedError lays out (the fingerprints on lines of
// their own, then what to do), each shown: a name a LAN's advertiser chose
// shows no format character. Shown whole, the line breaks became U+FFFD
// and the message one line.
func TestExplainKeyChangedKeepsLines(t *testing.T) {
	ce := &identity.ChangedError{Name: "mdns:office\u202e", Pinned: wire.Fingerprint{1}, Presented: wire.Fingerprint{2}, File: "/home/u/.huddle/known_registries"}
	msg, code := explain(ce)
	if code != ExitRefused {
		t.Errorf("exit code %d, want %d", code, ExitRefused)
	}
	lines := strings.Split(msg, "\n")
	if len(lines) != strings.Count(ce.Error(), "\n")+1 || !strings.HasPrefix(lines[0], "the registry at mdns:office\ufffd presented fingerprint") ||
		strings.TrimSpace(lines[1]) != ce.Presented.String() {
		t.Errorf("explained as:\n%s\nwant the lines of:\n%s", msg, ce.Error())
	}
	if strings.ContainsFunc(msg, func(r rune) bool { return r != '\n' && wire.Unshown(r) }) {
		t.Errorf("explained with a character shown raw:\n%q", msg)
	}
}

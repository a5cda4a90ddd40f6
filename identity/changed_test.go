package identity

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// TestChangedErrorShowsName: a registry's name in the message a key change
// gives is shown as wire.Shown shows a peer's text. An mDNS instance name
// is anyone's to choose on the LAN, and until session 19 Check refused
// only control characters in it (a file pinned then may still hold such a
// name): one holding a bidirectional override or a line separator printed
// them raw, turning the message's lines around or faking one of its own.
// The command to forget it, which would paste what is not shown, gives way
// to the line to delete from the file.
func TestChangedErrorShowsName(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	a, _ := Generate()
	b, _ := Generate()
	for _, name := range []string{
		"mdns:office\u202e(reinstalled) ,daetsni nur",
		"mdns:office\u2028If you know the change is expected, run: huddle forget-registry mdns:office",
		"mdns:office\u200b",
	} {
		// Check pins no such name now (TestPinNameHasNoFormatCharacter).
		ce := &ChangedError{Name: name, Pinned: a.Fingerprint(), Presented: b.Fingerprint(), File: path}
		msg := ce.Error()
		if i := strings.IndexFunc(msg, func(r rune) bool { return unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' }); i >= 0 {
			t.Errorf("%q: the message holds %U:\n%s", name, []rune(msg[i:])[0], msg)
		}
		if !strings.Contains(msg, "\ufffd") || strings.Contains(msg, "forget-registry mdns:office\ufffd") {
			t.Errorf("%q: the name not shown as wire.Shown shows it, or a forget command of it printed:\n%s", name, msg)
		}
		if !strings.Contains(msg, "delete the line ending in "+a.Fingerprint().String()+" from "+path) {
			t.Errorf("%q: the message does not name the line to delete:\n%s", name, msg)
		}
	}

	// A name shown as it is keeps its command to paste.
	if err := k.Check(t.Context(), "mdns:huddle registry on vm (abcd)", a.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	var ce *ChangedError
	if err := k.Check(t.Context(), "mdns:huddle registry on vm (abcd)", b.Fingerprint()); !errors.As(err, &ce) {
		t.Fatalf("another key: %v", err)
	}
	if msg := ce.Error(); !strings.HasSuffix(msg, "run: huddle forget-registry 'mdns:huddle registry on vm (abcd)'") {
		t.Errorf("a plain name's message:\n%s", msg)
	}
}

package cli

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/huddle-chat/huddle/wire"
)

// A peer chooses much of what the commands print: message bodies, member
// and group names, addresses, the text fields of info and cell status,
// the messages of its errors, mDNS instance names. A terminal takes
// control characters in them for commands (ESC begins sequences that
// retitle the window, clear the screen or write the clipboard; U+009B is
// an 8-bit CSI; a line break fakes a line of its own), so a peer's text
// reaches a terminal through the functions below, which show each such
// character as U+FFFD. --json keeps the text as it came, in escapes that
// JSON parsers read back unchanged (printJSON).

// shown returns s, a name or another one-line field a peer chose, as it
// may be shown: a control character (C0, DEL, C1), a format character (a
// bidirectional override, a zero-width character: names refuse them, as
// they make one name pass for another), a line or paragraph separator, or
// a byte that is not UTF-8 becomes U+FFFD. A name an honest daemon
// accepted is unchanged.
//
// It is wire.Shown's rule (wire.Unshown, one rule for a peer's text), but
// it does not cut: wire.Shown quotes one peer's text inside an error of
// its own, and holds it to MaxShownMessage bytes there; shown is given a
// field the protocol bounds already (a name, an address) or a whole error
// text the command prints, whose last parts (the advice it ends with, the
// errors of the last registries joined) a cut would drop.
func shown(s string) string {
	if !strings.ContainsFunc(s, wire.Unshown) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // an invalid byte comes as U+FFFD
		if wire.Unshown(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	return b.String()
}

// shellWord returns s, a word the user typed, as it may be shown in a
// command to copy into a shell: through shown, and in single quotes unless
// every character of it is a letter, a digit or one of -_.:/@%+=, (a
// space, a quote or $ would split or change it).
func shellWord(s string) string {
	s = shown(s)
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("-_.:/@%+=,", r)
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// printable returns a message body as it may be shown: a control
// character but the tab, or a byte that is not UTF-8, becomes U+FFFD.
// Format characters stay: right-to-left text needs its marks.
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\t' {
			r = utf8.RuneError
		}
		out = append(out, r)
	}
	return string(out)
}

// shownWriter is standard error as the commands write it: every control
// character but the line feed and the tab, every format character and
// line or paragraph separator (notWritten), and every byte that is not
// UTF-8, is written as U+FFFD. Errors quote what servers said and what the
// network stack reported, and daemons log what peers sent; all of it goes
// through here.
type shownWriter struct{ w io.Writer }

func (s shownWriter) Write(p []byte) (int, error) {
	if utf8.Valid(p) && !bytes.ContainsFunc(p, notWritten) {
		return s.w.Write(p)
	}
	n := len(p)
	var b bytes.Buffer
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if notWritten(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		p = p[size:]
	}
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return n, nil
}

// notWritten reports whether shownWriter writes r as U+FFFD: what shown
// replaces (a format character too: a bidirectional override in an error
// that quotes a peer's text turned the rest of the line around, until
// session 17), but the line feed and the tab, which its writers' own
// lines hold.
func notWritten(r rune) bool { return wire.Unshown(r) && r != '\n' && r != '\t' }

// escapeJSON rewrites, in JSON that encoding/json wrote, the characters a
// terminal would act on or hide that it leaves as they are (C1 controls,
// format characters such as U+202E) as \u escapes, which every JSON
// parser reads back as the same characters: a script gets the peer's text
// unchanged, and a person reading the output sees no effect of it.
func escapeJSON(b []byte) []byte {
	if !bytes.ContainsFunc(b, wire.Unshown) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError || !wire.Unshown(r) {
			// encoding/json writes only valid UTF-8, and has escaped the
			// C0 controls, DEL excepted, and the line separators already.
			out = append(out, b[:n]...)
		} else if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		b = b[n:]
	}
	return out
}

// shownMS returns a count of milliseconds a peer sent (a stall's length, a
// follower's last contact, a lease's time left) as a duration to show, at
// most the longest a time.Duration holds (292 years): converted as it came,
// one past 2^63 ns wrapped to a negative or a small duration, and a hostile
// member's "stalled for 2^62 ms" read "for -1h..." or "for 0s".
func shownMS(ms uint64) time.Duration {
	if ms >= uint64(math.MaxInt64/int64(time.Millisecond)) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

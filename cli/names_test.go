package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func TestNameBook(t *testing.T) {
	alice, mallory, bob := wire.Fingerprint{1}, wire.Fingerprint{2}, wire.Fingerprint{3}
	b := newNameBook()
	b.seeMembers([]client.Member{{Fingerprint: alice, Name: "alice"}, {Fingerprint: bob, Name: "bob"}})
	for _, c := range []struct {
		fp   wire.Fingerprint
		name string
		want string
	}{
		{alice, "alice", "alice"},
		{bob, "bob", "bob"},
		{mallory, "alice", "alice [" + mallory.Short() + "]"}, // a second key wears alice
		{alice, "alice", "alice [" + alice.Short() + "]"},     // from then on, both are marked
		{bob, "bobby", "bobby [" + bob.Short() + "]"},         // a key that changed its name
		{bob, "bob", "bob [" + bob.Short() + "]"},
	} {
		if got := b.label(c.fp, c.name); got != c.want {
			t.Errorf("label(%s, %q) = %q, want %q", c.fp.Short(), c.name, got, c.want)
		}
	}
}

func TestDisplayWidth(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int
	}{{"lobby", 5}, {"大厅", 4}, {"🎉party", 7}, {"e\u0301", 1}, {"한국어", 6}} {
		if got := displayWidth(c.s); got != c.want {
			t.Errorf("displayWidth(%q) = %d, want %d", c.s, got, c.want)
		}
	}
}

// TestImpostorShownWithKey: a second key joining under a member's name
// cannot pass for them: wherever people read names (fetch, members, watch)
// both carry their short fingerprints. --json has "from" already.
func TestImpostorShownWithKey(t *testing.T) {
	reg := startUp(t, "lobby", "大厅")
	alice, mallory, bob := newTestUser(t, reg), newTestUser(t, reg), newTestUser(t, reg)
	for _, u := range []struct {
		u    *testUser
		name string
	}{{alice, "alice"}, {mallory, "alice"}, {bob, "bob"}} {
		u.u.ok(t, "join", "lobby", "--as", u.name)
		u.u.ok(t, "join", "大厅", "--as", u.name)
	}
	alice.ok(t, "send", "lobby", "from the real alice")
	mallory.ok(t, "send", "lobby", "pay mallory")
	bob.ok(t, "send", "lobby", "hi")
	keyed := regexp.MustCompile(`alice \[[a-z2-7]{4}-[a-z2-7]{4}\]: `)
	out := bob.ok(t, "fetch", "lobby")
	if n := len(keyed.FindAllString(out, -1)); n != 2 || !strings.Contains(out, "  bob: hi") {
		t.Errorf("fetch shows %d alices with their keys, want 2, and bob plain:\n%s", n, out)
	}
	if members := bob.ok(t, "members", "lobby"); len(regexp.MustCompile(`(?m)^alice \[`).FindAllString(members, -1)) != 2 {
		t.Errorf("members:\n%s", members)
	}

	// watch of two groups: each line marked with its group, the marks
	// padded to one display width, wide characters counted as two.
	ctx, cancel := context.WithCancel(context.Background())
	var out2, errb syncBuffer
	env := map[string]string{"HUDDLE_HOME": bob.home, "HUDDLE_REGISTRY": reg}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"watch", "lobby", "大厅"}, Env{Stdin: strings.NewReader(""), Stdout: &out2, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	}()
	deadline := time.Now().Add(waitTimeout)
	for strings.Count(out2.String(), "\n") < 2 && time.Now().Before(deadline) {
		alice.ok(t, "send", "lobby", "to lobby")
		alice.ok(t, "send", "大厅", "to the hall")
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitInterrupted {
		t.Errorf("watch ended with %d, want %d", code, ExitInterrupted)
	}
	var cols []int
	for _, line := range strings.Split(strings.TrimSpace(out2.String()), "\n") {
		label, rest, _ := strings.Cut(line, "]")
		pad := len(rest) - len(strings.TrimLeft(rest, " "))
		cols = append(cols, displayWidth(label+"]")+pad)
	}
	if len(cols) < 2 {
		t.Fatalf("watch printed %q", out2.String())
	}
	for _, c := range cols {
		if c != cols[0] {
			t.Errorf("watch's lines start their columns at %v, want one column:\n%s", cols, out2.String())
			break
		}
	}
}

// TestLookalikeNamesShownWithKey checks that names a terminal shows alike
// count as one name: a second key joining as "alice" with a blank at its
// end, a run of blanks, a no-break space or an invisible filler (U+3164,
// U+115F, a variation selector: none of them Cf, so the daemon's name rule
// lets them through) was shown as plain "alice", without its key; until
// session 13 so was one with letters of another script that look like
// Latin ones (Cyrillic а, Greek ο...), fullwidth ones, or I for l, and
// until its hostile round one with an accent written as a combining mark
// (jose + U+0301 beside josé), a letter of the mathematical alphabets or
// a ligature, and until session 14 one with a symbol drawn as an empty
// cell (the Braille blank U+2800) at its end.
func TestLookalikeNamesShownWithKey(t *testing.T) {
	alice := wire.Fingerprint{1}
	for i, pair := range [][2]string{
		{"alice", "alice "}, {"alice", " alice"}, {"alice", "alice\u3164"}, {"alice", "\u115Falice"},
		{"alice", "ali\u034Fce"}, {"alice", "alice\uFE0F"}, {"alice", "alice\u00A0"}, {"al ice", "al  ice"},
		{"alice", "\u0430lice"},                                                       // Cyrillic а
		{"alice", "\u0430l\u0456\u0441\u0435"},                                        // Cyrillic а, і, с, е
		{"alice", "a\u04CFice"},                                                       // Cyrillic palochka for l
		{"bob", "b\u03BFb"},                                                           // Greek omicron
		{"bob", "b\u0585b"},                                                           // Armenian oh
		{"ALICE", "\u0391LICE"},                                                       // Greek capital alpha
		{"ALICE", "\u13AALICE"},                                                       // Cherokee GO
		{"alice", "aIice"},                                                            // capital I for l
		{"alice", "\uFF41\uFF4C\uFF49\uFF43\uFF45"},                                   // fullwidth
		{"\u0430\u043D\u043D\u0430", "a\u043D\u043D\u0430"},                           // Latin a in a Cyrillic name
		{"emma", "ernrna"},                                                            // rn for m
		{"jos\u00E9", "jose\u0301"},                                                   // é as one character and as two
		{"\u00C5sa", "A\u030Asa"},                                                     // Å as one character and as two
		{"\u00EBlla", "\u0451lla"},                                                    // Cyrillic ё for ë
		{"\u00EBlla", "\u0435\u0308lla"},                                              // Cyrillic е with a combining diaeresis
		{"alice", "\U0001D41Alice"},                                                   // mathematical bold a
		{"alice", "\U0001D5BA\U0001D5C5\U0001D5C2\U0001D5BC\U0001D5BE"},               // mathematical sans-serif
		{"fiona", "\uFB01ona"},                                                        // fi ligature
		{"alice", "a\U0001D5A8ice"},                                                   // mathematical sans-serif capital I for l
		{"alice", "alice\u2800"}, {"alice", "\u2800alice"}, {"al ice", "al\u2800ice"}, // Braille blank
		{"alice", "alice\U0001D159"}, // musical null notehead
	} {
		real, fake := pair[0], pair[1]
		mallory := wire.Fingerprint{2, byte(i)}
		b := newNameBook()
		b.seeMembers([]client.Member{{Fingerprint: alice, Name: real}})
		if got := b.label(mallory, fake); !strings.HasSuffix(got, "["+mallory.Short()+"]") {
			t.Errorf("%q beside %q shown as %q, without its key", fake, real, got)
		}
		if got := b.label(alice, real); !strings.HasSuffix(got, "["+alice.Short()+"]") {
			t.Errorf("%q beside %q shown as %q, without its key", real, fake, got)
		}
	}
}

// TestLookalikeDropsFillers checks that a name with a filler (wire.Filler:
// U+3164 and its kin, U+2800...), a format or a control character in it
// looks like the name without it, wherever it stands: daemons refuse such
// names since session 20, but one of before, or a rogue daemon or
// registry, may still send one, and "alice" with U+3164 after it would
// pass for alice. A blank (U+2800, U+1D159) counts as a space, at either
// end as none. The page's lookalike (web/static/format.js) drops the same
// (TestWebLookalikeFillersShowDaemons); until session 21 it kept the
// format characters that are not default-ignorable (U+0600, U+FFF9...).
func TestLookalikeDropsFillers(t *testing.T) {
	n := 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !wire.Filler(r) && !unicode.In(r, unicode.Cf, unicode.Cc) {
			continue
		}
		n++
		inside := "alice"
		if blanks[r] {
			inside = "al ice"
		}
		for name, want := range map[string]string{"alice" + string(r): "alice", string(r) + "alice": "alice", "al" + string(r) + "ice": inside} {
			if got := lookalike(name); got != want {
				t.Errorf("%+q looks like %+q, want %q", name, got, want)
			}
		}
	}
	if n < 200 {
		t.Errorf("checked %d characters, want every filler, format and control character (over 200)", n)
	}
}

// TestUnlikeNamesApart checks that names that do not look alike stay
// apart, each shown without its key: the look-alike rule counts what a
// reader would confuse, not every near name.
func TestUnlikeNamesApart(t *testing.T) {
	for i, pair := range [][2]string{{"alice", "Alice"}, {"alice", "alicé"}, {"bob", "rob"}, {"anna", "\u0430\u043D\u043D\u0430"}, {"olga", "\u043E\u043B\u044C\u0433\u0430"}} {
		a, b := wire.Fingerprint{1, byte(i)}, wire.Fingerprint{2, byte(i)}
		book := newNameBook()
		book.see(a, pair[0])
		if got := book.label(b, pair[1]); got != pair[1] {
			t.Errorf("%q beside %q shown as %q, with its key", pair[1], pair[0], got)
		}
	}
}

// TestNameBookBounded checks that a daemon sending a new name and key with
// each message grows a watch's name book only so far (it grew with every
// one), and that a name the full book could not record is shown with its
// key, while those it holds are shown as before.
func TestNameBookBounded(t *testing.T) {
	b := newNameBook()
	alice := wire.Fingerprint{1}
	b.see(alice, "alice")
	var last string
	for i := range maxNamePairs + 1000 {
		fp := wire.Fingerprint{2, byte(i), byte(i >> 8), byte(i >> 16)}
		last = b.label(fp, fmt.Sprint("name", i))
		if i == maxNamePairs+999 && !strings.HasSuffix(last, "["+fp.Short()+"]") {
			t.Errorf("a name the full book did not record shown as %q, without its key", last)
		}
	}
	if b.pairs > maxNamePairs || len(b.names) > maxNamePairs || len(b.keys) > maxNamePairs {
		t.Errorf("the book holds %d pairs, %d keys, %d names; want at most %d", b.pairs, len(b.names), len(b.keys), maxNamePairs)
	}
	if got := b.label(alice, "alice"); got != "alice" {
		t.Errorf("alice, recorded before, shown as %q", got)
	}
}

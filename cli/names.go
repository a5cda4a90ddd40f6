package cli

import (
	"io"
	"strings"
	"unicode"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
	"golang.org/x/text/unicode/norm"
)

// nameBook decides where a display name needs its key beside it. Anyone may
// join under any name, so a name is shown with the short fingerprint of the
// key that wears it (alice [vyav-qimc]) when more than one key has been
// seen with that name in the group, or when the key has been seen under
// more than one name (it changed its name): there the name alone would let
// one member pass for another. Elsewhere the name is enough. --json output
// always carries the key in "from".
type nameBook struct {
	keys  map[string]map[wire.Fingerprint]bool // name, as it looks (lookalike) -> keys seen wearing it
	names map[wire.Fingerprint]map[string]bool // key -> names seen
	pairs int                                  // (key, name) pairs recorded, at most maxNamePairs
}

// maxNamePairs bounds what a nameBook records: a group's members and their
// renames are far fewer, but a daemon sends any names it likes, a new one
// with each message if it wants, to a watch that runs for days. Once the
// book is full, a name it has not recorded is shown with its key: the book
// can no longer tell it is alone.
const maxNamePairs = 1 << 16

func newNameBook() *nameBook {
	return &nameBook{keys: map[string]map[wire.Fingerprint]bool{}, names: map[wire.Fingerprint]map[string]bool{}}
}

// see records that key fp wears name (from a message or the member list),
// and reports whether the book holds that (it is full otherwise).
func (b *nameBook) see(fp wire.Fingerprint, name string) bool {
	if b.names[fp][name] {
		return true
	}
	if b.pairs >= maxNamePairs {
		return false
	}
	b.pairs++
	look := lookalike(name)
	if b.keys[look] == nil {
		b.keys[look] = map[wire.Fingerprint]bool{}
	}
	b.keys[look][fp] = true
	if b.names[fp] == nil {
		b.names[fp] = map[string]bool{}
	}
	b.names[fp][name] = true
	return true
}

// seeMembers records the group's members under their current names.
func (b *nameBook) seeMembers(ms []client.Member) {
	for _, m := range ms {
		b.see(m.Fingerprint, m.Name)
	}
}

// label returns how to show name worn by fp, after recording it.
func (b *nameBook) label(fp wire.Fingerprint, name string) string {
	if !b.see(fp, name) || len(b.keys[lookalike(name)]) > 1 || len(b.names[fp]) > 1 {
		return name + " [" + fp.Short() + "]"
	}
	return name
}

// labelMessage is label for a message's sender.
func (b *nameBook) labelMessage(m client.Message) string { return b.label(m.From, m.Name) }

// lookalike returns name as a terminal shows it, for telling names apart:
// without the characters it shows as nothing (default-ignorable ones, such
// as the Hangul fillers U+3164 and U+115F, variation selectors, U+034F:
// the daemons refuse all but the variation selectors since session 20,
// but a daemon of before, or a rogue daemon or registry, may still send
// them, and dropped they cost nothing; and every format and control
// character, which shown makes U+FFFD), with each run
// of blanks (spaces, U+00A0..., and the symbols drawn as nothing: blanks)
// one space, no blank at either end, and
// each letter that looks like a Latin one written as that one (Cyrillic а
// as a: confusables), and in one form (Unicode's canonical decomposition,
// NFD), so that "é" as one character and as e with a combining accent, which
// a terminal shows alike, are one name. Two keys whose names look alike so
// are shown with their keys.
func lookalike(name string) string {
	var mapped strings.Builder
	for _, r := range norm.NFD.String(name) {
		mapped.WriteString(confusable(r))
	}
	var b strings.Builder
	blank := false
	for _, r := range norm.NFD.String(mapped.String()) {
		switch {
		case unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Cf, unicode.Cc):
		case unicode.IsSpace(r) || blanks[r]:
			blank = b.Len() > 0
		default:
			if blank {
				b.WriteByte(' ')
				blank = false
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

// blanks are the characters drawn as an empty cell that are neither
// spaces nor default-ignorable, symbols names refuse since session 20
// (wire.Filler) and a daemon of before may send: the Braille pattern with
// no dots (U+2800), the null notehead
// of musical notation (U+1D159). "alice⠀" passed for "alice" until
// session 14. The page's lookalike (web/static/format.js) counts the same.
var blanks = map[rune]bool{'\u2800': true, '\U0001D159': true}

// displayWidth is how many terminal columns s takes: East Asian wide and
// fullwidth characters and emoji take two, combining marks and invisible
// format characters none. Columns of names line up by it.
func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

func runeWidth(r rune) int {
	switch {
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	case r < 0x1100:
		return 1
	}
	for _, w := range wideRanges {
		if r >= w[0] && r <= w[1] {
			return 2
		}
	}
	return 1
}

// wideRanges are the code points terminals draw two columns wide (East
// Asian Wide and Fullwidth, and the emoji blocks).
var wideRanges = [][2]rune{
	{0x1100, 0x115F}, {0x231A, 0x231B}, {0x2329, 0x232A}, {0x23E9, 0x23EC}, {0x23F0, 0x23F0}, {0x23F3, 0x23F3},
	{0x25FD, 0x25FE}, {0x2614, 0x2615}, {0x2648, 0x2653}, {0x267F, 0x267F}, {0x2693, 0x2693}, {0x26A1, 0x26A1},
	{0x26AA, 0x26AB}, {0x26BD, 0x26BE}, {0x26C4, 0x26C5}, {0x26CE, 0x26CE}, {0x26D4, 0x26D4}, {0x26EA, 0x26EA},
	{0x26F2, 0x26F3}, {0x26F5, 0x26F5}, {0x26FA, 0x26FA}, {0x26FD, 0x26FD}, {0x2705, 0x2705}, {0x270A, 0x270B},
	{0x2728, 0x2728}, {0x274C, 0x274C}, {0x274E, 0x274E}, {0x2753, 0x2755}, {0x2757, 0x2757}, {0x2795, 0x2797},
	{0x27B0, 0x27B0}, {0x27BF, 0x27BF}, {0x2B1B, 0x2B1C}, {0x2B50, 0x2B50}, {0x2B55, 0x2B55},
	{0x2E80, 0x303E}, {0x3041, 0x33FF}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xA000, 0xA4CF}, {0xA960, 0xA97F},
	{0xAC00, 0xD7A3}, {0xF900, 0xFAFF}, {0xFE10, 0xFE19}, {0xFE30, 0xFE6F}, {0xFF00, 0xFF60}, {0xFFE0, 0xFFE6},
	{0x16FE0, 0x16FE4}, {0x17000, 0x18CFF}, {0x1B000, 0x1B2FF}, {0x1F004, 0x1F004}, {0x1F0CF, 0x1F0CF},
	{0x1F18E, 0x1F18E}, {0x1F191, 0x1F19A}, {0x1F200, 0x1F251}, {0x1F300, 0x1F64F}, {0x1F680, 0x1F6FF},
	{0x1F7E0, 0x1F7EB}, {0x1F90C, 0x1F9FF}, {0x1FA70, 0x1FAFF}, {0x20000, 0x3FFFD},
}

// padRight pads s with spaces to width columns.
func padRight(s string, width int) string {
	for w := displayWidth(s); w < width; w++ {
		s += " "
	}
	return s
}

// writeTable writes rows as columns two spaces apart, padded by display
// width (text/tabwriter counts runes, so a CJK or emoji name pushed the
// columns after it out of line).
func writeTable(w io.Writer, rows [][]string) error {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			c = shown(c) // a peer's names, addresses and text
			r[i] = c
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], displayWidth(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(padRight(c, widths[i]+2))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

package cli

import (
	"strings"

	"golang.org/x/text/unicode/norm"
)

// confusables maps letters of other scripts that look like Latin letters
// or digits (and the few of Latin and ASCII that look like one another)
// to the one they are taken for: lookalike puts each name in that form, so
// that "аlice" with a Cyrillic а, "ΑLICE" with a Greek Α, "al1ce" and
// "alice" count as one name, worn by two keys, and are shown with their
// keys. It is a subset of Unicode's confusables (UTS #39, confusables.txt)
// for the scripts whose letters pass for Latin ones at a glance:
// Cyrillic, Greek, Armenian and Cherokee, Latin's own look-alikes (dotless
// i, script g, long s...), Roman numerals, and in ASCII I, 1 and | for l,
// 0 for O and m for rn. A character with a compatibility decomposition
// (fullwidth forms, ligatures, the mathematical alphabets U+1D400-1D7FF,
// superscripts...) is read as the letters it decomposes to (confusable),
// and lookalike puts accents in one form (NFD), so é as one character or
// two is one letter; an accented letter stays unlike the plain one.
//
// The page (web/static/confusables.js) uses the same table:
// TestPageConfusables writes it from this one.
var confusables = map[rune]string{
	// ASCII and Latin
	'I': "l", '1': "l", '|': "l", '0': "O", 'm': "rn",
	'\u0131': "i", '\u0237': "j", '\u0251': "a", '\u0261': "g", '\u0269': "i", '\u017F': "f", '\u01C0': "l",
	'\u2113': "l",
	// Roman numerals
	'\u2160': "l", '\u2164': "V", '\u2169': "X", '\u216D': "C", '\u216E': "D", '\u216F': "M",
	'\u2170': "i", '\u2174': "v", '\u2179': "x", '\u217C': "l", '\u217D': "c", '\u217E': "d", '\u217F': "rn",
	// Cyrillic
	'\u0430': "a", '\u0433': "r", '\u0435': "e", '\u043E': "o", '\u043F': "n", '\u0440': "p", '\u0441': "c",
	'\u0443': "y", '\u0445': "x", '\u0455': "s", '\u0456': "i", '\u0458': "j", '\u0475': "v", '\u04BB': "h",
	'\u04CF': "l", '\u0501': "d", '\u051B': "q", '\u051D': "w", '\u0431': "6",
	'\u0451': "\u00EB", '\u0457': "\u00EF", '\u0401': "\u00CB", '\u0407': "\u00CF",
	'\u0405': "S", '\u0406': "l", '\u0408': "J", '\u0410': "A", '\u0412': "B", '\u0415': "E", '\u0417': "3",
	'\u041A': "K", '\u041C': "M", '\u041D': "H", '\u041E': "O", '\u0420': "P", '\u0421': "C", '\u0422': "T",
	'\u0423': "Y", '\u0425': "X", '\u042C': "b", '\u04AE': "Y", '\u04C0': "l", '\u051A': "Q", '\u051C': "W",
	// Greek
	'\u03B1': "a", '\u03B3': "y", '\u03B9': "i", '\u03BD': "v", '\u03BF': "o", '\u03C1': "p", '\u03C5': "u",
	'\u03C7': "x", '\u03F1': "p", '\u03F2': "c", '\u03F3': "j",
	'\u037F': "J", '\u0391': "A", '\u0392': "B", '\u0395': "E", '\u0396': "Z", '\u0397': "H", '\u0399': "l",
	'\u039A': "K", '\u039C': "M", '\u039D': "N", '\u039F': "O", '\u03A1': "P", '\u03A4': "T", '\u03A5': "Y",
	'\u03A7': "X", '\u03F9': "C",
	// Armenian
	'\u0566': "q", '\u0570': "h", '\u0578': "n", '\u057D': "u", '\u0581': "g", '\u0585': "o",
	'\u053C': "L", '\u054D': "U", '\u054F': "S", '\u0555': "O",
	// Cherokee
	'\u13A2': "T", '\u13AA': "A", '\u13AB': "J", '\u13AC': "E", '\u13B3': "W", '\u13B7': "M", '\u13BB': "H",
	'\u13C3': "Z", '\u13D9': "V", '\u13DA': "S", '\u13DE': "L", '\u13DF': "C", '\u13E2': "P", '\u13E6': "K",
	'\u13F4': "B",
}

// confusable returns what r is taken for: its entry in confusables, else
// its compatibility decomposition (NFKD) read through confusables, so that
// fullwidth forms, ligatures (ﬁ), the mathematical alphabets (𝐚) and the
// like are the letters they are drawn as; r itself if none.
func confusable(r rune) string {
	if s, ok := confusables[r]; ok {
		return s
	}
	d := norm.NFKD.String(string(r))
	if d == string(r) {
		return d
	}
	var b strings.Builder
	for _, c := range d {
		if s, ok := confusables[c]; ok {
			b.WriteString(s)
		} else {
			b.WriteRune(c)
		}
	}
	return b.String()
}

package cli

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite web/static/confusables.js from cli/confusables.go")

// TestPageConfusables checks that the page's table of look-alike letters
// (web/static/confusables.js) is this package's: the page and the commands
// tell names apart alike. -update writes it.
func TestPageConfusables(t *testing.T) {
	path := filepath.Join("..", "web", "static", "confusables.js")
	want := confusablesJS()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is not cli/confusables.go's table: run go test ./cli -run TestPageConfusables -args -update", path)
	}
}

// confusablesJS is web/static/confusables.js: the table for the page.
func confusablesJS() string {
	keys := make([]rune, 0, len(confusables))
	for r := range confusables {
		keys = append(keys, r)
	}
	slices.Sort(keys)
	b := []byte("// Written from cli/confusables.go by `go test ./cli -run TestPageConfusables -args -update`: edit that, not this.\n" +
		"// Letters of other scripts (and of Latin and ASCII) that look like a Latin letter or digit, each with what it\n" +
		"// is taken for; format.js's lookalike reads names through it (README, \"Names\").\n" +
		"export const confusables = new Map([\n")
	for _, r := range keys {
		b = append(b, "  ['"...)
		b = appendJSChars(b, string(r))
		b = append(b, "', '"...)
		b = appendJSChars(b, confusables[r])
		b = append(b, "'],\n"...)
	}
	return string(append(b, "]);\n"...))
}

// appendJSChars writes s for a single-quoted JavaScript string: ASCII
// letters, digits and | as they are, anything else as \uXXXX.
func appendJSChars(b []byte, s string) []byte {
	for _, r := range s {
		if r < 0x80 && r != '\'' && r != '\\' {
			b = append(b, byte(r))
			continue
		}
		b = fmt.Appendf(b, `\u%04X`, r)
	}
	return b
}

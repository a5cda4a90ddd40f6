package wire

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// protocolDoc is the contract for other implementations, at the repository
// root.
var protocolDoc = filepath.Join("..", "PROTOCOL.md")

// exampleBlock finds each quoted frame of PROTOCOL.md: a marker comment
// naming a golden case, then a fenced block.
var exampleBlock = regexp.MustCompile("(?m)^<!-- example: ([a-z0-9-]+) -->\n```\n((?:.*\n)*?)```\n")

// TestProtocolExamples checks that every hex dump quoted in PROTOCOL.md is,
// byte for byte and with its diagnostic notation, what the code produces
// for the golden case it names. -update rewrites the blocks.
func TestProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]goldenCase{}
	for _, c := range goldenCases() {
		cases[c.name] = c
	}
	var failed bool
	found := map[string]bool{}
	out := exampleBlock.ReplaceAllStringFunc(string(doc), func(block string) string {
		m := exampleBlock.FindStringSubmatch(block)
		name, quoted := m[1], m[2]
		found[name] = true
		c, ok := cases[name]
		if !ok {
			t.Errorf("PROTOCOL.md quotes example %q, which is no golden case", name)
			failed = true
			return block
		}
		frame, err := c.encode()
		if err != nil {
			t.Fatal(err)
		}
		want, err := renderFrame(frame)
		if err != nil {
			t.Fatal(err)
		}
		if quoted != want {
			failed = true
			if !*update {
				t.Errorf("PROTOCOL.md example %s differs from the code:\nquoted:\n%s\ncode:\n%s", name, quoted, want)
			}
		}
		if b, err := parseHexDump(quoted); err == nil && !bytes.Equal(b, frame) && !*update {
			t.Errorf("PROTOCOL.md example %s: bytes %x, code %x", name, b, frame)
		}
		return "<!-- example: " + name + " -->\n```\n" + want + "```\n"
	})
	// The examples the contract promises.
	for _, name := range []string{"req-join", "req-send", "resp-sent", "req-fetch-after",
		"resp-messages", "resp-end", "resp-error-not-member"} {
		if !found[name] {
			t.Errorf("PROTOCOL.md lacks the %s example", name)
		}
	}
	if *update && failed {
		if err := os.WriteFile(protocolDoc, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("rewrote the examples of PROTOCOL.md")
	}
}

package cli

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestEntersCountedAsTheEditorReadsThem: CR and LF are each an Enter to
// x/term, but a CRLF in one read is one.
func TestEntersCountedAsTheEditorReadsThem(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{{"hi\r", 1}, {"hi\n", 1}, {"hi\r\nthere\r", 2}, {"\r\n\r\n", 2}, {"\n\r", 2}, {"\r\r", 2}, {"plain", 0}} {
		if got := enters([]byte(c.in)); got != c.want {
			t.Errorf("enters(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestEnterGateNeverHoldsForever: a print waits for an echoed line to be
// erased, but not for good should the count go wrong.
func TestEnterGateNeverHoldsForever(t *testing.T) {
	g := newEnterGate()
	g.typed([]byte("a\rb\r"))
	g.erased() // one of the two is never erased
	done := make(chan struct{})
	go func() { g.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("a print waited for good behind a miscounted Enter")
	}
	g.typed([]byte("c\r")) // and the count starts again from 0
	g.erased()
	g.wait()
}

// TestPipedLines: lines from a pipe, the last without its newline, and one
// longer than a frame cut at the frame (the daemon refuses it) without
// ending the input.
func TestPipedLines(t *testing.T) {
	long := strings.Repeat("x", 2<<20)
	read := pipedLines(strings.NewReader("one\r\n" + long + "\nthree"))
	var got []string
	for {
		l, err := read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	if len(got) != 3 || got[0] != "one\r" || len(got[1]) < 1<<20 || len(got[1]) > 2<<20 || got[2] != "three" {
		t.Errorf("lines %d: %q, %d bytes, %q", len(got), got[0], len(got[1]), got[len(got)-1])
	}
}

// TestEchoedRows counts the rows the line editor's echo of a sent line took
// (prompt "> " included), as x/term and the terminal lay it out: a row the
// editor's count fills ends with a new row, a wide character that does not
// fit wraps, and Enter starts one more.
func TestEchoedRows(t *testing.T) {
	for _, tc := range []struct {
		line  string
		width int
		want  int
	}{
		{"", 80, 1},
		{"hi", 80, 1},
		{strings.Repeat("x", 77), 80, 1},
		{strings.Repeat("x", 78), 80, 2}, // fills the row: the editor starts the next
		{strings.Repeat("x", 79), 80, 2},
		{strings.Repeat("word ", 80), 100, 5},
		{strings.Repeat("é", 78), 80, 2},   // one column each, as the editor counts
		{strings.Repeat("中文", 40), 110, 2}, // 160 columns: the terminal wraps before the editor would
		{strings.Repeat("中", 39), 80, 1},   // 2+78 columns: the row just filled, and Enter
		{strings.Repeat("中", 40), 80, 2},   // 2+80: the terminal wraps the last one
		{"hi", 0, 1},
	} {
		if got := echoedRows(tc.line, tc.width); got != tc.want {
			t.Errorf("echoedRows(%d runes, width %d) = %d, want %d", len([]rune(tc.line)), tc.width, got, tc.want)
		}
	}
}

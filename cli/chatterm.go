package cli

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/huddle-chat/huddle/wire"
)

// chatPrompt is the line editor's prompt.
const chatPrompt = "> "

// chatTerm is where a chat reads and writes.
type chatTerm struct {
	out      io.Writer
	readLine func() (string, error)
	restore  func()
	// terminal says the chat runs on a terminal (raw mode, line editor).
	terminal bool
	// interrupted says Ctrl-C was typed (raw mode reads it as a key).
	interrupted func() bool
}

// chatTerminal sets up input and output. On a terminal it switches to raw
// mode with a line editor that redraws the line being typed when a message
// is printed, and erases each sent line (the message comes back from the
// group, once, with its time and name). Otherwise it reads plain lines.
//
// The line editor is golang.org/x/term's, kept over a readline library
// (chzyer/readline, unmaintained since 2022, echoes a sent line the same
// way and would need the same erasing): the gate below is what makes the
// erasing safe, and it now counts Enters exactly as x/term reads them.
func chatTerminal(env Env) chatTerm {
	in, inOK := env.Stdin.(*os.File)
	o, outOK := env.Stdout.(*os.File)
	if inOK && outOK && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(o.Fd())) {
		if state, err := term.MakeRaw(int(in.Fd())); err == nil {
			g := newEnterGate()
			r := &gatedReader{r: in, g: g}
			t := term.NewTerminal(struct {
				io.Reader
				io.Writer
			}{r, o}, chatPrompt)
			// The editor wraps the line at the terminal's width: it follows
			// the terminal as it is resized (it used to keep the width it
			// started with, and edits of a wrapped line after a resize
			// were drawn over the wrong rows).
			var width atomic.Int64
			fit := func() {
				if w, h, err := term.GetSize(int(o.Fd())); err == nil {
					t.SetSize(w, h)
					width.Store(int64(w))
				}
			}
			fit()
			stopResize := followResize(fit)
			read := func() (string, error) {
				line, err := t.ReadLine()
				if err == nil || errors.Is(err, term.ErrPasteIndicator) {
					// Move up over the echoed line, every row it wrapped
					// onto, and clear it: the message comes back from the
					// group with its time and name. The gate kept every
					// other print out of the way.
					o.WriteString(strings.Repeat("\x1b[1A\x1b[2K", echoedRows(line, int(width.Load()))) + "\r")
					g.erased()
					err = nil
				}
				return line, err
			}
			var once sync.Once
			restore := func() {
				once.Do(func() {
					stopResize()
					g.release()
					// Clear the prompt, so the shell's comes back on a clean line.
					o.WriteString("\r\x1b[2K")
					term.Restore(int(in.Fd()), state)
				})
			}
			return chatTerm{out: gatedWriter{t, g}, readLine: read, restore: restore, terminal: true, interrupted: r.ctrlC.Load}
		}
	}
	return chatTerm{out: env.Stdout, readLine: pipedLines(env.Stdin), restore: func() {}, interrupted: func() bool { return false }}
}

// echoedRows is how many rows of a terminal width columns wide the line
// editor's echo of a sent line took, prompt included. Two things end a
// row: the terminal, when the next character does not fit (a wide one
// takes two columns), and the editor, which counts a rune a column and
// writes a newline of its own each time its count fills a row. Enter
// starts one more.
func echoedRows(line string, width int) int {
	if width <= 0 {
		return 1
	}
	rows, col, count := 0, len(chatPrompt), len(chatPrompt)
	for _, r := range line {
		w := runeWidth(r)
		if col+w > width {
			rows, col = rows+1, 0 // the terminal wraps
		}
		col += w
		if count++; count%width == 0 {
			rows, col = rows+1, 0 // the editor's own newline
		}
	}
	return rows + 1
}

// pipedLines reads lines from a pipe. A line longer than a frame is cut
// there (the daemon refuses it as too large, and says so), and the rest of
// it skipped: reading goes on after it.
func pipedLines(r io.Reader) func() (string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	return func() (string, error) {
		var line []byte
		for {
			chunk, err := br.ReadSlice('\n')
			if len(line) <= wire.MaxFrameSize {
				line = append(line, chunk...)
			}
			switch {
			case err == bufio.ErrBufferFull:
				continue
			case err == io.EOF && len(line) > 0:
				return string(line), nil
			case err != nil:
				return "", err
			}
			return strings.TrimSuffix(string(line), "\n"), nil
		}
	}
}

// enterGate holds messages back between the moment Enter reaches the line
// editor (which echoes a new line) and the moment that echoed line is
// erased, so the line erased is never a message printed in between.
//
// It counts the Enters in what the editor reads, as the editor does: CR
// and LF are each an Enter, except an LF right after a CR in the same
// read, which x/term takes as one with it (it used to count both, and
// after CRLF input the count never came back to 0, holding every message
// back for good). Should the count still go wrong, a print waits at most
// maxHold, and the count starts again from 0.
type enterGate struct {
	mu      sync.Mutex
	pending int           // Enters read but not yet erased
	drained chan struct{} // closed when pending comes back to 0
}

// maxHold bounds how long a print waits for an echoed line to be erased:
// far longer than the few microseconds it takes, far shorter than anyone
// would call a freeze.
const maxHold = 300 * time.Millisecond

func newEnterGate() *enterGate {
	g := &enterGate{drained: make(chan struct{})}
	close(g.drained)
	return g
}

// enters counts the Enters in p as x/term reads them.
func enters(p []byte) int {
	n := 0
	for i, b := range p {
		switch b {
		case '\r':
			n++
		case '\n':
			if i == 0 || p[i-1] != '\r' {
				n++
			}
		}
	}
	return n
}

// typed counts the Enters in keyboard input before the editor sees it.
func (g *enterGate) typed(p []byte) {
	if n := enters(p); n > 0 {
		g.mu.Lock()
		if g.pending == 0 {
			g.drained = make(chan struct{})
		}
		g.pending += n
		g.mu.Unlock()
	}
}

// erased records that one echoed line is gone.
func (g *enterGate) erased() {
	g.mu.Lock()
	if g.pending > 0 {
		g.pending--
		if g.pending == 0 {
			close(g.drained)
		}
	}
	g.mu.Unlock()
}

// release lets every waiting print through (at exit, or when the count
// went wrong).
func (g *enterGate) release() {
	g.mu.Lock()
	if g.pending > 0 {
		g.pending = 0
		close(g.drained)
	}
	g.mu.Unlock()
}

// wait blocks while an echoed line awaits erasing, at most maxHold.
func (g *enterGate) wait() {
	g.mu.Lock()
	ch := g.drained
	g.mu.Unlock()
	t := time.NewTimer(maxHold)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		g.release()
	}
}

type gatedReader struct {
	r     io.Reader
	g     *enterGate
	ctrlC atomic.Bool // a Ctrl-C was read
}

func (r *gatedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.g.typed(p[:n])
	if bytes.IndexByte(p[:n], 0x03) >= 0 {
		r.ctrlC.Store(true)
	}
	return n, err
}

type gatedWriter struct {
	w io.Writer
	g *enterGate
}

func (w gatedWriter) Write(p []byte) (int, error) {
	w.g.wait()
	return w.w.Write(p)
}

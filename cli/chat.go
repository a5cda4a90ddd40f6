package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

const chatHelp = `Type a line and press Enter to send it. Commands:
  /members   who is in the group
  /info      the group's limits and log
  /help      this text
  /quit      leave the chat (you stay a member; Ctrl-D works too)
`

func runChat(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var as string
	var history int
	fs := newFlags(env, "chat", "GROUP [--as NAME] [--history N]",
		"Chat in GROUP: lines you type are sent, messages from everyone appear as they arrive.\nWorks with standard input from a pipe too (each line is sent; messages print as they come).\n\n"+chatHelp,
		"  huddle chat lobby\n  huddle chat lobby --as alice --history 50")
	fs.StringVar(&as, "as", "", "join (or rename yourself) under this name first")
	fs.IntVar(&history, "history", 20, "show this many earlier messages first")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "chat", fs.Args())
	if !ok {
		return code
	}
	if history < 0 {
		return usageErr(env, "chat", "--history must not be negative")
	}

	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	s, err := open(octx, env, "chat", &cf)
	if err != nil {
		cancel()
		return fail(env, "chat", err)
	}
	defer s.Close()
	g, _, err := s.group(octx, ref)
	if err == nil && as != "" {
		_, err = g.Join(octx, as, nil)
	}
	var info wire.Info
	if err == nil {
		info, err = g.Info(octx)
	}
	cancel()
	if err != nil {
		return fail(env, "chat", err)
	}
	if !info.Member {
		return fail(env, "chat", fmt.Errorf("%s: you are not a member: %w", info.Name, client.ErrNotMember))
	}

	out, restore, readLine := chatTerminal(env)
	defer restore()
	c := &chat{env: env, out: out, g: g, info: info, me: s.client.Fingerprint(), timeout: cf.timeout}
	fmt.Fprintf(out, "-- %s: %d members; /help for commands, /quit to leave --\n", info.Name, info.Members)

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	q := client.Query{After: info.Last - min(info.Last, uint64(history)), Epoch: info.Epoch}
	var wg sync.WaitGroup
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchErr <- c.follow(wctx, q)
		stop()
	}()
	code = c.typeLoop(wctx, readLine)
	stop()
	wg.Wait()
	if err := <-watchErr; err != nil && code == ExitOK && ctx.Err() == nil {
		return fail(env, "chat", err)
	}
	if code == ExitOK && ctx.Err() != nil {
		return ExitInterrupted // Ctrl-C or SIGTERM, not /quit or the end of input
	}
	return code
}

// chat is one interactive session.
type chat struct {
	env     Env
	out     io.Writer // serialized by mu
	mu      sync.Mutex
	g       *client.Group
	info    wire.Info
	me      wire.Fingerprint
	timeout time.Duration
}

func (c *chat) printf(format string, args ...any) {
	c.mu.Lock()
	fmt.Fprintf(c.out, format, args...)
	c.mu.Unlock()
}

// follow prints the group's messages as they arrive until ctx ends.
func (c *chat) follow(ctx context.Context, q client.Query) error {
	for ev, err := range c.g.Watch(ctx, q) {
		if err != nil {
			return err
		}
		switch ev.Kind {
		case client.EventMessage:
			m := ev.Message
			name := m.Name
			if m.From == c.me {
				name += " (you)"
			}
			c.printf("%s %s: %s\n", m.Time.Local().Format("15:04:05"), name, printable(m.Body))
		case client.EventGap:
			c.printf("-- messages #%d..#%d were dropped by retention --\n", ev.From, ev.To)
		case client.EventReset:
			c.printf("-- the group's daemon restarted; its history was reset --\n")
		}
	}
	return nil
}

// typeLoop reads lines and sends them until /quit, end of input, or ctx.
// Lines are read on another goroutine, since reading cannot be cancelled,
// but one at a time: the next read (which draws the next prompt) starts only
// once the line before was handled, so nothing draws a prompt after /quit.
func (c *chat) typeLoop(ctx context.Context, readLine func() (string, error)) int {
	lines := make(chan string)
	next := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			l, err := readLine()
			if err != nil {
				done <- err
				return
			}
			select {
			case lines <- l:
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
			select {
			case <-next:
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ExitOK
		case <-done:
			return ExitOK
		case line := <-lines:
			if quit := c.handle(ctx, line); quit {
				return ExitOK
			}
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				return ExitOK
			}
		}
	}
}

// handle sends a typed line or runs the command it holds, and reports
// whether it was /quit.
func (c *chat) handle(ctx context.Context, line string) bool {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return false
	}
	if strings.HasPrefix(line, "/") {
		return c.command(ctx, line)
	}
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	_, err := c.g.Send(sctx, []byte(line))
	cancel()
	if err != nil {
		msg, _ := explain(err)
		c.printf("-- not sent: %s --\n", msg)
	}
	return false
}

// command runs a slash command and reports whether it was /quit.
func (c *chat) command(ctx context.Context, line string) bool {
	cmd, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	switch cmd {
	case "/quit", "/exit", "/q":
		return true
	case "/help", "/?":
		c.printf("%s", chatHelp)
	case "/members", "/who":
		ms, err := c.g.Members(ctx)
		if err != nil {
			msg, _ := explain(err)
			c.printf("-- %s --\n", msg)
			return false
		}
		var names []string
		for _, m := range ms {
			n := m.Name
			if m.Fingerprint == c.me {
				n += " (you)"
			}
			names = append(names, n)
		}
		c.printf("-- %d members: %s --\n", len(ms), strings.Join(names, ", "))
	case "/info":
		in, err := c.g.Info(ctx)
		if err != nil {
			msg, _ := explain(err)
			c.printf("-- %s --\n", msg)
			return false
		}
		c.printf("-- %s: %d members, messages #%d..#%d, max message %s --\n",
			in.Name, in.Members, in.First, in.Last, size(in.Limits.MaxMessageBytes))
	default:
		c.printf("-- unknown command %s; /help lists them --\n", cmd)
	}
	return false
}

// chatTerminal sets up input and output. On a terminal it switches to raw
// mode with a line editor that redraws the line being typed when a message
// is printed, and erases each sent line (the message comes back from the
// group, once, with its time and name). Otherwise it reads plain lines.
func chatTerminal(env Env) (out io.Writer, restore func(), readLine func() (string, error)) {
	in, inOK := env.Stdin.(*os.File)
	o, outOK := env.Stdout.(*os.File)
	if inOK && outOK && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(o.Fd())) {
		if state, err := term.MakeRaw(int(in.Fd())); err == nil {
			g := newEnterGate()
			t := term.NewTerminal(struct {
				io.Reader
				io.Writer
			}{gatedReader{in, g}, o}, "> ")
			if w, h, err := term.GetSize(int(o.Fd())); err == nil {
				t.SetSize(w, h)
			}
			read := func() (string, error) {
				line, err := t.ReadLine()
				if err == nil || errors.Is(err, term.ErrPasteIndicator) {
					// Move up over the echoed line and clear it: the
					// message comes back from the group with its time and
					// name. The gate kept every other print out of the way.
					o.WriteString("\x1b[1A\x1b[2K\r")
					g.erased()
					err = nil
				}
				return line, err
			}
			restore := func() {
				g.release()
				// Clear the prompt, so the shell's comes back on a clean line.
				o.WriteString("\r\x1b[2K")
				term.Restore(int(in.Fd()), state)
			}
			return gatedWriter{t, g}, restore, read
		}
	}
	sc := bufio.NewScanner(env.Stdin)
	sc.Buffer(make([]byte, 64<<10), wire.MaxFrameSize)
	read := func() (string, error) {
		if sc.Scan() {
			return sc.Text(), nil
		}
		if err := sc.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}
	return env.Stdout, func() {}, read
}

// enterGate holds messages back between the moment Enter reaches the line
// editor (which echoes a new line) and the moment that echoed line is
// erased, so the line erased is never a message printed in between.
type enterGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending int // Enters read but not yet erased
}

func newEnterGate() *enterGate {
	g := &enterGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// typed counts the Enters in keyboard input before the editor sees it.
func (g *enterGate) typed(p []byte) {
	n := bytes.Count(p, []byte{'\r'}) + bytes.Count(p, []byte{'\n'})
	if n > 0 {
		g.mu.Lock()
		g.pending += n
		g.mu.Unlock()
	}
}

// erased records that one echoed line is gone.
func (g *enterGate) erased() {
	g.mu.Lock()
	if g.pending > 0 {
		g.pending--
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// release lets every waiting print through (at exit).
func (g *enterGate) release() {
	g.mu.Lock()
	g.pending = 0
	g.cond.Broadcast()
	g.mu.Unlock()
}

// wait blocks while an echoed line awaits erasing.
func (g *enterGate) wait() {
	g.mu.Lock()
	for g.pending > 0 {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

type gatedReader struct {
	r io.Reader
	g *enterGate
}

func (r gatedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.g.typed(p[:n])
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

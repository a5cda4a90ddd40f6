package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

const chatHelp = `Type a line and press Enter to send it. Commands:
  /members   who is in the group
  /info      the group's limits and log
  /retry     send again the lines that could not be sent (done by itself on reconnecting)
  /drop      forget the lines that could not be sent
  /help      this text
  /quit      leave the chat (you stay a member; Ctrl-D works too)
A line that starts with / is a command; to send one that starts with /, double it: //like this.
`

func runChat(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var as, secretFile string
	var history int
	fs := newFlags(env, "chat", "GROUP [--as NAME] [--secret-file FILE] [--history N] [--json]",
		"Chat in GROUP: lines you type are sent, messages from everyone appear as they arrive.\nWorks with standard input from a pipe too (each line is sent; messages print as they come; at the end of\nthe input, chat waits for its own messages to come back before it exits).\nWith --json, messages print as fetch --json prints them and notices as objects with an \"event\" field.\n\n"+chatHelp,
		"  huddle chat lobby\n  huddle chat lobby --as alice --history 50\n  huddle chat ops --as alice --secret-file ops.secret\n  printf 'build passed\\n' | huddle chat builds --json")
	fs.StringVar(&as, "as", "", "join (or rename yourself) under this name first")
	fs.StringVar(&secretFile, "secret-file", "", "join first with a private group's secret read from this file (under --as NAME, else the name you have or your user name)")
	fs.Var(newCount(&history, 20, 0, math.MaxInt32), "history", "show this many earlier messages first")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "chat", fs.Args())
	if !ok {
		return code
	}
	secret, code, ok := joinFlags(env, "chat", as, secretFile)
	if !ok {
		return code
	}

	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	s, err := open(octx, env, "chat", &cf)
	if err != nil {
		cancel()
		return fail(env, "chat", err)
	}
	defer s.Close()
	g, e, err := s.group(octx, ref)
	if err == nil && (as != "" || secret != nil) {
		name := as
		if name == "" {
			// As join does: the name one has, else the user's.
			if name, err = currentName(octx, g, s.client.Fingerprint()); err == nil && name == "" {
				name = defaultName(env)
			}
		}
		if err == nil {
			_, err = g.Join(octx, name, secret)
			err = joinRefusal(err, "chat", ref, secretFile)
		}
	}
	var info client.Info
	if err == nil {
		info, err = g.Info(octx)
	}
	var members []client.Member
	if err == nil && info.Member {
		members, err = g.Members(octx)
	}
	cancel()
	if err != nil {
		return fail(env, "chat", err)
	}
	if !info.Member {
		// Say how to join from here: chat joins with --as (and the
		// secret of a private group).
		how := fmt.Sprintf("huddle chat %s --as NAME", shellWord(strings.TrimSpace(ref)))
		if info.Private {
			how += " --secret-file FILE"
		}
		return fail(env, "chat", &refusal{fmt.Sprintf("not a member of %s; join it first: %s", shown(info.Name), how)})
	}
	s.remember(ctx, g, e)

	t := chatTerminal(env)
	defer t.restore()
	c := &chat{
		env: env, out: t.out, json: cf.json, g: g, info: info, me: s.client.Fingerprint(), timeout: cf.timeout, terminal: t.terminal,
		names: newNameBook(), historyDone: make(chan struct{}), delivered: make(chan struct{}, 1), retryNow: make(chan struct{}, 1),
	}
	c.names.seeMembers(members)
	if c.json {
		c.event("start", "uuid", info.Group.String(), "members", info.Members)
	} else {
		c.printf("-- %s: %s; /help for commands, /quit to exit --\n", shown(info.Name), count(info.Members, "member", "members"))
	}

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	from := info.Last - min(info.Last, uint64(history))
	c.historyTo = info.Last
	if from == info.Last {
		c.historyShown() // no history to show
	}
	q := client.Query{After: from, Epoch: info.Epoch, Status: true}
	var wg sync.WaitGroup
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchErr <- c.follow(wctx, q)
		stop()
	}()
	if !t.terminal {
		// From a pipe, show the history before the input can end the chat
		// (</dev/null used to exit before a line of it was printed).
		c.wait(wctx, c.historyDone)
	}
	quit := c.typeLoop(wctx, t.readLine)
	if !quit && !t.terminal && ctx.Err() == nil {
		// The end of piped input: wait for our own last message to come
		// back from the group, as it would have on a terminal.
		c.waitOwn(wctx)
	}
	stop()
	wg.Wait()
	if t.interrupted() || ctx.Err() != nil {
		return ExitInterrupted // Ctrl-C or SIGTERM, not /quit or the end of input
	}
	// Off the terminal's prompt before saying why the chat ended: the
	// words used to follow "> " on the prompt's line.
	t.restore()
	if err := <-watchErr; err != nil {
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeNotMember {
			// Left from elsewhere, or removed: say how to come back from
			// here, not the generic "huddle join GROUP".
			err = &refusal{fmt.Sprintf("%v; join it again to chat: huddle chat %s --as NAME", err, shellWord(strings.TrimSpace(ref)))}
		}
		return fail(env, "chat", err)
	}
	if n := c.unsentCount(); n > 0 {
		fmt.Fprintf(env.Stderr, "huddle chat: %s could not be sent\n", count(uint64(n), "line", "lines"))
		return ExitUnreachable
	}
	return ExitOK
}

// chat is one interactive session.
type chat struct {
	env     Env
	out     io.Writer // serialized by mu
	mu      sync.Mutex
	json    bool
	g       *client.Group
	info    client.Info
	me      wire.Fingerprint
	timeout time.Duration
	names   *nameBook // used by follow and command, under mu

	// historyTo is the last message of the history shown on entry;
	// historyDone is closed once it (or what retention left of it) is shown.
	historyTo   uint64
	historyDone chan struct{}
	historyOnce sync.Once

	// lastSent is the sequence number of our last acknowledged message and
	// lastShown the last shown, both under mu; delivered signals a new one
	// shown.
	lastSent, lastShown uint64
	delivered           chan struct{}

	// unsent are the lines that could not be sent, kept with their message
	// IDs so that sending them again never stores one twice; under mu.
	unsent   []client.Outgoing
	retryNow chan struct{} // the watch is back: typeLoop sends unsent again

	// terminal: a person types (not a pipe); lost: the watch has lost the
	// daemon and not yet found it again, under mu. A line typed on a
	// terminal while lost is kept at once: sending it would wait the whole
	// --timeout for a daemon known gone, with no prompt and the line
	// erased.
	terminal bool
	lost     bool
}

func (c *chat) printf(format string, args ...any) {
	c.mu.Lock()
	fmt.Fprintf(c.out, format, args...)
	c.mu.Unlock()
}

// event prints a notice for --json: an object with "event", "group" and
// the given keys and values, in that order, which README.md lists for each
// event (a map's keys came out sorted until session 23: a gap was {event,
// from_seq, group, to_seq}).
func (c *chat) event(kind string, kv ...any) {
	obj := orderedObject{{"event", kind}, {"group", c.info.Name}}
	for i := 0; i+1 < len(kv); i += 2 {
		obj = append(obj, objectField{kv[i].(string), kv[i+1]})
	}
	c.mu.Lock()
	printJSON(c.out, obj)
	c.mu.Unlock()
}

// orderedObject is a JSON object whose keys print in its order: the
// events of huddle chat --json, each its own set of keys.
type orderedObject []objectField

type objectField struct {
	key   string
	value any
}

func (o orderedObject) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, f := range o {
		if i > 0 {
			b = append(b, ',')
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

// chatMemberJSON is a member in chat --json's answer to /members, its
// keys in README.md's order (sorted, from a map, until session 23).
type chatMemberJSON struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
	You         bool   `json:"you"`
	Online      bool   `json:"online"`
}

// notice tells the user something: a line between dashes, or, under
// --json, an event object.
func (c *chat) notice(kind, text string, kv ...any) {
	if c.json {
		c.event(kind, kv...)
		return
	}
	c.printf("-- %s --\n", shown(text))
}

// wait waits for ch, at most the command's timeout, or until ctx ends.
func (c *chat) wait(ctx context.Context, ch <-chan struct{}) {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitOwn waits until the last message this chat sent has been shown, at
// most the command's timeout.
func (c *chat) waitOwn(ctx context.Context) {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		done := c.lastShown >= c.lastSent
		c.mu.Unlock()
		if done {
			return
		}
		select {
		case <-c.delivered:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// follow prints the group's messages as they arrive until ctx ends, and
// says when the connection is lost and back.
func (c *chat) follow(ctx context.Context, q client.Query) error {
	lost := false
	for ev, err := range c.g.Watch(ctx, q) {
		if err != nil {
			return err
		}
		switch ev.Kind {
		case client.EventMessage:
			c.show(ev.Message)
		case client.EventGap:
			// from_seq and to_seq, as watch's: "from" is a message's sender.
			c.notice("gap", fmt.Sprintf("messages #%d..#%d were dropped by retention", ev.From, ev.To), "from_seq", ev.From, "to_seq", ev.To)
			if ev.To >= c.historyTo {
				c.historyShown()
			}
		case client.EventReset:
			c.notice("reset", "the group's daemon restarted; its history was reset", "epoch", ev.Epoch)
			c.historyShown()
		case client.EventInterrupted:
			if !lost {
				why := reason(ev.Err)
				c.notice("connection_lost", "connection lost ("+why+"); reconnecting", "error", why)
				lost = true
				c.mu.Lock()
				c.lost = true
				c.mu.Unlock()
			}
		case client.EventLive:
			if lost {
				c.notice("reconnected", "reconnected")
				lost = false
				c.mu.Lock()
				c.lost = false
				c.mu.Unlock()
				select {
				case c.retryNow <- struct{}{}:
				default:
				}
			}
		}
	}
	return nil
}

// show prints one message.
func (c *chat) show(m client.Message) {
	c.mu.Lock()
	if c.json {
		printJSON(c.out, messageJSON{Seq: m.Seq, TS: jsonTime(m.Time), MsgID: m.ID.String(), From: m.From.String(), Name: m.Name, Text: string(m.Body)})
	} else {
		name := c.names.labelMessage(m)
		if m.From == c.me {
			name += " (you)"
		}
		fmt.Fprintf(c.out, "%s %s: %s\n", m.Time.Local().Format("15:04:05"), shown(name), printable(m.Body))
	}
	if m.Seq > c.lastShown {
		c.lastShown = m.Seq
	}
	c.mu.Unlock()
	select {
	case c.delivered <- struct{}{}:
	default:
	}
	if m.Seq >= c.historyTo {
		c.historyShown()
	}
}

func (c *chat) historyShown() { c.historyOnce.Do(func() { close(c.historyDone) }) }

// reason says in a few words why the daemon could not be used.
func reason(err error) string {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return we.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, client.ErrUnreachable):
		return "the daemon does not answer"
	}
	return firstLine(withoutGoText(err))
}

// firstLine is the first line of msg (explain's advice goes on others).
func firstLine(msg string) string {
	line, _, _ := strings.Cut(msg, "\n")
	return line
}

// typeLoop reads lines and sends them until /quit (quit is true), the end
// of input, or ctx. Lines are read on another goroutine, since reading
// cannot be cancelled, but one at a time: the next read (which draws the
// next prompt) starts only once the line before was handled, so nothing
// draws a prompt after /quit.
func (c *chat) typeLoop(ctx context.Context, readLine func() (string, error)) (quit bool) {
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
			return false
		case <-done:
			return false
		case <-c.retryNow:
			c.retry(ctx)
		case line := <-lines:
			if quit := c.handle(ctx, line); quit {
				return true
			}
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				return false
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
	if strings.HasPrefix(line, "//") {
		line = line[1:] // a line that starts with / , escaped
	} else if strings.HasPrefix(line, "/") {
		return c.command(ctx, line)
	}
	c.send(ctx, []client.Outgoing{{ID: client.NewID(), Body: []byte(line)}})
	return false
}

// send sends msgs (after any lines still unsent, so the order holds).
// Those that fail for a reason a retry may cure (the daemon unreachable or
// busy) are kept, with their IDs, for a retry; the others are dropped with
// the reason.
func (c *chat) send(ctx context.Context, msgs []client.Outgoing) {
	c.mu.Lock()
	queued := len(c.unsent) > 0
	lost := !queued && c.lost && c.terminal
	if queued || lost {
		c.unsent = append(c.unsent, msgs...)
	}
	c.mu.Unlock()
	if queued {
		c.notice("queued", "not connected: kept to send when the connection is back (/retry, /drop)")
		return
	}
	if lost {
		c.notice("not_sent", "not sent (connection lost); kept to send again when the connection is back (/retry now, /drop to forget)",
			"msg_id", msgs[0].ID.String(), "error", "connection lost", "kept", true)
		return
	}
	for i, m := range msgs {
		// Paced: a line typed or piped faster than the group's send rate
		// waits its turn; the connection is fine, nothing is to be kept.
		acks, err := sendPaced(ctx, c.timeout, c.g, []client.Outgoing{m})
		if err == nil {
			c.mu.Lock()
			c.lastSent = max(c.lastSent, acks[0].Seq)
			c.mu.Unlock()
			continue
		}
		// A send in doubt (client.ErrInDoubt: the daemon may have
		// stored it) is never said "not sent", and is kept, whatever
		// cut it short: sent again under its ID it is stored once, and
		// its ack settles it. It was "not sent" (until session 19), and
		// dropped when the error was not one a retry may cure.
		doubt := errors.Is(err, client.ErrInDoubt)
		if (!retryable(err) && !doubt) || ctx.Err() != nil {
			if doubt {
				text, why := c.doubtNotice(err, m.ID, false)
				c.notice("in_doubt", text, "msg_id", m.ID.String(), "error", why, "kept", false)
				continue
			}
			msg, _ := explain(err)
			c.notice("not_sent", "not sent: "+firstLine(msg), "msg_id", m.ID.String(), "error", firstLine(msg), "kept", false)
			continue
		}
		c.mu.Lock()
		c.unsent = append(c.unsent, msgs[i:]...)
		c.mu.Unlock()
		if doubt {
			text, why := c.doubtNotice(err, m.ID, true)
			c.notice("in_doubt", text, "msg_id", m.ID.String(), "error", why, "kept", true)
			return
		}
		why := reason(err)
		c.notice("not_sent", "not sent ("+why+"); kept to send again when the connection is back (/retry now, /drop to forget)",
			"msg_id", m.ID.String(), "error", why, "kept", true)
		return
	}
}

// doubtNotice is the notice of a line whose send is in doubt (err matches
// client.ErrInDoubt), and the reason its --json event gives: what is true
// of it (it may have been stored), and what settles it (a send under its
// ID, stored once): kept, this chat sends it again so; not kept (its
// error is not one a retry may cure, or the chat is ending), the user
// must. A try refused whole (a retry of a line an earlier try left in
// doubt: client.RefusedWhole) has a refusal that may read "nothing was
// stored", true of that try only: it is said as that try's (until
// session 20 the notice quoted it as the line's whole outcome, and a line
// not kept named its ID but not how to settle it).
func (c *chat) doubtNotice(err error, id client.ID, kept bool) (text, why string) {
	var we *wire.Error
	switch {
	case !errors.As(err, &we) && errors.Is(err, context.Canceled):
		why = "cut short as the chat ends"
	default:
		// reason's text of an error that is no server's is the client's,
		// which says its doubt already: said once.
		const said = outcomeUnknown + " (it may have been stored)"
		why = strings.TrimSuffix(strings.ReplaceAll(reason(err), said+": ", ""), ": "+said)
	}
	if client.RefusedWhole(err) {
		text = "outcome unknown: an earlier try of it may have been stored; this try was refused, and stored nothing itself (" + why + ")"
	} else {
		text = "outcome unknown (" + why + "): it may have been stored"
	}
	if kept {
		return text + "; kept to send again under its ID, stored once, when the connection is back (/retry now, /drop to forget)", why
	}
	return fmt.Sprintf("%s; not kept: to settle it, send it again under its ID, which stores it once: huddle send --id %s %s 'the same text'",
		text, id, shellWord(c.info.Name)), why
}

// retryable reports whether err is one a later attempt may not get.
func retryable(err error) bool {
	return errors.Is(err, client.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrRateLimited)
}

// retry sends the unsent lines again, with their IDs: one the daemon had
// stored after all is acknowledged, not stored twice.
func (c *chat) retry(ctx context.Context) {
	c.mu.Lock()
	msgs := c.unsent
	c.unsent = nil
	c.mu.Unlock()
	if len(msgs) > 0 {
		c.notice("retrying", fmt.Sprintf("sending %s again", count(uint64(len(msgs)), "unsent line", "unsent lines")), "lines", len(msgs))
		c.send(ctx, msgs)
	}
}

func (c *chat) unsentCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.unsent)
}

// command runs a slash command and reports whether it was /quit.
func (c *chat) command(ctx context.Context, line string) bool {
	cmd, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	switch cmd {
	case "/quit", "/exit", "/q":
		return true
	case "/help", "/?":
		if c.json {
			c.event("help", "text", chatHelp)
		} else {
			c.printf("%s", chatHelp)
		}
	case "/retry":
		if c.unsentCount() == 0 {
			c.notice("retrying", "nothing to send again", "lines", 0)
		}
		c.retry(ctx)
	case "/drop":
		c.mu.Lock()
		n := len(c.unsent)
		c.unsent = nil
		c.mu.Unlock()
		c.notice("dropped", fmt.Sprintf("forgot %s", count(uint64(n), "unsent line", "unsent lines")), "lines", n)
	case "/members", "/who":
		ms, err := c.g.Members(octx)
		if err != nil {
			msg, _ := explain(err)
			c.notice("error", firstLine(msg), "error", firstLine(msg))
			return false
		}
		if c.json {
			var list []chatMemberJSON
			for _, m := range ms {
				list = append(list, chatMemberJSON{Name: m.Name, Fingerprint: m.Fingerprint.String(), You: m.Fingerprint == c.me, Online: m.Online})
			}
			c.event("members", "members", list)
			return false
		}
		c.mu.Lock()
		c.names.seeMembers(ms)
		var names []string
		for _, m := range ms {
			n := shown(c.names.label(m.Fingerprint, m.Name))
			if m.Fingerprint == c.me {
				n += " (you)"
			}
			names = append(names, n)
		}
		c.mu.Unlock()
		c.printf("-- %s: %s --\n", count(uint64(len(ms)), "member", "members"), strings.Join(names, ", "))
	case "/info":
		in, err := c.g.Info(octx)
		if err != nil {
			msg, _ := explain(err)
			c.notice("error", firstLine(msg), "error", firstLine(msg))
			return false
		}
		if c.json {
			c.event("info", "members", in.Members, "first_seq", in.First, "last_seq", in.Last, "max_message_bytes", in.Limits.MaxMessageBytes)
			return false
		}
		held := fmt.Sprintf("messages #%d..#%d", in.First, in.Last)
		switch {
		case in.Last == 0:
			held = "no messages yet" // it used to say "messages #0..#0"
		case in.First > in.Last:
			held = fmt.Sprintf("no messages held (retention dropped them all, up to #%d)", in.Last)
		}
		c.printf("-- %s: %s, %s, max message %s --\n",
			shown(in.Name), count(in.Members, "member", "members"), held, size(in.Limits.MaxMessageBytes))
	default:
		c.notice("error", fmt.Sprintf("unknown command %s; /help lists them (//%s sends it as text)", cmd, strings.TrimPrefix(line, "/")),
			"error", "unknown command "+cmd)
	}
	return false
}

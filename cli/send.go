package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runSend(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var idFlag string
	fs := newFlags(env, "send", "GROUP [TEXT...] [--id UUID] [flags] [-- TEXT...]",
		"Send TEXT to GROUP as one message, or, with no TEXT, each line of standard input as its own message.\nEach message is acknowledged with its sequence number and server time. Members only.\nFlags may go before or after TEXT. Everything after -- is text: put -- before text with a word that starts with -.",
		"  huddle send lobby hello everyone\n  huddle send lobby running late --registry 10.0.0.9:7373\n  huddle send lobby -- -5 degrees out, bring a coat\n  tail -f build.log | huddle send builds --json\n  huddle send builds --id \"$ID\" build 1234 passed   # the same ID on every retry: stored once\n  huddle send builds --id \"$RUN\" < lines.txt      # the same input and ID again: each line stored once")
	fs.StringVar(&idFlag, "id", "", "the message's ID, a random UUID (uuidgen makes one; never one another member could guess): a retry with the same ID is stored once, and its ack says duplicate; with lines on standard input, the run's ID, from which each line's is derived (by its number and text): the same input sent again with it stores each line once")
	cf.register(fs)
	err := fs.Parse(args)
	if nf := (*pflag.NotExistError)(nil); errors.As(err, &nf) {
		// Most likely a word of the text, not a mistyped flag.
		return usageErr(env, "send", "%v (if that is part of the message, put -- before the text: huddle send GROUP -- TEXT)", err)
	}
	if code, ok := parsed(fs, err); !ok {
		return code
	}
	if fs.NArg() < 1 {
		return usageErr(env, "send", "want GROUP, then the text (or lines on standard input)")
	}
	ref, text := fs.Arg(0), fs.Args()[1:]
	id := client.NewID()
	if idFlag != "" {
		u, err := uuid.Parse(idFlag)
		if err != nil || u == (uuid.UUID{}) {
			return usageErr(env, "send", "--id %q: want a UUID other than all zeros (uuidgen makes one)", idFlag)
		}
		id = client.ID(u)
	}
	if len(text) == 0 {
		// Reading standard input may take as long as its writer likes; only
		// the connection and each send are bounded by --timeout. The run's
		// ID, given or drawn, names each line's message ID (lineMsgID).
		return sendLines(ctx, env, &cf, ref, id)
	}
	body := strings.Join(text, " ")
	if strings.TrimSpace(body) == "" {
		return usageErr(env, "send", "the message is blank; nothing was sent")
	}
	sent := false // the group was found and the send begun: from here a timeout leaves its fate unknown
	code := withGroup(ctx, env, "send", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		sent = true
		acks, err := g.SendMessages(ctx, []client.Outgoing{{ID: id, Body: []byte(body)}})
		if err != nil {
			return err
		}
		// The ack first: what the user asked is done, whatever the
		// record of the group (remember: an info) takes.
		err = printAck(env, &cf, acks[0], 0)
		s.remember(ctx, g, e)
		return err
	})
	if (code == ExitUnreachable || code == ExitInterrupted) && sent {
		// The daemon may have stored it and its ack been lost: a retry
		// under the same ID is stored once. (A send in doubt exits 3 or
		// 130: explain.)
		fmt.Fprintf(env.Stderr, "  the message may have been stored all the same: retry it with --id %s to have it stored once\n", id)
		if cf.json {
			// For a script, which reads no stderr: the ID that settles
			// it. Standard output may be what fails; stderr said it.
			_ = printJSON(env.Stdout, inDoubtJSON{Event: "in_doubt", MsgID: uuid.UUID(id).String()})
		}
	} else if code == ExitRefused && sent && idFlag != "" {
		// Refused: this send stored nothing. The ID is the script's, maybe
		// a retry of a send in doubt, which this refusal does not settle
		// (PROTOCOL.md §9, key 7: it speaks of this request alone). Exit
		// 1 alone read as "not stored" (until session 19, H).
		fmt.Fprintf(env.Stderr, "  this send stored nothing; a send under --id %s before it, if its outcome was unknown (exit 3), may still be stored: only an ack of a retry under this --id settles it (duplicate: it was)\n", id)
	}
	return code
}

// inputLine is one line of standard input to send: its number (from 1)
// and text, or, for a line over the group's message limit, its size alone
// (tooLong bytes: it was not kept).
type inputLine struct {
	n       int
	text    string
	tooLong int
}

// sendLines sends each line of stdin as a message. Lines that arrive
// together go out together in one send (up to the group's batch and frame
// limits), so a pipe of many lines costs few round trips while a person
// typing sees each line sent at once. Blank lines are skipped. A line over
// the group's message limit is refused by its line number and the rest are
// sent; the exit code is then 1. Each line's message ID is derived from
// run, its number and its text (lineMsgID), so that the same input sent
// again under the same run ID stores each line once.
func sendLines(ctx context.Context, env Env, cf *clientFlags, ref string, run client.ID) int {
	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	s, err := open(octx, env, "send", cf)
	if err != nil {
		cancel()
		return fail(env, "send", err)
	}
	defer s.Close()
	g, e, err := s.group(octx, ref)
	if err != nil {
		cancel()
		return fail(env, "send", err)
	}
	info, err := g.Info(octx)
	cancel()
	if err != nil {
		return fail(env, "send", groupAdvice(err, ref))
	}
	if in, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
		// A person at a terminal, who may have meant to give the text:
		// without a word, the command looks hung.
		fmt.Fprintf(env.Stderr, "huddle send: type the lines to send to %s, one message each; Ctrl-D ends (to send one message: huddle send GROUP TEXT)\n", shown(e.Name))
	}
	batch := int(info.Limits.MaxBatch)
	if batch <= 0 || batch > wire.MaxBatch {
		batch = 64
	}
	// A message and a send never exceed a frame, whatever the daemon
	// says its limits are: a limit of the largest int64 (another
	// implementation's "none") overflowed the reader's bound, every line
	// refused as too large, and a limit past a frame's had it keep a line
	// of any length in memory (until session 16).
	maxMsg := wire.MaxFrameSize
	if l := info.Limits.MaxMessageBytes; l > 0 && l < wire.MaxFrameSize {
		maxMsg = int(l)
	}
	// What one send may carry: the daemon's frame limit, less the
	// envelope, and each message's own fields (an ID and small headers).
	frame := wire.MaxFrameSize
	if l := info.Limits.MaxFrameBytes; l > 0 && l < wire.MaxFrameSize {
		frame = int(l)
	}
	const envelope, perMessage = 64, 32
	budget := frame - envelope

	lines := make(chan inputLine, batch)
	readErr := make(chan error, 1)
	rctx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		defer close(lines)
		readErr <- readLines(rctx, env.Stdin, maxMsg, lines)
	}()

	refused := 0
	refuse := func(l inputLine, why string) {
		refused++
		fmt.Fprintf(env.Stderr, "huddle send: line %d %s: not sent\n", l.n, why)
	}
	tooLarge := func(l inputLine, size int) {
		refuse(l, fmt.Sprintf("is too large (%d bytes; the group takes at most %s per message: huddle info %s)", size, size64(maxMsg), shellWord(strings.TrimSpace(ref))))
	}
	// inFlight are the lines of the last send begun, with their IDs: if it
	// times out, whether the daemon stored them is unknown, and a retry
	// under the same IDs stores each once.
	var inFlight []lineID
	flying := func(msgs []client.Outgoing, from []inputLine) {
		inFlight = inFlight[:0]
		for i := range msgs {
			inFlight = append(inFlight, lineID{n: from[i].n, id: msgs[i].ID})
		}
	}
	// What a run that stops partway reports (sendStop): the lines the
	// daemon acknowledged, the last line settled (acknowledged, refused
	// or blank: every line before it is too), and the lines of the send
	// that failed, from its first one not acknowledged.
	var acked []int
	handled := 0
	var failed []inputLine
	stop := func(err error) int {
		code := fail(env, "send", err)
		var doubt []lineID
		if errors.Is(err, client.ErrInDoubt) || code == ExitUnreachable || code == ExitInterrupted {
			// The send was cut short, not refused: the daemon may have
			// stored it. (A send in doubt exits 3 or 130, explain says,
			// whatever else its error is: a redial that met another
			// key was exit 1, and its lines "not sent", until session
			// 19.)
			doubt = inFlight
		}
		if failed == nil {
			doubt = nil // nothing was in flight: the failure came before or after a send
		}
		first := handled + 1
		if len(failed) > len(doubt) {
			first = failed[len(doubt)].n
		}
		retryHint(env, doubt)
		return sendStop(env, cf, code, acked, doubt, first, run)
	}
	// split reports whether a send refused with err may go through in
	// smaller parts: a lone daemon's log that cannot store it (a disk
	// nearly full) may store fewer lines. Not a cell's group, whose
	// client already tried until --timeout ran out (no leader, say), nor
	// a daemon shutting down.
	split := func(err error) bool {
		return errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrShuttingDown) && len(e.Replicas) == 0
	}
	// send sends msgs, the lines from, and prints their acks. Refused as
	// unavailable (split), it sends the first half, then goes on at that
	// size, halving it again at each refusal, until one line alone is
	// refused: the lines that fit are stored and reported acknowledged,
	// and only the rest unsent (a send of 64 lines refused on a nearly
	// full disk reported all 64 unsent, where 47 fitted). The lines
	// resent carry the same IDs: one stored meanwhile is acknowledged as
	// a duplicate.
	//
	// doubtful counts the lines, from the first of msgs, that a send in
	// doubt carried and no ack has settled since: a later send refused
	// (one of its halves, say, refused unchanged: this request stored
	// nothing) says nothing of what that one stored, so they stay in
	// doubt whatever ends the run (stillDoubtful). Each later refusal
	// alone was taken as the outcome of the lines it carried, and lines
	// a send in doubt may have stored were said "not sent" (until
	// session 19, H).
	send := func(msgs []client.Outgoing, from []inputLine) error {
		n := len(msgs)
		doubtful := 0
		stillDoubtful := func(err error, at, n int) error {
			if doubtful <= at {
				return err
			}
			flying(msgs[at:max(at+n, doubtful)], from[at:max(at+n, doubtful)])
			if !errors.Is(err, client.ErrInDoubt) {
				err = fmt.Errorf("%w (line %d was in a send whose outcome is unknown): %w", client.ErrInDoubt, from[at].n, err)
			}
			return err
		}
		for len(msgs) > 0 {
			n = min(n, len(msgs))
			flying(msgs[:n], from[:n])
			failed = from // from the first line not acknowledged on
			acks, err := sendPaced(ctx, cf.timeout, g, msgs[:n])
			if errors.Is(err, client.ErrInDoubt) {
				doubtful = max(doubtful, n)
			}
			switch {
			case errors.Is(err, client.ErrTooLarge) && n > 1:
				// The daemon's limits are not the ones it reported: send
				// one at a time, so only the lines at fault are refused.
				for i := range n {
					flying(msgs[i:i+1], from[i:i+1])
					failed = from[i:]
					// Paced as any send (one by one, lines go out
					// faster than in a batch): a rate_limited refusal
					// here ended the run (until session 16).
					acks, err := sendPaced(ctx, cf.timeout, g, msgs[i:i+1])
					switch {
					case errors.Is(err, client.ErrTooLarge):
						tooLarge(from[i], len(msgs[i].Body))
					case err != nil:
						return stillDoubtful(err, i, 1)
					default:
						// Stored; the lines after it in this send are
						// not sent yet, if its ack cannot be written.
						flying(nil, nil)
						failed = from[i+1:]
						acked = append(acked, from[i].n)
						if err := printAck(env, cf, acks[0], from[i].n); err != nil {
							return err
						}
					}
				}
			case errors.Is(err, client.ErrTooLarge):
				tooLarge(from[0], len(msgs[0].Body))
			case err != nil && n > 1 && split(err):
				n = (n + 1) / 2
				continue
			case err != nil:
				return stillDoubtful(err, 0, n)
			default:
				// Every line of this send is stored, whether or not its
				// ack can be written: nothing in doubt.
				flying(nil, nil)
				failed = from[n:]
				for i := range acks {
					acked = append(acked, from[i].n)
				}
				for i, a := range acks {
					if err := printAck(env, cf, a, from[i].n); err != nil {
						return err
					}
				}
			}
			msgs, from = msgs[n:], from[n:]
			doubtful = max(0, doubtful-n)
		}
		failed = nil
		return nil
	}

	var pending *inputLine // a line read that did not fit the last batch
	messages := 0          // lines read that are messages (not blank, not too large)
	for {
		var l inputLine
		if pending != nil {
			l, pending = *pending, nil
		} else {
			var ok bool
			select {
			case l, ok = <-lines:
			case <-ctx.Done():
				// Interrupted while waiting for input (a person typing, a
				// quiet pipe): the reader is stuck in a read, so do not wait
				// for it.
				return stop(ctx.Err())
			}
			if !ok {
				break
			}
		}
		var msgs []client.Outgoing
		var from []inputLine
		size := 0
		add := func(l inputLine) bool {
			switch {
			case l.tooLong > 0:
				tooLarge(l, l.tooLong)
				handled = l.n
				return true
			case strings.TrimSpace(l.text) == "":
				handled = l.n
				return true // blank lines are not messages
			case len(msgs) > 0 && (len(msgs) == batch || size+len(l.text)+perMessage > budget):
				return false
			}
			handled = l.n
			messages++
			msgs = append(msgs, client.Outgoing{ID: lineMsgID(run, l.n, l.text), Body: []byte(l.text)})
			from = append(from, l)
			size += len(l.text) + perMessage
			return true
		}
		add(l)
	drain:
		for len(msgs) < batch {
			select {
			case next, ok := <-lines:
				if !ok {
					break drain
				}
				if !add(next) {
					pending = &next
					break drain
				}
			default:
				break drain
			}
		}
		if len(msgs) == 0 {
			continue
		}
		if err := send(msgs, from); err != nil {
			return stop(groupAdvice(err, ref))
		}
		s.remember(ctx, g, e)
	}
	if err := <-readErr; err != nil {
		return stop(fmt.Errorf("read standard input: %s", plainErr(err)))
	}
	if refused > 0 {
		fmt.Fprintf(env.Stderr, "huddle send: %d %s not sent; every other line was\n", refused, plural(refused, "line", "lines"))
		return ExitRefused
	}
	if messages == 0 {
		// Nothing to send is a mistake to say, as a blank TEXT is: a
		// script whose input came out empty (a command before it failed)
		// was told nothing, exit 0, as if its lines were sent (until
		// session 22).
		what := "standard input was empty"
		if handled > 0 {
			what = fmt.Sprintf("standard input held only blank lines (%d)", handled)
		}
		return usageErr(env, "send", "%s; nothing was sent (to send one message: huddle send %s TEXT)", what, shellWord(strings.TrimSpace(ref)))
	}
	return ExitOK
}

// lineMsgID returns the message ID of line n (text) of a send of lines
// whose run ID is run: a UUIDv7 whose 48 bits of time are run's (the
// run's start, for a run ID drawn by NewID) and whose 74 others come from
// a SHA-256 of the three, so a message ID is a UUIDv7 as README promises
// (its time the sender's clock, the run's start). The same input sent again
// with the same run ID (--id) gives each line the ID it had, so a line
// the daemon stored is acknowledged as a duplicate, not stored twice,
// within the group's dedup window; a line whose text changed is another
// message. Unguessable as long as run is: a member who learnt a line's ID
// could send under it first (PROTOCOL.md, idempotence).
//
// Why: each run drew new IDs, so a script re-running a send that stopped
// partway stored the acknowledged lines twice; it had to cut its input at
// first_unsent itself, and send each line in doubt with its own --id.
func lineMsgID(run client.ID, n int, text string) client.ID {
	h := sha256.New()
	h.Write([]byte("huddle send line\x00"))
	h.Write(run[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	h.Write([]byte(text))
	var id client.ID
	copy(id[6:], h.Sum(nil))
	copy(id[:6], run[:6])
	id[6] = 0x70 | id[6]&0x0f // version 7
	id[8] = 0x80 | id[8]&0x3f // the RFC 9562 variant
	return id
}

// lineID is a line of standard input sent under a message ID.
type lineID struct {
	n  int
	id client.ID
}

// retryHint names, after a send of lines timed out, the lines it carried
// with their IDs (the daemon may have stored them, its acks lost: a retry
// with --id stores each once), and says that no later line was sent.
func retryHint(env Env, lines []lineID) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(env.Stderr, "  %s may have been stored all the same: retry each with its --id to have it stored once (huddle send GROUP --id ID TEXT)\n",
		plural(len(lines), "this line", "these lines"))
	for _, l := range lines {
		fmt.Fprintf(env.Stderr, "    line %d: --id %s\n", l.n, l.id)
	}
	fmt.Fprintf(env.Stderr, "  no line after line %d was sent\n", lines[len(lines)-1].n)
}

// sendPaced sends msgs, each try within timeout, and when the daemon says
// the member sends faster than the group's rate (rate_limited, with the
// time to wait), waits that long and sends them again under the same IDs:
// lines piped in are sent at the group's pace, as many as there are,
// rather than all but the first burst dropped with an error.
//
// A try in doubt (its connection lost, then its retry refused
// rate_limited) leaves the send in doubt, whatever the tries after it
// end with, until one is acknowledged.
func sendPaced(ctx context.Context, timeout time.Duration, g *client.Group, msgs []client.Outgoing) ([]client.Ack, error) {
	var doubt error // the first try in doubt's
	stillDoubtful := func(err error) error {
		if doubt == nil || errors.Is(err, client.ErrInDoubt) {
			return err
		}
		return fmt.Errorf("%w (%v); then: %w", client.ErrInDoubt, doubt, err)
	}
	for {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		acks, err := g.SendMessages(sctx, msgs)
		cancel()
		if doubt == nil && errors.Is(err, client.ErrInDoubt) {
			doubt = err
		}
		wait, limited := client.RetryAfter(err)
		if !limited || !errors.Is(err, client.ErrRateLimited) {
			if err != nil {
				err = stillDoubtful(err)
			}
			return acks, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, stillDoubtful(ctx.Err())
		}
	}
}

// readLines reads r line by line onto lines until its end, numbering the
// lines from 1. A line longer than maxLen bytes is not kept: it is passed
// on with its size, however long it is, and reading goes on after it (a
// long line in tail -f must not end the send). A trailing carriage return
// (CRLF files) is dropped, as a final line without a newline is kept.
func readLines(ctx context.Context, r io.Reader, maxLen int, lines chan<- inputLine) error {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		var buf []byte
		size := 0
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			size += len(chunk)
			if size <= maxLen+2 { // room for "\r\n"
				buf = append(buf, chunk...)
			}
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if size == 0 && err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		n++
		line := inputLine{n: n}
		text := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
		if size > len(buf) || len(text) > maxLen {
			line.tooLong = size
			if err == nil {
				line.tooLong-- // the newline is not part of the message
			}
		} else {
			line.text = text
		}
		select {
		case lines <- line:
		case <-ctx.Done():
			return nil
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// size64 formats a byte limit for people.
func size64(n int) string { return size(uint64(n)) }

// printAck prints a message's ack; line is the line of standard input it
// was (from 1), or 0 for the text of the command line. An ack that cannot
// be written (a full disk under > file) is an error (writeErr): the
// message is stored, but a script reading the output would take it for
// one that was not, so send stops there and exits 1.
func printAck(env Env, cf *clientFlags, a client.Ack, line int) error {
	t := a.Time
	var err error
	if cf.json {
		err = printJSON(env.Stdout, ackJSON{Seq: a.Seq, TS: jsonTime(t), MsgID: a.ID.String(), Duplicate: a.Duplicate, Line: line})
	} else {
		dup := ""
		if a.Duplicate {
			dup = " (already stored)"
		}
		_, err = fmt.Fprintf(env.Stdout, "sent #%d at %s%s\n", a.Seq, localTime(t), dup)
	}
	if err != nil {
		return writeErr(err)
	}
	return nil
}

// ackJSON is an acknowledgement in --json output.
type ackJSON struct {
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	MsgID     string `json:"msg_id"`
	Duplicate bool   `json:"duplicate"`
	// Line is the line of standard input the message was: a line refused
	// (too large) has no ack, and a script tells which by the numbers.
	Line int `json:"line,omitempty"`
}

// sendStop reports, after a send of lines stopped partway, what a script
// needs to finish the job without sending a line twice or losing one: the
// lines the daemon acknowledged, those in doubt (named by retryHint), the
// first line not sent, from which every line is unsent, and the run's ID:
// the same input sent again with --id run stores each line once (its
// message ID is the same, lineMsgID), those in doubt included; or resume
// from first (tail -n +first). With --json the same goes on standard
// output as a stopped event. It returns code.
func sendStop(env Env, cf *clientFlags, code int, acked []int, doubt []lineID, first int, run client.ID) int {
	spans := lineSpans(acked)
	// Where no line was acknowledged or is in doubt, the error says it
	// all for people: nothing was sent.
	if len(acked) > 0 || len(doubt) > 0 {
		var b strings.Builder
		for i, s := range spans {
			if i > 0 {
				b.WriteString(", ")
			}
			if s[0] == s[1] {
				fmt.Fprintf(&b, "%d", s[0])
			} else {
				fmt.Fprintf(&b, "%d-%d", s[0], s[1])
			}
		}
		if len(acked) == 0 {
			fmt.Fprintf(env.Stderr, "  no line was acknowledged\n")
		} else {
			fmt.Fprintf(env.Stderr, "  %d %s acknowledged (%s %s)\n", len(acked), plural(len(acked), "line", "lines"), plural(len(acked), "line", "lines"), b.String())
		}
		fmt.Fprintf(env.Stderr, "  not sent: line %d and every line after it; to resume, send from there (tail -n +%d FILE | huddle send GROUP)\n", first, first)
		fmt.Fprintf(env.Stderr, "  or send the same input again with --id %s: each line keeps its message ID, so one already stored is acknowledged as a duplicate, not stored twice (those in doubt too); the whole input, never a part of it with this ID (its lines would be numbered anew)\n", uuid.UUID(run))
	}
	if cf.json {
		stopped := stoppedJSON{Event: "stopped", Acked: len(acked), AckedLines: spans, FirstUnsent: first, InDoubt: []doubtJSON{}, RunID: uuid.UUID(run).String()}
		for _, l := range doubt {
			stopped.InDoubt = append(stopped.InDoubt, doubtJSON{Line: l.n, MsgID: l.id.String()})
		}
		// Standard output may be what failed (a full disk under > file):
		// stderr has said it all.
		_ = printJSON(env.Stdout, stopped)
	}
	return code
}

// lineSpans turns ascending line numbers into runs [first, last].
func lineSpans(lines []int) [][2]int {
	spans := [][2]int{}
	for _, n := range lines {
		if k := len(spans); k > 0 && spans[k-1][1] == n-1 {
			spans[k-1][1] = n
			continue
		}
		spans = append(spans, [2]int{n, n})
	}
	return spans
}

// stoppedJSON is, in --json output, the last line of a send of lines that
// stopped partway (exit code not 0, for other than lines too large).
type stoppedJSON struct {
	Event       string      `json:"event"` // "stopped": no ack has an event
	Acked       int         `json:"acked"`
	AckedLines  [][2]int    `json:"acked_lines"`
	InDoubt     []doubtJSON `json:"in_doubt"`
	FirstUnsent int         `json:"first_unsent"`
	// RunID is the run's ID (--id, or drawn): the same input sent again
	// with --id RUN_ID gives each line its message ID of this run.
	RunID string `json:"run_id"`
}

// inDoubtJSON is, in --json output, what a send of TEXT whose outcome is
// unknown (client.ErrInDoubt) prints instead of an ack: the message's ID,
// with which a retry (--id) is stored once.
type inDoubtJSON struct {
	Event string `json:"event"` // "in_doubt": no ack has an event
	MsgID string `json:"msg_id"`
}

// doubtJSON is a line whose send was cut short: stored or not, unknown;
// a retry with --id MSG_ID stores it once.
type doubtJSON struct {
	Line  int    `json:"line"`
	MsgID string `json:"msg_id"`
}

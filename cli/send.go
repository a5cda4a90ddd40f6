package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runSend(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "send", "GROUP [flags] [--] [TEXT...]",
		"Send TEXT to GROUP as one message, or, with no TEXT, each line of standard input as its own message.\nEach message is acknowledged with its sequence number and server time. Members only.\nFlags go before TEXT: from its first word on, everything is text (put -- before text that starts with -).",
		"  huddle send lobby hello everyone\n  tail -f build.log | huddle send builds --json")
	cf.register(fs)
	fs.SetInterspersed(false) // TEXT may contain words that look like flags
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() < 1 {
		return usageErr(env, "send", "want GROUP, then the text (or lines on standard input)")
	}
	ref, text := fs.Arg(0), fs.Args()[1:]
	if fs.ArgsLenAtDash() < 0 {
		// Flags may follow GROUP too (huddle send builds --json), as with
		// every other verb; they end where the text begins.
		if code, ok := parse(fs, text); !ok {
			return code
		}
		text = fs.Args()
	}
	if len(text) == 0 {
		// Reading standard input may take as long as its writer likes; only
		// the connection and each send are bounded by --timeout.
		return sendLines(ctx, env, &cf, ref)
	}
	return withGroup(ctx, env, "send", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		id := wire.NewID()
		acks, err := g.SendMessages(ctx, []wire.Outgoing{{ID: id, Body: []byte(strings.Join(text, " "))}})
		if err != nil {
			return err
		}
		printAck(env, &cf, acks[0])
		return nil
	})
}

// sendLines sends each line of stdin as a message. Lines that arrive
// together go out together in one send (up to the group's batch limit), so
// a pipe of many lines costs few round trips while a person typing sees
// each line sent at once.
func sendLines(ctx context.Context, env Env, cf *clientFlags, ref string) int {
	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	s, err := open(octx, env, "send", cf)
	if err != nil {
		cancel()
		return fail(env, "send", err)
	}
	defer s.Close()
	g, _, err := s.group(octx, ref)
	if err != nil {
		cancel()
		return fail(env, "send", err)
	}
	info, err := g.Info(octx)
	cancel()
	if err != nil {
		return fail(env, "send", err)
	}
	batch := int(info.Limits.MaxBatch)
	if batch <= 0 || batch > wire.MaxBatch {
		batch = 64
	}

	lines := make(chan string, batch)
	readErr := make(chan error, 1)
	rctx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(env.Stdin)
		sc.Buffer(make([]byte, 64<<10), int(wire.MaxFrameSize))
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-rctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()

	for {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-ctx.Done():
			// Interrupted while waiting for input (a person typing, a quiet
			// pipe): the reader is stuck in a read, so do not wait for it.
			return fail(env, "send", ctx.Err())
		}
		if !ok {
			break
		}
		msgs := []wire.Outgoing{{ID: wire.NewID(), Body: []byte(line)}}
	drain:
		for len(msgs) < batch {
			select {
			case l, ok := <-lines:
				if !ok {
					break drain
				}
				msgs = append(msgs, wire.Outgoing{ID: wire.NewID(), Body: []byte(l)})
			default:
				break drain
			}
		}
		sctx, cancel := context.WithTimeout(ctx, cf.timeout)
		acks, err := g.SendMessages(sctx, msgs)
		cancel()
		if err != nil {
			return fail(env, "send", err)
		}
		for _, a := range acks {
			printAck(env, cf, a)
		}
	}
	select {
	case err := <-readErr:
		if err != nil && !errors.Is(err, io.EOF) {
			return fail(env, "send", fmt.Errorf("read standard input: %w", err))
		}
	default:
	}
	return ExitOK
}

func printAck(env Env, cf *clientFlags, a client.Ack) {
	t := a.Time
	if cf.json {
		printJSON(env.Stdout, ackJSON{Seq: a.Seq, TS: jsonTime(t), MsgID: a.ID.String(), Duplicate: a.Duplicate})
		return
	}
	dup := ""
	if a.Duplicate {
		dup = " (already stored)"
	}
	fmt.Fprintf(env.Stdout, "sent #%d at %s%s\n", a.Seq, localTime(t), dup)
}

// ackJSON is an acknowledgement in --json output.
type ackJSON struct {
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	MsgID     string `json:"msg_id"`
	Duplicate bool   `json:"duplicate"`
}

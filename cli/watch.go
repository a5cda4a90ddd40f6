package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runWatch(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var since, after string
	fs := newFlags(env, "watch", "GROUP... [--since TIME | --after SEQ] [--json]",
		"Follow one or more groups: print the selected history (default: none, only new messages), then each message\nas it arrives, marked with its group. Survives daemon restarts and dropped connections. Members only.",
		"  huddle watch lobby builds\n  huddle watch lobby --since 1h --json | jq -r .text")
	fs.StringVar(&since, "since", "", "start with messages at or after TIME")
	fs.StringVar(&after, "after", "", "start with messages after sequence number SEQ (one group only)")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	refs := fs.Args()
	if len(refs) == 0 {
		return usageErr(env, "watch", "want at least one GROUP")
	}
	if after != "" && len(refs) > 1 {
		return usageErr(env, "watch", "--after is a sequence number of one group; with several groups use --since")
	}
	q, err := query(since, after, 0, time.Now())
	if err != nil {
		return usageErr(env, "watch", "%v", err)
	}

	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	s, err := open(octx, env, "watch", &cf)
	if err != nil {
		cancel()
		return fail(env, "watch", err)
	}
	defer s.Close()
	groups := make([]*client.Group, len(refs))
	for i, ref := range refs {
		if groups[i], _, err = s.group(octx, ref); err != nil {
			cancel()
			return fail(env, "watch", err)
		}
	}
	cancel()
	if since == "" && after == "" {
		// Default: only what arrives from now on. (--after 0 is every
		// message held: a bot's cursor before its first message.)
		q.Since = time.Now()
	}

	var (
		mu   sync.Mutex // one line at a time on stdout
		wg   sync.WaitGroup
		code = ExitOK
	)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	// A reader that went away (watch --json | head -1) ends the watch at
	// once, not at the next message's SIGPIPE, however long that is.
	gone, stopLooking := readerGone(env.Stdout)
	defer stopLooking()
	readerLeft := false
	var looking sync.WaitGroup
	looking.Go(func() {
		select {
		case <-gone:
			mu.Lock()
			readerLeft = true
			mu.Unlock()
			stop()
		case <-wctx.Done():
		}
	})
	// With several groups each line is marked with its group, the marks
	// padded to one width (in terminal columns: names may be CJK or emoji).
	width := 0
	for _, g := range groups {
		width = max(width, displayWidth(shown(g.Name())))
	}
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			group, uuid, label := "", "", ""
			if len(groups) > 1 || cf.json {
				group = g.Name()
			}
			if cf.json {
				uuid = g.ID().String()
			}
			if len(groups) > 1 {
				label = padRight("["+shown(g.Name())+"]", width+2) + " "
			}
			// failed ends every group's watch with this group's error; mu
			// is held. An error once the watch was stopped (its reader
			// gone, another group's error, Ctrl-C) is the stop's doing, a
			// call cut short: the first error, or the stop, is what the
			// watch says.
			failed := func(err error) {
				if code == ExitOK && wctx.Err() == nil {
					code = fail(env, "watch", groupAdvice(fmt.Errorf("%s: %w", shown(g.Name()), err), refs[i]))
				}
				mu.Unlock()
				stop()
			}
			names, note, err := watchNames(wctx, cf.json, cf.timeout, g)
			mu.Lock()
			if err != nil {
				failed(err)
				return
			}
			if note != "" {
				fmt.Fprintf(env.Stderr, "note: [%s] no member list (%s): a name worn by two keys may show without its key\n", shown(g.Name()), note)
			}
			mu.Unlock()
			for ev, err := range g.Watch(wctx, q) {
				mu.Lock()
				if err != nil {
					failed(err)
					return
				}
				if err := printEvent(env, cf.json, group, uuid, label, g.Name(), names, ev); err != nil {
					if code == ExitOK {
						code = fail(env, "watch", writeErr(err))
					}
					mu.Unlock()
					stop()
					return
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stop()
	looking.Wait()
	if readerLeft && code == ExitOK {
		return ExitReaderGone
	}
	if code == ExitOK && ctx.Err() != nil {
		// Ctrl-C or SIGTERM: a watch only ends that way, and says so as
		// every interrupted command does.
		return ExitInterrupted
	}
	return code
}

// watchNames returns the name book a watch labels senders with, seeded
// with the group's members (as fetchNames does for fetch): --json prints
// every sender's key and asks for no member list. The list is asked
// within --timeout, not for as long as the watch lasts. A refusal for good
// (not a member, say) is the watch's error: the watch would be refused
// too, and the error now names the call refused. A list that could not be
// had in time, or from a daemon down or not serving the group, is only
// noted (note says why): unlike fetch, the watch then waits for the
// daemon, as it does across a restart.
func watchNames(ctx context.Context, asJSON bool, timeout time.Duration, g *client.Group) (names *nameBook, note string, err error) {
	names = newNameBook()
	if asJSON {
		return names, "", nil
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ms, err := g.Members(lctx)
	var we *wire.Error
	switch {
	case err == nil:
		names.seeMembers(ms)
		return names, "", nil
	case ctx.Err() != nil:
		return nil, "", err // interrupted
	case errors.As(err, &we) && we.Code != wire.CodeUnavailable:
		return nil, "", err
	}
	msg, _ := explain(err)
	return names, firstLine(msg), nil
}

// gapJSON and resetJSON are watch --json's gap and reset events, their
// keys in the order README.md lists them (a map's came out sorted, until
// session 22).
type (
	gapJSON struct {
		Group   string `json:"group"`
		UUID    string `json:"uuid"`
		Event   string `json:"event"`
		FromSeq uint64 `json:"from_seq"`
		ToSeq   uint64 `json:"to_seq"`
	}
	resetJSON struct {
		Group string `json:"group"`
		UUID  string `json:"uuid"`
		Event string `json:"event"`
		Epoch uint64 `json:"epoch"`
	}
)

// printEvent prints a watch event: messages as fetch prints them, the rest
// as notes on stderr (or objects with an "event" field under --json). It
// returns the error of a write to stdout. A gap's sequence numbers are
// from_seq and to_seq: "from" is a message's sender, a fingerprint, and
// one key of two types on one stream trips every typed decoder.
func printEvent(env Env, asJSON bool, group, uuid, label, name string, names *nameBook, ev client.Event) error {
	switch ev.Kind {
	case client.EventMessage:
		return printMessage(env, asJSON, group, uuid, label, names, ev.Message)
	case client.EventGap:
		if asJSON {
			return printJSON(env.Stdout, gapJSON{Group: name, UUID: uuid, Event: "gap", FromSeq: ev.From, ToSeq: ev.To})
		}
		fmt.Fprintf(env.Stderr, "[%s] messages #%d..#%d were dropped by retention before they could be shown\n", shown(name), ev.From, ev.To)
	case client.EventReset:
		if asJSON {
			return printJSON(env.Stdout, resetJSON{Group: name, UUID: uuid, Event: "reset", Epoch: ev.Epoch})
		}
		fmt.Fprintf(env.Stderr, "[%s] the group's daemon restarted and its history was reset; following the new log from its start\n", shown(name))
	}
	return nil
}

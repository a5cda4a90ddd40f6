package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runFetch(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var since, after string
	var limit, last int
	fs := newFlags(env, "fetch", "GROUP [--since TIME | --after SEQ | --last N] [--limit N]",
		"Print GROUP's messages: all it holds, those since TIME (a date and time, a date, Unix seconds, or how long\nago: 10m, 2h, 10d), those after sequence number SEQ, or the last N. Members only.",
		"  huddle fetch lobby --since 10m\n  huddle fetch lobby --last 20\n  huddle fetch lobby --after 41 --json")
	fs.StringVar(&since, "since", "", "messages at or after TIME")
	fs.StringVar(&after, "after", "", "messages after sequence number SEQ")
	fs.Var(newCount(&last, 0, 1, math.MaxInt), "last", "the last N messages")
	fs.Var(newCount(&limit, 0, 0, math.MaxInt), "limit", "print at most N messages, the oldest first (0: all)")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "fetch", fs.Args())
	if !ok {
		return code
	}
	q, err := query(since, after, limit, time.Now())
	if err != nil {
		return usageErr(env, "fetch", "%v", err)
	}
	if last > 0 && (since != "" || after != "" || limit > 0) {
		return usageErr(env, "fetch", "--last is a selection of its own: give it without --since, --after or --limit")
	}
	return withGroup(ctx, env, "fetch", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		if last > 0 {
			// The last N are those after last-N, in the log's epoch now (a
			// log reset in between fails rather than mixing numbers).
			in, err := g.Info(ctx)
			if err != nil {
				return err
			}
			q = client.Query{After: in.Last - min(in.Last, uint64(last)), Epoch: in.Epoch, Limit: last}
		}
		names, err := fetchNames(ctx, env, cf.json, g)
		if err != nil {
			return err
		}
		var werr error
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool {
			werr = printMessage(env, cf.json, "", "", "", names, m)
			return werr == nil
		})
		if werr != nil {
			// A full disk under > file: the script must not take what was
			// written for all there is.
			return writeErr(werr)
		}
		if err != nil {
			return err
		}
		s.remember(ctx, g, e)
		if cur.Gap && !cf.json && last == 0 {
			fmt.Fprintf(env.Stderr, "note: messages before #%d are no longer held (retention)\n", cur.First)
		}
		if q.After > cur.Last {
			// Most likely a cursor kept from before the daemon restarted:
			// its log, and the numbering, started again from 1.
			fmt.Fprintf(env.Stderr, "note: %s's messages end at #%d, before #%d; if its daemon restarted, the numbers started again from 1: fetch without --after to see what it holds\n",
				e.Name, cur.Last, q.After+1)
		}
		return nil
	})
}

// fetchNames returns the name book fetch labels senders with, seeded with
// the group's members. --json prints every sender's key and needs no
// member list, so it asks for none: a script's fetch waits on nothing but
// its messages. A member list that could not be had is the command's error
// when the daemon refused it for good (not a member: the fetch would be
// refused too) or when asking used up the time the command had (the fetch
// would only fail after it, naming the wrong call); otherwise (a member of
// a cell that does not serve the group, or is down: the fetch steps past
// it to another) it is said on stderr, and names are shown as the
// messages carry them.
func fetchNames(ctx context.Context, env Env, asJSON bool, g *client.Group) (*nameBook, error) {
	names := newNameBook()
	if asJSON {
		return names, nil
	}
	ms, err := g.Members(ctx)
	var we *wire.Error
	switch {
	case err != nil && (ctx.Err() != nil || errors.As(err, &we) && we.Code != wire.CodeUnavailable):
		return nil, err
	case err != nil:
		msg, _ := explain(err)
		fmt.Fprintf(env.Stderr, "note: no member list (%s): a name worn by two keys may show without its key\n", firstLine(msg))
	default:
		names.seeMembers(ms)
	}
	return names, nil
}

// query builds a client.Query from the selection flags shared by fetch and
// watch.
func query(since, after string, limit int, now time.Time) (client.Query, error) {
	q := client.Query{Limit: limit}
	if since != "" && after != "" {
		return q, fmt.Errorf("give --since or --after, not both")
	}
	if limit < 0 {
		return q, fmt.Errorf("--limit must not be negative")
	}
	if since != "" {
		t, err := parseTime(since, now)
		if err != nil {
			// Named by its flag, as --after's mistakes are (until session
			// 21: "cannot read time ...", naming no flag).
			return q, fmt.Errorf("--since %w", err)
		}
		q.Since = t
	}
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return q, fmt.Errorf("--after %q: want a sequence number", after)
		}
		q.After = n
	}
	return q, nil
}

// messageJSON is a message in --json output.
type messageJSON struct {
	Group string `json:"group,omitempty"`
	UUID  string `json:"uuid,omitempty"` // watch: the group's, names being anyone's to take
	Seq   uint64 `json:"seq"`
	TS    string `json:"ts"`
	MsgID string `json:"msg_id"`
	From  string `json:"from"`
	Name  string `json:"name"`
	Text  string `json:"text"`
}

// printMessage prints one message. group and uuid, when not empty, are
// the name and UUID of the group it belongs to in --json output (for
// watch), and label the mark that says so to people ("[lobby] ", padded
// to line up); names says how to show the sender's name (see nameBook).
// It returns the error of the write.
func printMessage(env Env, asJSON bool, group, uuid, label string, names *nameBook, m client.Message) error {
	if asJSON {
		return printJSON(env.Stdout, messageJSON{
			Group: group, UUID: uuid, Seq: m.Seq, TS: jsonTime(m.Time), MsgID: m.ID.String(),
			From: m.From.String(), Name: m.Name, Text: string(m.Body),
		})
	}
	_, err := fmt.Fprintf(env.Stdout, "%s%6d  %s  %s: %s\n", label, m.Seq, localTime(m.Time), shown(names.labelMessage(m)), printable(m.Body))
	return err
}

// writeErr is the error of a command whose output could not be written
// (a full disk): exit code 1, as for any local file unusable.
func writeErr(err error) error {
	return fmt.Errorf("write standard output: %s", plainErr(err))
}

package cli

import (
	"context"
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
		names := newNameBook()
		if ms, err := g.Members(ctx); err == nil {
			names.seeMembers(ms)
		}
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool {
			printMessage(env, cf.json, "", "", names, m)
			return true
		})
		if err != nil {
			return err
		}
		s.remember(e)
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
			return q, err
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
	Seq   uint64 `json:"seq"`
	TS    string `json:"ts"`
	MsgID string `json:"msg_id"`
	From  string `json:"from"`
	Name  string `json:"name"`
	Text  string `json:"text"`
}

// printMessage prints one message. group, when not empty, is the group it
// belongs to in --json output (for commands following several), and label
// the mark that says so to people ("[lobby] ", padded to line up); names
// says how to show the sender's name (see nameBook).
func printMessage(env Env, asJSON bool, group, label string, names *nameBook, m client.Message) {
	if asJSON {
		printJSON(env.Stdout, messageJSON{
			Group: group, Seq: m.Seq, TS: jsonTime(m.Time), MsgID: m.ID.String(),
			From: m.From.String(), Name: m.Name, Text: string(m.Body),
		})
		return
	}
	fmt.Fprintf(env.Stdout, "%s%6d  %s  %s: %s\n", label, m.Seq, localTime(m.Time), names.labelMessage(m), printable(m.Body))
}

// printable keeps control characters in a message from driving the
// reader's terminal.
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' || r == 0x7f {
			out = append(out, '\uFFFD')
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

func timeOf(ns int64) time.Time { return time.Unix(0, ns) }

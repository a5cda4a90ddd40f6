package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runFetch(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var since, after string
	var limit int
	fs := newFlags(env, "fetch", "GROUP [--since TIME | --after SEQ] [--limit N]",
		"Print GROUP's messages: all it holds, those since TIME (RFC 3339, Unix seconds, or how long ago: 10m),\nor those after sequence number SEQ. Members only.",
		"  huddle fetch lobby --since 10m\n  huddle fetch lobby --after 41 --json")
	fs.StringVar(&since, "since", "", "messages at or after TIME")
	fs.StringVar(&after, "after", "", "messages after sequence number SEQ")
	fs.IntVar(&limit, "limit", 0, "print at most N messages (0: all)")
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
	return withGroup(ctx, env, "fetch", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		cur, err := g.Fetch(ctx, q, func(m client.Message) bool {
			printMessage(env, cf.json, "", m)
			return true
		})
		if err != nil {
			return err
		}
		if cur.Gap && !cf.json {
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

// printMessage prints one message; group, when not empty, marks which group
// it belongs to (for commands following several).
func printMessage(env Env, asJSON bool, group string, m client.Message) {
	if asJSON {
		printJSON(env.Stdout, messageJSON{
			Group: group, Seq: m.Seq, TS: jsonTime(m.Time), MsgID: m.ID.String(),
			From: m.From.String(), Name: m.Name, Text: string(m.Body),
		})
		return
	}
	prefix := ""
	if group != "" {
		prefix = "[" + group + "] "
	}
	fmt.Fprintf(env.Stdout, "%s%6d  %s  %s: %s\n", prefix, m.Seq, localTime(m.Time), m.Name, printable(m.Body))
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

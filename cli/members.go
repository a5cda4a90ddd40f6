package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runMembers(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "members", "GROUP", "List GROUP's members (members only).", "  huddle members lobby")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "members", fs.Args())
	if !ok {
		return code
	}
	return withGroup(ctx, env, "members", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		ms, err := g.Members(ctx)
		if err != nil {
			return err
		}
		s.remember(ctx, g, e)
		me := s.client.Fingerprint()
		if cf.json {
			for _, m := range ms {
				obj := memberJSON{Fingerprint: m.Fingerprint.String(), Name: m.Name, Joined: jsonTime(m.Joined), You: m.Fingerprint == me, Online: m.Online}
				if !m.LastSeen.IsZero() {
					t := jsonTime(m.LastSeen)
					obj.LastSeen = &t
				}
				printJSON(env.Stdout, obj)
			}
			return nil
		}
		now := time.Now()
		names := newNameBook()
		names.seeMembers(ms)
		rows := [][]string{{"NAME", "SEEN", "JOINED", "FINGERPRINT"}}
		for _, m := range ms {
			you := ""
			if m.Fingerprint == me {
				you = "  (you)"
			}
			rows = append(rows, []string{names.label(m.Fingerprint, m.Name), seen(m, now), localTime(m.Joined), m.Fingerprint.String() + you})
		}
		return writeTable(env.Stdout, rows)
	})
}

// memberJSON is a member as members --json prints it, its keys in the
// order README.md lists them: a struct's fields keep their order in JSON,
// where a map's keys came out sorted (until session 22).
type memberJSON struct {
	Fingerprint string  `json:"fingerprint"`
	Name        string  `json:"name"`
	Joined      string  `json:"joined"`
	You         bool    `json:"you"`
	Online      bool    `json:"online"`
	LastSeen    *string `json:"last_seen"` // null: not seen since the daemon started
}

// seen says when a member was last seen, for people: "online" while it
// watches the group, "-" if the daemon has not seen it since it started
// (or does not report presence).
func seen(m client.Member, now time.Time) string {
	switch {
	case m.Online:
		return "online"
	case m.LastSeen.IsZero():
		return "-"
	}
	return ago(now.Sub(m.LastSeen)) + " ago"
}

// ago rounds d to the unit people would say: 40s, 5m, 3h, 2d.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d/time.Second)))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

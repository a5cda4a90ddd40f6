package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
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
		me := s.client.Fingerprint()
		if cf.json {
			for _, m := range ms {
				printJSON(env.Stdout, map[string]any{
					"fingerprint": m.Fingerprint.String(), "name": m.Name,
					"joined": jsonTime(time.Unix(0, m.Joined)), "you": m.Fingerprint == me,
				})
			}
			return nil
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tJOINED\tFINGERPRINT")
		for _, m := range ms {
			you := ""
			if m.Fingerprint == me {
				you = "  (you)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s%s\n", m.Name, localTime(time.Unix(0, m.Joined)), m.Fingerprint, you)
		}
		return tw.Flush()
	})
}

package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runJoin(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var as, secretFile string
	fs := newFlags(env, "join", "GROUP [--as NAME] [--secret-file FILE]",
		"Join GROUP under a display name (default: your user name). Joining again changes the name.",
		"  huddle join lobby --as alice")
	fs.StringVar(&as, "as", "", "display name others see (default $USER)")
	fs.StringVar(&secretFile, "secret-file", "", "file holding a private group's join secret")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "join", fs.Args())
	if !ok {
		return code
	}
	if as == "" {
		as = env.Getenv("USER")
	}
	if as == "" {
		as = "anonymous"
	}
	if err := wire.CheckName(as); err != nil {
		return usageErr(env, "join", "--as %q: %v", as, err)
	}
	var secret []byte
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return fail(env, "join", fmt.Errorf("read secret: %w", err))
		}
		secret = trimNewline(b)
	}
	return withGroup(ctx, env, "join", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		j, err := g.Join(ctx, as, secret)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, map[string]any{
				"uuid": e.Group.String(), "name": e.Name, "as": as, "already": j.Already, "last_seq": j.Last,
			})
		}
		if j.Already {
			fmt.Fprintf(env.Stdout, "already in %s; your name there is now %q\n", e.Name, as)
		} else {
			fmt.Fprintf(env.Stdout, "joined %s as %q (%d messages so far)\n", e.Name, as, j.Last)
		}
		return nil
	})
}

// trimNewline drops one trailing newline (and a carriage return before it),
// as files written by editors and echo end with one.
func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

func runLeave(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "leave", "GROUP", "Leave GROUP. Leaving a group you are not in is not an error.",
		"  huddle leave lobby")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	ref, code, ok := oneGroup(env, "leave", fs.Args())
	if !ok {
		return code
	}
	return withGroup(ctx, env, "leave", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		was, err := g.Leave(ctx)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(env.Stdout, map[string]any{"uuid": e.Group.String(), "name": e.Name, "was_member": was})
		}
		if was {
			fmt.Fprintf(env.Stdout, "left %s\n", e.Name)
		} else {
			fmt.Fprintf(env.Stdout, "you were not in %s\n", e.Name)
		}
		return nil
	})
}

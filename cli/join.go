package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func runJoin(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var as, secretFile string
	var daemon string
	fs := newFlags(env, "join", "GROUP [--as NAME] [--secret-file FILE] [--daemon FINGERPRINT]",
		"Join GROUP under a display name (default: your user name). Joining again keeps your name, or changes it to --as.",
		"  huddle join lobby --as alice")
	fs.StringVar(&as, "as", "", "display name others see (default: the name you have in the group, else $USER)")
	fs.StringVar(&secretFile, "secret-file", "", "file holding a private group's join secret")
	fs.StringVar(&daemon, "daemon", "", "join GROUP at the daemon with this key (its fingerprint; for a cell's group, any member's), as when its owner moved it to a new key")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if daemon != "" {
		fp, err := wire.ParseFingerprint(strings.TrimSpace(daemon))
		if err != nil {
			return usageErr(env, "join", "--daemon %q: %v", daemon, err)
		}
		cf.daemon = &fp
	}
	ref, code, ok := oneGroup(env, "join", fs.Args())
	if !ok {
		return code
	}
	secret, code, ok := joinFlags(env, "join", as, secretFile)
	if !ok {
		return code
	}
	renamed := as != ""
	return withGroup(ctx, env, "join", &cf, ref, func(ctx context.Context, s *session, g *client.Group, e wire.GroupEntry) error {
		name := as
		if name == "" {
			// Joining again keeps the name one has (README: join is
			// idempotent); a newcomer gets their user name.
			var err error
			if name, err = currentName(ctx, g, s.client.Fingerprint()); err != nil {
				return err
			}
			if name == "" {
				name = defaultName(env)
			}
		}
		j, err := g.Join(ctx, name, secret)
		if err = joinRefusal(err, "join", ref, secretFile); err != nil {
			return err
		}
		s.remember(ctx, g, e)
		as := name
		if cf.json {
			return printJSON(env.Stdout, joinJSON{UUID: e.Group.String(), Name: e.Name, As: as, Already: j.Already, LastSeq: j.Last})
		}
		switch {
		case j.Already && renamed:
			fmt.Fprintf(env.Stdout, "already in %s; your name there is now %q\n", shown(e.Name), as)
		case j.Already:
			fmt.Fprintf(env.Stdout, "already in %s as %q\n", shown(e.Name), as)
		default:
			fmt.Fprintf(env.Stdout, "joined %s as %q (%s so far)\n", shown(e.Name), as, count(j.Last, "message", "messages"))
		}
		return nil
	})
}

// joinJSON and leaveJSON are join --json's and leave --json's objects,
// their keys in the order README.md lists them (a map's came out sorted,
// until session 22).
type (
	joinJSON struct {
		UUID    string `json:"uuid"`
		Name    string `json:"name"`
		As      string `json:"as"`
		Already bool   `json:"already"`
		LastSeq uint64 `json:"last_seq"`
	}
	leaveJSON struct {
		UUID      string `json:"uuid"`
		Name      string `json:"name"`
		WasMember bool   `json:"was_member"`
	}
)

// currentName returns the name this key has in g, or "" if it is not a
// member.
func currentName(ctx context.Context, g *client.Group, me wire.Fingerprint) (string, error) {
	ms, err := g.Members(ctx)
	if errors.Is(err, client.ErrNotMember) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.Fingerprint == me {
			return m.Name, nil
		}
	}
	return "", nil
}

// defaultName is the name a newcomer joins under: the user's login name
// if it is a valid name, else "anonymous".
func defaultName(env Env) string {
	if u := loginName(env); u != "" {
		return u
	}
	return "anonymous"
}

// loginName returns the user's login name ($USER) if it is a valid name,
// else "".
func loginName(env Env) string {
	if u := env.Getenv("USER"); u != "" && wire.CheckName(u) == nil {
		return u
	}
	return ""
}

// joinRefusal says what to do about a join the group refused for its
// secret, or paced (rate_limited), in the words of the command that joined
// (join, or chat with --as); other errors are returned as they are.
func joinRefusal(err error, verb, ref, secretFile string) error {
	var we *wire.Error
	if !errors.As(err, &we) {
		return err
	}
	switch we.Code {
	case wire.CodeRateLimited:
		return joinPaced(we, verb, ref, secretFile)
	case wire.CodeUnauthorized:
	default:
		return err
	}
	// The key is not what was refused (advice's generic words): a join is
	// refused only for the group's secret.
	ref = shellWord(strings.TrimSpace(ref))
	fix := fmt.Sprintf("give its secret: huddle join %s --secret-file FILE", ref)
	if verb == "chat" {
		fix = fmt.Sprintf("give its secret: huddle chat %s --as NAME --secret-file FILE", ref)
	}
	if secretFile != "" {
		fix = fmt.Sprintf("the secret in %s is not the group's: ask its operator for it", secretFile)
	}
	return &refusal{fmt.Sprintf("%v; %s", we, fix)}
}

// joinPaced says what a join refused rate_limited means: a daemon paces
// the joins of a private group per source address (PROTOCOL.md §8.2, 10 then
// 1 a second), whoever at that address makes them, and refuses one
// whatever its secret: the refusal tells nothing of it (groupd compares it
// first, and a right one is refused alike; until session 23 the CLI said
// the secret was not looked at). Said as "slow down" (advice's generic words)
// until session 23, which told a user who had typed one join neither that
// others sharing the address may be the cause, nor that the refusal says
// nothing of the secret, nor when to try again: the refusal's retry_after_ms says when.
func joinPaced(we *wire.Error, verb, ref, secretFile string) error {
	when := "in a few seconds"
	if d := we.RetryAfter(); d > 0 {
		when = "in " + roundUp(d).String()
	}
	again := fmt.Sprintf("huddle join %s", shellWord(strings.TrimSpace(ref)))
	if verb == "chat" {
		again = fmt.Sprintf("huddle chat %s --as NAME", shellWord(strings.TrimSpace(ref)))
	}
	if secretFile != "" {
		again += " --secret-file " + shellWord(secretFile)
	}
	return &refusal{fmt.Sprintf("%v; the group's daemon paces joins from your address (this host, or others sharing its address: a NAT, an IPv6 /64), "+
		"and refused this one whatever its secret (the refusal says nothing of it): nothing changed; try again %s: %s", we, when, again)}
}

// roundUp is d in whole seconds, rounded up (a wait said shorter than the
// daemon's is refused again).
func roundUp(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
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
		s.forget(ctx, e)
		if cf.json {
			return printJSON(env.Stdout, leaveJSON{UUID: e.Group.String(), Name: e.Name, WasMember: was})
		}
		if was {
			fmt.Fprintf(env.Stdout, "left %s\n", shown(e.Name))
		} else {
			fmt.Fprintf(env.Stdout, "you were not in %s\n", shown(e.Name))
		}
		return nil
	})
}

// joinFlags checks a join's --as (if given) and reads its --secret-file
// (if given; one final line ending dropped), as join and chat take them.
// On a bad flag it reports it and returns the exit code, not ok.
func joinFlags(env Env, verb, as, secretFile string) (secret []byte, code int, ok bool) {
	if as != "" {
		if err := wire.CheckName(as); err != nil {
			return nil, usageErr(env, verb, "--as %q: %v", as, err), false
		}
	}
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return nil, fail(env, verb, fmt.Errorf("--secret-file %s: cannot read it (%s)", secretFile, plainErr(err))), false
		}
		secret = trimNewline(b)
		warnReadable(env, "--secret-file", secretFile)
	}
	return secret, 0, true
}

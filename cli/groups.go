package cli

import (
	"context"
	"fmt"
	"strings"
)

func runGroups(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	fs := newFlags(env, "groups", "[--registry ADDR] [--json]",
		"List the groups whose daemons are registered with the registry now.",
		"  huddle groups\n  huddle groups --json | jq -r .name")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(env, "groups", "unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	s, err := open(ctx, env, "groups", &cf)
	if err != nil {
		return fail(env, "groups", err)
	}
	defer s.Close()
	list, err := s.list(ctx)
	if err != nil {
		return fail(env, "groups", err)
	}
	if cf.json {
		for _, g := range list {
			printJSON(env.Stdout, groupJSON{
				UUID: g.Group.String(), Name: g.Name, Addrs: g.Addrs,
				Fingerprint: g.Fingerprint.String(), Members: g.Members, LastSeq: g.LastSeq,
			})
		}
		return ExitOK
	}
	if len(list) == 0 {
		fmt.Fprintf(env.Stderr, "no groups registered at %s yet (start one with: huddle serve --group NAME)\n", s.regs[0].Addr())
		return ExitOK
	}
	rows := [][]string{{"NAME", "UUID", "MEMBERS", "MESSAGES", "ADDRESS", "DAEMON"}}
	for _, g := range list {
		rows = append(rows, []string{g.Name, g.Group.String(), fmt.Sprint(g.Members), fmt.Sprint(g.LastSeq),
			strings.Join(g.Addrs, ","), g.Fingerprint.Short()})
	}
	writeTable(env.Stdout, rows)
	return ExitOK
}

// groupJSON is a group in --json output.
type groupJSON struct {
	UUID        string   `json:"uuid"`
	Name        string   `json:"name"`
	Addrs       []string `json:"addrs"`
	Fingerprint string   `json:"fingerprint"`
	Members     uint64   `json:"members"`
	LastSeq     uint64   `json:"last_seq"`
}

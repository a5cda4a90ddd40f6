// Package cli implements the huddle command: its verbs, their flags, and how
// they report. Each verb lives in its own file; Main dispatches to them.
package cli

import (
	"context"
	"fmt"
	"io"
)

// Exit codes, shared by every verb.
const (
	ExitOK          = 0 // done
	ExitRefused     = 1 // the server refused (not a member, not found, too large...)
	ExitUsage       = 2 // bad command line
	ExitUnreachable = 3 // unreachable or timed out
)

// Env is what a verb may touch of the outside world, so tests can run verbs
// in-process with their own streams and environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// Main runs the huddle command line args and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "huddle: unknown command %q; run 'huddle --help' for the list\n", args[0])
	return ExitUsage
}

const usage = `huddle: group messaging for local networks and servers

Usage: huddle COMMAND [flags]

Run 'huddle COMMAND --help' for a command's flags and an example.
`

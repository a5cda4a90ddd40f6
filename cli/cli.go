// Package cli implements the huddle command: its verbs, their flags, and how
// they report. Each verb lives in its own file as a small function that
// parses its flags into a config, runs, and reports; Main dispatches to them.
//
// Exit codes are the same for every verb: 0 done, 1 the server refused (or a
// local file was unusable), 2 usage, 3 unreachable or timed out, 130
// interrupted, 141 (watch) the reader of its output went away.
package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/internal/lockfile"
)

// Exit codes, shared by every verb.
const (
	ExitOK          = 0 // done
	ExitRefused     = 1 // the server refused (not a member, not found, too large...)
	ExitUsage       = 2 // bad command line
	ExitUnreachable = 3 // unreachable or timed out
	// ExitInterrupted is the shell's convention for a command stopped by
	// SIGINT (128 + 2), also used for SIGTERM while a client verb waits.
	ExitInterrupted = 130
	// ExitReaderGone is a watch's when the reader of its output went away
	// (huddle watch --json | head -1): what a command killed by SIGPIPE
	// shows the shell (128 + 13), as fetch does when it writes to the
	// closed pipe.
	ExitReaderGone = 141
)

// Env is what a verb may touch of the outside world, so tests can run verbs
// in-process with their own streams and environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Environ lists the environment (os.Environ), for daemons to refuse
	// HUDDLE_ variables they do not know; nil: not checked.
	Environ func() []string
	// LockWait bounds a command's wait for another process's lock of a
	// file in the huddle home (known_registries, the joined file: a
	// writer holds it for a read and a rename, or longer if stopped with
	// ^Z mid-write, or hostile); 0: the default, 5 s. Tests shorten it.
	LockWait time.Duration
	// flock, if set, is flock(2) as the commands' locks call it
	// (lockfile.Locker): this package's tests count the tries with it.
	flock func(fd, how int) error
	// beforeVerify, if set, is called as each mDNS answer's verification
	// starts, once it is counted as awaited (gatherer.hold), with the
	// registry the answer advertises (fingerprint): this package's tests
	// slow it. (A variable of the package's until session 17.)
	beforeVerify func(g *gatherer, fingerprint string)
	// browse, if set, is called as a command would start sending mDNS
	// queries (doctor's check, a listing's browse), with the verb; an
	// error stands for the browse's, and no query is sent: this package's
	// tests check that none would be, on this machine's interfaces.
	browse func(verb string) error
}

// startBrowse is called as a command starts browsing mDNS: nil, or what
// Env.browse says.
func (e Env) startBrowse(verb string) error {
	if e.browse == nil {
		return nil
	}
	return e.browse(verb)
}

// defaultLockWait is Env.LockWait's default.
const defaultLockWait = 5 * time.Second

// lockWait returns e.LockWait, or its default.
func (e Env) lockWait() time.Duration { return cmp.Or(e.LockWait, defaultLockWait) }

// locker returns what takes the commands' locks of the files in the huddle
// home: waiting e.lockWait() at most.
func (e Env) locker() lockfile.Locker { return lockfile.Locker{Wait: e.lockWait(), Flock: e.flock} }

// verb is one huddle subcommand.
type verb struct {
	summary string
	run     func(ctx context.Context, env Env, args []string) int
}

var verbs = map[string]verb{
	"up":              {"run a registry and a group daemon in one process", runUp},
	"registry":        {"run a registry", runRegistry},
	"serve":           {"run a group daemon hosting one or more groups", runServe},
	"groups":          {"list the groups a registry knows", runGroups},
	"join":            {"join a group", runJoin},
	"leave":           {"leave a group", runLeave},
	"send":            {"send messages to a group", runSend},
	"fetch":           {"print a group's messages", runFetch},
	"members":         {"list a group's members", runMembers},
	"info":            {"describe a group and its limits", runInfo},
	"watch":           {"follow groups as messages arrive", runWatch},
	"chat":            {"chat in a group from the terminal", runChat},
	"web":             {"chat in your browser: a local web page for your groups", runWeb},
	"doctor":          {"check discovery and reachability, and say what to fix", runDoctor},
	"version":         {"print the version", runVersion},
	"id":              {"print your identity (fingerprint)", runID},
	"forget-registry": {"drop the pinned fingerprint of a registry", runForgetRegistry},
	"bench":           {"measure a group daemon under load (self-contained or --registry)", runBench},
	"cell":            {"operate a cell of group daemons that replicate their groups", runCell},
}

// Main runs the huddle command line args and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	env.Stderr = shownWriter{env.Stderr}
	if len(args) == 0 {
		// A bare huddle is a usage mistake, as a verb without its arguments
		// is: the list goes to stderr, and the exit code says so.
		fmt.Fprint(env.Stderr, usage())
		return ExitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, usage())
		return ExitOK
	}
	v, ok := verbs[args[0]]
	if !ok {
		mean := ""
		if near := nearVerb(args[0]); near != "" {
			mean = fmt.Sprintf(" did you mean \"huddle %s\"?", near)
		}
		fmt.Fprintf(env.Stderr, "huddle: unknown command %q;%s run 'huddle --help' for the list\n", args[0], mean)
		return ExitUsage
	}
	return v.run(ctx, env, args[1:])
}

// nearVerb returns the verb that typed is a slip away from (edit distance
// at most 2 and at most half the verb's length: sned is send), the
// nearest, then the first by name; or "" if none is.
func nearVerb(typed string) string {
	best, bestD := "", 3
	for name := range verbs {
		if d := editDistance(strings.ToLower(typed), name); 2*d <= len(name) && (d < bestD || d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	return best
}

func usage() string {
	var b strings.Builder
	b.WriteString("huddle: group messaging for local networks and servers\n\nUsage: huddle COMMAND [flags]\n\nCommands:\n")
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-16s %s\n", n, verbs[n].summary)
	}
	b.WriteString(`
Run 'huddle COMMAND --help' for a command's flags and an example.

Environment:
  HUDDLE_HOME      where your key and pinned registries live (default: $XDG_CONFIG_HOME/huddle, else ~/.config/huddle)
  HUDDLE_REGISTRY  the registries client commands ask, HOST[:PORT],... (default: this machine's, those that answered last time, and those found over mDNS)
  HUDDLE_<FLAG>    a daemon's flag (up, registry, serve): HUDDLE_STATE_DIR=..., HUDDLE_GROUP=lobby,dev
  QLOGDIR          write a qlog of each QUIC connection into this directory (debugging; off when unset)

Exit codes:
  0    done
  1    refused by the server (not a member, no such group, too large...), or a local file unusable
  2    usage: a bad command, flag or value
  3    unreachable or timed out; for send, an outcome unknown (retry with the same --id: stored once)
  130  interrupted (Ctrl-C, SIGTERM)
  141  watch: the reader of its output went away
`)
	return b.String()
}

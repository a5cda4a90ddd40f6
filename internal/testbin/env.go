package testbin

import (
	"fmt"
	"slices"
	"strings"
)

// Env returns the environment a huddle process started by a test harness
// with args (its command line after the binary: "serve", "--listen", ...)
// gets from the test's, environ. Every huddle command reads its flags
// from the environment too (HUDDLE_<FLAG>), so:
//   - a setting the run gives (HUDDLE_FSYNC=always, HUDDLE_MAX_MSGS=...)
//     reaches the process, which refuses one no huddle command reads
//     (exit 2, naming the nearest): a run that sets one gets what it
//     asks, or an error;
//   - one for a flag the harness gives on the command line, which would
//     win, is an error (a *FlagGivenError): the run would not get it;
//   - not passed: the variables of the harness itself (own: prefixes such
//     as "HUDDLE_JEPSEN_") and of netlab's lab (HUDDLE_NETLAB_*, set in a
//     namespace's test process), which a daemon would refuse; the client's
//     HUDDLE_HOME and HUDDLE_REGISTRY (a developer's shell exports them for
//     their own use: the harness gives each process a home and names the
//     registry); HOME and XDG_*.
//
// Until session 14 the harnesses dropped every HUDDLE_* silently: a run
// that set one measured the defaults.
func Env(environ, args []string, own ...string) ([]string, error) {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		prefixed := func(p string) bool { return strings.HasPrefix(k, p) }
		switch {
		case k == "HOME" || prefixed("XDG_"), k == "HUDDLE_HOME", k == "HUDDLE_REGISTRY",
			prefixed("HUDDLE_NETLAB_"), slices.ContainsFunc(own, prefixed):
			continue
		case prefixed("HUDDLE_") && len(args) > 0:
			flag := "--" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "HUDDLE_"), "_", "-"))
			if slices.ContainsFunc(args, func(a string) bool { return a == flag || strings.HasPrefix(a, flag+"=") }) {
				return nil, &FlagGivenError{Var: k, Command: args[0], Flag: flag}
			}
		}
		env = append(env, kv)
	}
	return env, nil
}

// FlagGivenError is Env's refusal of a setting (Var, HUDDLE_<FLAG>) of a
// flag the harness gives huddle Command on the command line itself.
type FlagGivenError struct {
	Var, Command, Flag string
}

func (e *FlagGivenError) Error() string {
	return fmt.Sprintf("%s is set, but the harness gives huddle %s %s itself, which would win: unset it", e.Var, e.Command, e.Flag)
}

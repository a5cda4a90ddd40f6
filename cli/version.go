package cli

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version returns the module version huddle was built as ("(devel)" for a
// build from a work tree), with the VCS revision when the build recorded it.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && !strings.Contains(v, rev) {
		v += " " + rev
	}
	v += modified
	return v
}

func runVersion(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "version", "", "Print huddle's version, the commit it was built from, and the Go toolchain.", "  huddle version")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		return usageErr(env, "version", "unexpected argument %q", fs.Arg(0))
	}
	fmt.Fprintf(env.Stdout, "huddle %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return ExitOK
}

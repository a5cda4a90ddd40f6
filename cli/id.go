package cli

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/huddle-chat/huddle/identity"
)

func runID(ctx context.Context, env Env, args []string) int {
	var asJSON bool
	fs := newFlags(env, "id", "[--json]",
		"Print your fingerprint: your member ID in every group. The key behind it is created on first use\nin $HUDDLE_HOME (mode 0600); keep it, or you become someone else.",
		"  huddle id")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		return usageErr(env, "id", "unexpected argument %q", fs.Arg(0))
	}
	dir, err := home(env)
	if err != nil {
		return fail(env, "id", err)
	}
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		return fail(env, "id", err)
	}
	if asJSON {
		printJSON(env.Stdout, idJSON{Fingerprint: id.Fingerprint().String(), Key: filepath.Join(dir, identity.KeyFile)})
		return ExitOK
	}
	fmt.Fprintln(env.Stdout, id.Fingerprint())
	return ExitOK
}

// idJSON is id --json's object, its keys in the order README.md lists
// them (a map's, sorted, until session 23: the same order, by chance of
// the names, which a key added would not keep).
type idJSON struct {
	Fingerprint string `json:"fingerprint"`
	Key         string `json:"key"`
}

func runForgetRegistry(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "forget-registry", "NAME",
		"Drop the fingerprint pinned for the registry NAME, so the next use trusts the key it presents then.\n"+
			"NAME is the registry's address, or mdns:INSTANCE for one found over mDNS, as the refusal that sent\n"+
			"you here prints it (quote it: instance names have spaces).\n"+
			"Do this only when you know the registry's key changed (it was reinstalled).",
		"  huddle forget-registry 192.168.1.20:7373\n  huddle forget-registry 'mdns:huddle registry on hal (jcqm-rwtz)'")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageErr(env, "forget-registry", "want one NAME: the registry's address, or mdns:INSTANCE")
	}
	dir, err := home(env)
	if err != nil {
		return fail(env, "forget-registry", err)
	}
	kh := openKnownHosts(env, dir)
	ok, err := kh.Forget(ctx, fs.Arg(0))
	if err != nil {
		return fail(env, "forget-registry", err)
	}
	if err := forgetCachedRegistry(dir, fs.Arg(0)); err != nil {
		return fail(env, "forget-registry", err)
	}
	if !ok {
		fmt.Fprintf(env.Stdout, "no fingerprint was pinned for %s\n", fs.Arg(0))
		return ExitOK
	}
	fmt.Fprintf(env.Stdout, "forgot the fingerprint of %s; the next connection pins the key it presents\n", fs.Arg(0))
	return ExitOK
}

package cli

import (
	"context"
	"strings"
	"syscall"
	"testing"
)

// fullDisk is a standard output that cannot be written: a file on a full
// disk (huddle fetch --json > lobby.jsonl).
type fullDisk struct{}

func (fullDisk) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestOutputUnwritable runs fetch and watch with an output that cannot be
// written. Fetch used to exit 0, as if the file held every message, and
// watch to go on following the group, dropping each message. Both stop at
// the first write refused, say so, and exit 1 (a local file unusable).
func TestOutputUnwritable(t *testing.T) {
	reg := startUp(t, "lobby")
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "u")
	u.ok(t, "send", "lobby", "hi")
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	for _, args := range [][]string{
		{"fetch", "lobby", "--json"},
		{"fetch", "lobby"},
		{"watch", "lobby", "--json", "--since", "1h"},
		{"watch", "lobby", "--since", "1h"},
	} {
		var errb syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		code := Main(ctx, args, Env{Stdin: strings.NewReader(""), Stdout: fullDisk{}, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
		cancel()
		if want := "write standard output: no space left on device"; code != ExitRefused || !strings.Contains(errb.String(), want) {
			t.Errorf("huddle %s onto a full disk: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), code, errb.String(), ExitRefused, want)
		}
	}
}

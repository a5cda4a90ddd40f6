package cli

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestWatchReaderGoneEarly runs watch with an output whose reader went
// away before the watch had asked its groups' member lists (huddle watch
// lobby dev | true). Stopping the watch made the member lists still being
// asked fail as interrupted, and the watch said "interrupted" of each such
// group and exited 130: a watch stopped (its reader gone, another group's
// error, Ctrl-C) is not a failure of the groups it had not finished with.
// It exits 141, quietly. (Linux only: readerGone is.)
func TestWatchReaderGoneEarly(t *testing.T) {
	reg := startUp(t, "lobby", "dev")
	u := newTestUser(t, reg)
	u.ok(t, "join", "lobby", "--as", "u")
	u.ok(t, "join", "dev", "--as", "u")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r.Close()
	env := map[string]string{"HUDDLE_HOME": u.home, "HUDDLE_REGISTRY": u.registry}
	var errb syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	code := Main(ctx, []string{"watch", "lobby", "dev"}, Env{Stdin: strings.NewReader(""), Stdout: w, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	if code != ExitReaderGone || errb.String() != "" {
		t.Errorf("watch of two groups into a pipe with no reader: exit %d, stderr %q; want exit %d and nothing said", code, errb.String(), ExitReaderGone)
	}
}

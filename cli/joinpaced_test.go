package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestJoinPacedSaysWhen: a join of a private group that its daemon paces
// (rate_limited: too many joins from the address) says so, that the
// secret was not judged, and when to try again, from the refusal's
// retry_after_ms, with exit 1. Until session 23 the CLI said only "slow
// down", to a user who may have typed one join while others at the same
// address guessed.
func TestJoinPacedSaysWhen(t *testing.T) {
	dir := t.TempDir()
	secret, wrong := filepath.Join(dir, "secret"), filepath.Join(dir, "wrong")
	for f, s := range map[string]string{secret: "the right one\n", wrong: "a guess\n"} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reg := startUpWith(t, []string{"--secret-file", "lobby=" + secret}, "lobby")
	u := newTestUser(t, reg)

	// A guesser at the same address (127.0.0.1) joins with wrong secrets
	// over one connection until the test ends, taking each token of the
	// address's bucket (10, then 1 a second) as it comes back, so that the
	// user's join finds it empty however slowly the machine runs it.
	cl := newTestClient(t)
	r, err := cl.Registry(t.Context(), reg, client.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.List(t.Context())
	if err != nil || len(l.Groups) != 1 {
		t.Fatalf("list: %v, %+v", err, l)
	}
	g, err := cl.Group(l.Groups[0])
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithCancel(t.Context())
	paced := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := g.Join(ctx, "guesser", []byte("guess")); errors.Is(err, client.ErrRateLimited) {
				once.Do(func() { close(paced) })
			}
		}
	})
	select {
	case <-paced:
	case <-t.Context().Done():
		t.Fatal("the guesser was never refused rate_limited")
	}

	// The user's join, with the right secret or not (the refusal comes
	// before the secret is compared), is refused while the guesser goes
	// on; one that caught a token back (the guesser descheduled for a
	// second) is tried again, a bounded number of times.
	var code int
	var stderr string
	for range 20 {
		if code, _, stderr = u.run(t, "join", "lobby", "--as", "ann", "--secret-file", wrong); strings.Contains(stderr, "rate limited") {
			break
		}
	}
	want := regexp.MustCompile(`the group's daemon paces joins from your address \(this host, or others sharing its address: a NAT, an IPv6 /64\), ` +
		`and refused this one whatever its secret \(the refusal says nothing of it\): nothing changed; try again in [1-9][0-9]*s: huddle join lobby --secret-file \S*wrong\n$`)
	if code != ExitRefused || !want.MatchString(stderr) || strings.Contains(stderr, "slow down") {
		t.Fatalf("join refused rate_limited: exit %d, stderr:\n%s\nwant exit %d, saying why and when to try again (%s)", code, stderr, ExitRefused, want)
	}

	// chat --as joins first, in chat's words.
	for range 20 {
		if code, _, stderr = u.run(t, "chat", "lobby", "--as", "ann", "--secret-file", wrong); strings.Contains(stderr, "rate limited") {
			break
		}
	}
	if code != ExitRefused || !strings.Contains(stderr, "whatever its secret (the refusal says nothing of it)") || !strings.Contains(stderr, ": huddle chat lobby --as NAME --secret-file ") {
		t.Fatalf("chat --as refused rate_limited: exit %d, stderr:\n%s\nwant exit %d, saying when to try again, in chat's words", code, stderr, ExitRefused)
	}
}

// TestJoinPacedWait: joinPaced says the refusal's wait in whole seconds,
// rounded up (a wait said shorter is refused again), and words, not 0s,
// for a refusal that gives none.
func TestJoinPacedWait(t *testing.T) {
	for _, tc := range []struct {
		ms   uint64
		want string
	}{
		{1, "try again in 1s: "},
		{1000, "try again in 1s: "},
		{1001, "try again in 2s: "},
		{90_500, "try again in 1m31s: "},
		{0, "try again in a few seconds: "},
	} {
		err := joinPaced(&wire.Error{Code: wire.CodeRateLimited, RetryAfterMS: tc.ms}, "join", "lobby", "")
		if got := err.Error(); !strings.Contains(got, tc.want) || !strings.HasSuffix(got, ": huddle join lobby") {
			t.Errorf("retry_after_ms %d: %q, want %q", tc.ms, got, tc.want)
		}
	}
}

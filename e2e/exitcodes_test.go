//go:build linux

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExitCodes checks the exit code and the message of each kind of
// failure: 2 for a bad command line (ambiguous groups included, with the
// candidates listed), 1 when a server refuses, 3 when nothing answers.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	// A lease long enough that the registry still lists the group of the
	// daemon killed below when the test asks for it, however slow the run.
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--lease", "10m")
	defer reg.stop(t)
	first := startDaemon(t, "serve", "--group", "lobby", "--registry", reg.registry,
		"--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	defer first.stop(t)

	// A second daemon also hosts a lobby, and two groups whose UUIDs share a
	// prefix (set through its groups.json, the file that keeps each name's
	// UUID); its messages are at most 1 KiB.
	const alpha, beta = "abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"
	state := t.TempDir()
	seed := `{"alpha": "` + alpha + `", "beta": "` + beta + `"}` + "\n"
	if err := os.WriteFile(filepath.Join(state, "groups.json"), []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	second := startDaemon(t, "serve", "--group", "lobby", "--group", "alpha", "--group", "beta",
		"--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", state, "--max-message", "1KiB",
		"--new-identity") // a state dir seeded with groups.json but no key (15.19)
	defer second.stop(t)
	if second.groups["alpha"] != alpha || second.groups["beta"] != beta {
		t.Fatalf("serve hosts %v, want alpha and beta with the UUIDs of its groups.json", second.groups)
	}
	lobby1, lobby2 := first.groups["lobby"], second.groups["lobby"]

	// A third daemon is killed without a chance to deregister, so the
	// registry lists a group nothing answers for (until its lease ends).
	third := startDaemon(t, "serve", "--group", "gone", "--registry", reg.registry,
		"--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, lobby1, lobby2, alpha, beta, third.groups["gone"])
	third.proc.stop(t, syscall.SIGKILL)

	alice.join(t, alpha)
	alice.join(t, lobby1[:8]) // a unique prefix names a group
	alice.join(t, "beta")     // and so does a unique name

	nowhere := newUser(t, "nobody", freeUDPAddr(t))
	dave := newUser(t, "dave", reg.registry)
	big := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name  string
		u     *user
		input string
		args  []string
		code  int
		want  []string // in stderr
	}{
		// 2: usage.
		{"unknown verb", alice, "", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`, "huddle --help"}},
		{"unknown flag", alice, "", []string{"fetch", lobby1, "--frobnicate"}, 2, []string{"unknown flag: --frobnicate", "huddle fetch --help"}},
		{"flag without value", alice, "", []string{"fetch", lobby1, "--limit"}, 2, []string{"--limit"}},
		{"bad limit", alice, "", []string{"fetch", lobby1, "--limit", "-1"}, 2, []string{`invalid argument "-1" for "--limit" flag`}},
		{"last with since", alice, "", []string{"fetch", lobby1, "--last", "2", "--since", "1h"}, 2, []string{"--last"}},
		{"since and after", alice, "", []string{"fetch", lobby1, "--since", "10m", "--after", "1"}, 2, []string{"--since or --after, not both"}},
		{"unreadable time", alice, "", []string{"fetch", lobby1, "--since", "yesterday"}, 2, []string{`--since "yesterday": not a time: give a date`}},
		{"unreadable seq", alice, "", []string{"fetch", lobby1, "--after", "two"}, 2, []string{`--after "two"`}},
		{"watch after with two groups", alice, "", []string{"watch", alpha, "beta", "--after", "1"}, 2, []string{"--after"}},
		{"fetch without group", alice, "", []string{"fetch"}, 2, []string{"want one GROUP"}},
		{"send without group", alice, "", []string{"send"}, 2, []string{"want GROUP"}},
		{"join without group", alice, "", []string{"join"}, 2, []string{"want one GROUP"}},
		{"members without group", alice, "", []string{"members"}, 2, []string{"want one GROUP"}},
		{"info without group", alice, "", []string{"info"}, 2, []string{"want one GROUP"}},
		{"watch without group", alice, "", []string{"watch"}, 2, []string{"want at least one GROUP"}},
		{"chat without group", alice, "", []string{"chat"}, 2, []string{"want one GROUP"}},
		{"two groups", alice, "", []string{"fetch", alpha, "beta"}, 2, []string{"want one GROUP"}},
		{"forget-registry without address", alice, "", []string{"forget-registry"}, 2, []string{"want one NAME"}},
		{"serve without group", alice, "", []string{"serve", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--no-mdns"}, 2, []string{"--group NAME"}},
		{"bad log level", alice, "", []string{"registry", "--listen", "127.0.0.1:0", "--log-level", "loud", "--no-mdns"}, 2, []string{"--log-level"}},
		{"bad group name on a daemon", alice, "", []string{"serve", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--no-mdns", "--group", ""}, 2, []string{"--group", "empty"}},
		{"registry port out of range", alice, "", []string{"groups", "--registry", "127.0.0.1:99999"}, 2, []string{`"127.0.0.1:99999"`, "65535"}},
		{"bare huddle", alice, "", []string{}, 2, []string{"Usage: huddle COMMAND"}},
		// dave joined neither lobby; alice joined the first, so lobby is
		// hers (below).
		{"ambiguous name", dave, "", []string{"fetch", "lobby"}, 2,
			[]string{`"lobby" matches 2 groups`, lobby1, lobby2, first.addr, second.addr, "daemon " + first.fp[:9], "daemon " + second.fp[:9]}},
		{"ambiguous name, send", dave, "", []string{"send", "lobby", "hi"}, 2, []string{`"lobby" matches 2 groups`, lobby1, lobby2}},
		{"ambiguous prefix", alice, "", []string{"fetch", "abcd"}, 2, []string{`"abcd" matches 2 groups`, alpha + "  alpha", beta + "  beta"}},
		{"ambiguous prefix, watch", alice, "", []string{"watch", "abcd0000"}, 2, []string{"matches 2 groups", alpha, beta}},

		// 1: refused.
		{"not a member", newUser(t, "carol", reg.registry), "", []string{"fetch", alpha}, 1, []string{"not a member", "huddle join " + alpha + "\n"}},
		{"no such group", alice, "", []string{"fetch", "nosuchgroup"}, 1, []string{`no such group "nosuchgroup"`, "huddle groups"}},
		{"short prefix", alice, "", []string{"fetch", "abc"}, 2, []string{`"abc" is too short for a UUID prefix`, "at least 4"}},
		{"short string matching no UUID", alice, "", []string{"fetch", "zz"}, 1, []string{`no such group "zz"`}},
		{"too large", alice, "", []string{"send", alpha, big}, 1, []string{"too large", "at most 1024", "its limits: huddle info " + alpha}},
		{"too large from stdin", alice, big + "\n", []string{"send", "beta"}, 1, []string{"too large", "per message: huddle info beta"}},

		// 3: unreachable.
		{"no registry", nowhere, "", []string{"groups", "--timeout", "1s"}, 3, []string{nowhere.registry, "--timeout"}},
		{"no registry, fetch", nowhere, "", []string{"fetch", "lobby", "--timeout", "1s"}, 3, []string{nowhere.registry}},
		{"daemon gone", alice, "", []string{"info", "gone", "--timeout", "2s"}, 3, []string{"is the daemon running"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.u.runInput(t, tc.input, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d: %s", r.code, tc.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q: %s", w, r)
				}
			}
			if !strings.HasPrefix(r.stderr, "huddle") && len(tc.args) > 0 {
				t.Errorf("stderr does not start with the command's name: %s", r)
			}
		})
	}

	// alice joined the first lobby: the name is hers, whatever else is
	// registered under it.
	if r := alice.run(t, "send", "lobby", "mine"); r.code != 0 {
		t.Errorf("alice's send to the lobby she joined: %s", r)
	}

	// Nothing too large was stored.
	if out := alice.ok(t, "fetch", "beta"); out != "" {
		t.Errorf("beta holds messages after refused sends:\n%s", out)
	}

	// --help is not an error: usage on stdout, exit code 0.
	for _, args := range [][]string{{"--help"}, {"help"}, {"fetch", "--help"}, {"send", "lobby", "--help"}} {
		r := alice.run(t, args...)
		if r.code != 0 || !(strings.Contains(r.stdout, "Usage: huddle") || strings.Contains(r.stdout, "huddle: group messaging")) || r.stderr != "" {
			t.Errorf("want usage on stdout and exit code 0: %s", r)
		}
	}
}

// freeUDPAddr returns a 127.0.0.1 address where nothing listens (a port
// that was free a moment ago).
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// TestInterruptedExitCodes: Ctrl-C (SIGINT) or SIGTERM during watch or chat
// exits 130, as README says of every client command stopped while it
// waits; it was 0, as if the watch had ended by itself.
func TestInterruptedExitCodes(t *testing.T) {
	t.Parallel()
	alice := aliceInLobby(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		watch := alice.start(t, "watch", "lobby", "--json")
		// The watch is live once a message sent now reaches it.
		if !eventually(t, waitTimeout, func() bool {
			alice.ok(t, "send", "lobby", "ping "+sig.String())
			return watch.stdout.waitFor(time.Second, func(lines []string) bool { return len(lines) > 0 })
		}) {
			t.Fatalf("the watch printed nothing\nstderr:\n%s", watch.stderr)
		}
		if code := watch.stop(t, sig); code != 130 {
			t.Errorf("watch after %v: exit code %d, want 130", sig, code)
		}
		chat := alice.start(t, "chat", "lobby")
		waitText(t, chat, "-- lobby:")
		if code := chat.stop(t, sig); code != 130 {
			t.Errorf("chat after %v: exit code %d, want 130", sig, code)
		}
	}
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/internal/testport"
)

// runMain runs huddle args in this process with env as its environment and
// returns its exit code and outputs.
func runMain(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	e := Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string { return env[k] }, Environ: func() []string { return environ }}
	// Bounded: a command that should have been refused and started
	// instead (a daemon) ends, and the test says so, rather than hang.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	code := Main(ctx, args, e)
	return code, out.String(), errb.String()
}

// TestBadFlagsRefusedBeforeStart: every daemon and client flag is checked
// as it is parsed, or against the others, before anything listens: a
// mistake is exit 2 with the flag and the value typed, and nothing is
// printed on stdout (no "listening" line of a half-started up).
func TestBadFlagsRefusedBeforeStart(t *testing.T) {
	dir := t.TempDir()
	daemonArgs := func(verb string, more ...string) []string {
		args := []string{verb, "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", dir}
		if verb == "serve" {
			args = append(args, "--registry", "127.0.0.1:7373", "--group", "lobby")
		}
		return append(args, more...)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"message over the frame", nil, daemonArgs("up", "--max-message", "10MiB"), []string{`"10MiB"`, "--max-message", "1020KiB"}},
		{"message not a size", nil, daemonArgs("serve", "--max-message", "lots"), []string{`"lots"`, "--max-message", "KiB"}},
		{"batch over the protocol's", nil, daemonArgs("serve", "--max-batch", "2000"), []string{`"2000"`, "--max-batch", "1 to 1024"}},
		{"count not a number", nil, daemonArgs("up", "--max-msgs", "many"), []string{`"many"`, "--max-msgs", "whole number"}},
		{"negative count", nil, daemonArgs("up", "--max-msgs", "-1"), []string{`"-1"`, "--max-msgs"}},
		{"zero lease", nil, daemonArgs("registry", "--lease", "0"), []string{`"0"`, "--lease"}},
		{"unknown storage", nil, daemonArgs("serve", "--storage", "tape"), []string{`"tape"`, "--storage", "disk, memory"}},
		{"unknown fsync", nil, daemonArgs("up", "--fsync", "never"), []string{`"never"`, "--fsync", "interval, always"}},
		{"storage from the environment", map[string]string{"HUDDLE_STORAGE": "ram"}, daemonArgs("up"), []string{`"ram"`, "HUDDLE_STORAGE"}},
		{"zero fsync interval", nil, daemonArgs("serve", "--fsync-interval", "0s"), []string{`"0s"`, "--fsync-interval"}},
		{"duration without unit", nil, daemonArgs("serve", "--max-age", "10"), []string{`"10"`, "--max-age", "30s"}},
		{"port out of range", nil, daemonArgs("up", "--listen", "127.0.0.1:99999"), []string{`"127.0.0.1:99999"`, "--listen", "65535"}},
		{"registry port out of range", nil, daemonArgs("serve", "--registry", "127.0.0.1:99999"), []string{"--registry", "65535"}},
		{"empty group name", nil, daemonArgs("up", "--group", ""), []string{"--group", "empty"}},
		{"control character in a group name", nil, daemonArgs("up", "--group", "a\x07b"), []string{"--group", "control character"}},
		{"group twice", nil, daemonArgs("up", "--group", "a", "--group", "a"), []string{"--group", "twice"}},
		{"frame too small for the default message", nil, daemonArgs("up", "--max-frame", "8KiB"), []string{"--max-message 64KiB", "--max-frame 8KiB"}},
		{"burst below batch", nil, daemonArgs("serve", "--send-burst", "10"), []string{"--send-burst 10", "--max-batch 256"}},
		{"log level", nil, daemonArgs("registry", "--log-level", "loud"), []string{`"loud"`, "--log-level", "debug, info, warn, error"}},
		{"log format", nil, daemonArgs("up", "--log-format", "xml"), []string{`"xml"`, "--log-format"}},
		{"bad advertise", nil, daemonArgs("serve", "--advertise", "nowhere"), []string{`"nowhere"`, "--advertise"}},
		// Registries refuse these (wire.Dialable): until session 23 the
		// daemon started, and its groups were never listed.
		{"advertise every address", nil, daemonArgs("serve", "--advertise", "0.0.0.0:7374"), []string{`"0.0.0.0:7374"`, "--advertise", "clients cannot dial it", "leave --advertise out"}},
		{"advertise every IPv6 address", nil, daemonArgs("serve", "--advertise", "[::]:7374"), []string{`"[::]:7374"`, "--advertise", "clients cannot dial it"}},
		{"advertise a multicast address", nil, daemonArgs("serve", "--advertise", "192.168.1.20:7374", "--advertise", "224.0.0.251:7374"), []string{`"224.0.0.251:7374"`, "--advertise", "multicast or broadcast"}},
		{"advertise the broadcast address", nil, daemonArgs("serve", "--advertise", "255.255.255.255:7374"), []string{`"255.255.255.255:7374"`, "multicast or broadcast"}},
		{"advertise a mapped unspecified address", nil, daemonArgs("serve", "--advertise", "[::ffff:0.0.0.0]:7374"), []string{"--advertise", "clients cannot dial it"}},
		{"advertise from the environment", map[string]string{"HUDDLE_ADVERTISE": "0.0.0.0:7374"}, daemonArgs("serve"), []string{"0.0.0.0:7374", "clients cannot dial it"}},
		{"listen on a multicast address", nil, daemonArgs("up", "--listen", "224.0.0.251:7373"), []string{`"224.0.0.251:7373"`, "--listen", "multicast or broadcast"}},
		{"daemon listen on the broadcast address", nil, daemonArgs("up", "--daemon-listen", "255.255.255.255:7374"), []string{`"255.255.255.255:7374"`, "--daemon-listen", "multicast or broadcast"}},
		{"bad value from the environment", map[string]string{"HUDDLE_MAX_BATCH": "x"}, daemonArgs("serve"), []string{`HUDDLE_MAX_BATCH="x"`, "whole number"}},
		{"mistyped variable", map[string]string{"HUDDLE_GROUPS": "lobby"}, daemonArgs("up"), []string{"HUDDLE_GROUPS is not a huddle setting", "did you mean HUDDLE_GROUP?"}},
		{"mistyped flag", nil, daemonArgs("serve", "--cell-peers", "x"), []string{"unknown flag: --cell-peers", "did you mean --cell-peer?"}},
		{"mistyped client flag", nil, []string{"fetch", "lobby", "--limt", "5"}, []string{"unknown flag: --limt", "did you mean --limit?"}},
		{"client registry port", nil, []string{"groups", "--registry", "127.0.0.1:99999"}, []string{`"127.0.0.1:99999"`, "--registry", "65535"}},
		{"client registry from the environment", map[string]string{"HUDDLE_REGISTRY": "127.0.0.1:0"}, []string{"groups"}, []string{`"127.0.0.1:0"`, "65535"}},
		// Dialled as given, these sent QUIC Initials to every host of the
		// link (until session 23).
		{"client registry multicast", nil, []string{"groups", "--registry", "224.0.0.251:7373"}, []string{`"224.0.0.251:7373"`, "--registry", "multicast or broadcast"}},
		{"client registry broadcast from the environment", map[string]string{"HUDDLE_REGISTRY": "127.0.0.1:7373,255.255.255.255"}, []string{"groups"}, []string{"HUDDLE_REGISTRY", `"255.255.255.255"`, "multicast or broadcast"}},
		{"daemon registry multicast", nil, daemonArgs("serve", "--registry", "[ff02::fb]:7373"), []string{`"[ff02::fb]:7373"`, "--registry", "multicast or broadcast"}},
		{"cell server multicast", nil, []string{"cell", "status", "--server", "224.0.0.251:7374"}, []string{`"224.0.0.251:7374"`, "--server", "multicast or broadcast"}},
		{"bench registry broadcast", nil, []string{"bench", "send", "--registry", "255.255.255.255:7373"}, []string{`"255.255.255.255:7373"`, "--registry", "multicast or broadcast"}},
		{"client timeout", nil, []string{"fetch", "lobby", "--timeout", "soon"}, []string{`"soon"`, "--timeout"}},
		{"bare huddle", nil, nil, []string{"Usage: huddle COMMAND"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"HUDDLE_HOME": t.TempDir()}
			for k, v := range tc.env {
				env[k] = v
			}
			code, stdout, stderr := runMain(t, env, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d (usage)\nstderr: %s", code, ExitUsage, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if stdout != "" {
				t.Errorf("stdout is not empty: something started or printed before the flags were checked:\n%s", stdout)
			}
			for _, goText := range []string{"strconv", "invalid syntax", "time: ", "Go value", "ErrInvalidConfig", "MaxMessageBytes"} {
				if strings.Contains(stderr, goText) {
					t.Errorf("stderr speaks Go (%q):\n%s", goText, stderr)
				}
			}
		})
	}
}

// TestClientWarnsOfMistypedVariable: a client command with HUDDLE_REGISTRYS
// set (for HUDDLE_REGISTRY) went on silently with the default registries,
// and a newcomer was left wondering why theirs was not asked. It says so on
// stderr, naming the likely variable, and goes on (a warning, not a usage
// error: a script's environment may hold variables of its own).
func TestClientWarnsOfMistypedVariable(t *testing.T) {
	ln, err := net.ListenPacket("udp", "127.0.0.1:0") // a registry that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_REGISTRYS": "10.0.0.9"}
	code, _, stderr := runMain(t, env, "groups", "--registry", ln.LocalAddr().String(), "--timeout", "200ms")
	if code == ExitUsage || !strings.Contains(stderr, "warning: HUDDLE_REGISTRYS is not a huddle setting (did you mean HUDDLE_REGISTRY?): ignored") {
		t.Errorf("groups with HUDDLE_REGISTRYS set: exit %d, stderr %q; want a warning naming HUDDLE_REGISTRY, and no usage error", code, stderr)
	}
	env = map[string]string{"HUDDLE_HOME": t.TempDir(), "HUDDLE_STATE_DIR": "/var/lib/huddle"} // a daemon's: known
	if _, _, stderr := runMain(t, env, "groups", "--registry", ln.LocalAddr().String(), "--timeout", "200ms"); strings.Contains(stderr, "warning") {
		t.Errorf("groups with a daemon's HUDDLE_STATE_DIR set warned: %q", stderr)
	}
}

// TestKnownSettingsFollowTheFlags: the variables daemons accept are their
// flags', read from the flags themselves.
func TestKnownSettingsFollowTheFlags(t *testing.T) {
	known := knownSettings()
	for _, k := range []string{"HUDDLE_GROUP", "HUDDLE_STATE_DIR", "HUDDLE_MAX_MESSAGE", "HUDDLE_LEASE", "HUDDLE_DAEMON_LISTEN", "HUDDLE_LOG_FORMAT", "HUDDLE_HOME", "HUDDLE_REGISTRY_FINGERPRINT"} {
		if !known[k] {
			t.Errorf("%s is not a known setting", k)
		}
	}
	if known["HUDDLE_GROUPS"] {
		t.Error("HUDDLE_GROUPS is known")
	}
}

// TestUpRefusesATakenDaemonPort: huddle up puts its group daemon on the
// registry's port + 1; when that port is taken it fails, saying which port
// and what to do, and starts nothing (it used to move to a random port
// silently). --daemon-listen chooses another. Nothing is written either:
// the registry, which listened first, had created its state directory and
// key before the group daemon found its port taken.
func TestUpRefusesATakenDaemonPort(t *testing.T) {
	regPort, busy := consecutiveUDPPorts(t)
	defer busy.Close()
	dir := filepath.Join(t.TempDir(), "state")
	listen := "127.0.0.1:" + strconv.Itoa(regPort)
	code, stdout, stderr := runMain(t, nil, "up", "--no-mdns", "--listen", listen, "--state-dir", dir)
	if code != ExitRefused || stdout != "" || !strings.Contains(stderr, busy.LocalAddr().String()) || !strings.Contains(stderr, "--daemon-listen") {
		t.Fatalf("up with port+1 taken: exit %d, stdout %q, stderr %q; want 1, nothing started, and the port and --daemon-listen named", code, stdout, stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the state directory after up refused: %v, want none created", err)
	}
	v := startVerb(t, nil, "up", "--no-mdns", "--listen", listen, "--daemon-listen", "127.0.0.1:0", "--state-dir", dir)
	v.waitLine(t, regexp.MustCompile(`(?m)^huddle group daemon listening on (\S+),`))
	if code := v.stop(t); code != ExitOK {
		t.Fatalf("up with --daemon-listen: exit %d\n%s", code, v.stderr)
	}
}

// consecutiveUDPPorts finds a free UDP port on 127.0.0.1 whose next port
// is held by the returned socket. The free one is reserved (testport.Cell:
// below the ephemeral range, never another test process's): up binds it,
// releases it as it refuses, and binds it again; a port the kernel chose
// for a socket of this test was anyone's next port 0 in between.
func consecutiveUDPPorts(t *testing.T) (int, *net.UDPConn) {
	t.Helper()
	for range 100 {
		_, p, err := net.SplitHostPort(testport.Cell(t))
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1}); err == nil {
			return port, busy
		}
	}
	t.Fatal("no two consecutive free UDP ports")
	return 0, nil
}

// TestJSONLogsIncludeTheBanner: under --log-format json everything a daemon
// writes is JSON, the start banner included (it went to stdout as text,
// mixed into the journal under systemd).
func TestJSONLogsIncludeTheBanner(t *testing.T) {
	v := startVerb(t, nil, "up", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
		"--log-format", "json", "--metrics", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	want := []string{"registry listening", "group daemon listening", "hosting group", "clients", "metrics listening", "pprof listening"}
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		written := v.stderr.written() // the records are read again at the next write
		got := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(v.stderr.String()), "\n") {
			var rec map[string]any
			if line == "" {
				continue
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("a line of the log is not JSON: %q", line)
			}
			if msg, _ := rec["msg"].(string); msg != "" {
				got[msg] = true
			}
		}
		missing := slices.DeleteFunc(slices.Clone(want), func(m string) bool { return got[m] })
		if len(missing) == 0 {
			break
		}
		select {
		case <-written:
		case <-deadline.C:
			t.Fatalf("the JSON log has no %q records:\n%s", missing, v.stderr)
		}
	}
	if code := v.stop(t); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if out := v.stdout.String(); out != "" {
		t.Errorf("stdout under --log-format json: %q, want nothing", out)
	}
	// Each group is one "hosting group" record, with the keys the
	// daemon's log gives it: the banner's record of it had other keys
	// (name, not group), so a query on either missed half.
	var hosting []string
	for _, line := range strings.Split(strings.TrimSpace(v.stderr.String()), "\n") {
		var rec struct{ Msg, Group, UUID string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "hosting group" {
			hosting = append(hosting, rec.Group+" "+rec.UUID)
		}
	}
	if len(hosting) != 1 || !strings.HasPrefix(hosting[0], "lobby ") || len(hosting[0]) == len("lobby ") {
		t.Errorf("hosting group records (group uuid): %q, want one for lobby with its uuid", hosting)
	}
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
)

// TestStateDirInUse: a second daemon on a state directory in use refuses to
// start, naming the process holding it.
func TestStateDirInUse(t *testing.T) {
	dir := t.TempDir()
	v := startVerb(t, nil, "registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", dir, "--log-level", "warn")
	v.waitLine(t, upLine)
	code, stdout, stderr := runMain(t, nil, "registry", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", dir)
	want := fmt.Sprintf("state dir %s in use by PID %d", dir, os.Getpid())
	if code != ExitRefused || stdout != "" || !strings.Contains(stderr, want) {
		t.Errorf("second registry on %s: exit %d, stdout %q, stderr %q; want 1 and %q", dir, code, stdout, stderr, want)
	}
}

// TestSecretFileReadableByOthers: a --secret-file others can read is
// warned of, by serve and by join (key.pem is refused in that case; a
// secret may be shared on purpose, so it is a warning).
func TestSecretFileReadableByOthers(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("hunter2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	v := startVerb(t, nil, "up", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--secret-file", secret, "--log-level", "warn")
	reg := strings.Replace(v.waitLine(t, upLine), "0.0.0.0", "127.0.0.1", 1)
	if !strings.Contains(v.stderr.String(), "--secret-file "+secret+" can be read by other users (mode -rw-r--r--)") {
		t.Errorf("up with a world-readable secret file: stderr %q, want a warning", v.stderr)
	}
	u := newTestUser(t, reg)
	var code int
	var stderr string
	for range 200 { // until the group is listed
		if code, _, stderr = u.run(t, "join", "lobby", "--secret-file", secret); code != ExitRefused || !strings.Contains(stderr, "no such group") {
			break
		}
	}
	if code != ExitOK || !strings.Contains(stderr, "can be read by other users") {
		t.Errorf("join with a world-readable secret file: exit %d, stderr %q; want 0 and a warning", code, stderr)
	}
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, stderr := u.run(t, "join", "lobby", "--secret-file", secret); strings.Contains(stderr, "warning") {
		t.Errorf("join with a private secret file warned: %q", stderr)
	}
}

// TestJoinPrivateRefused: a join refused for a private group's secret
// says to give the secret, or that the one given is wrong; not that "this
// key may not do that", which is the generic advice and untrue here.
func TestJoinPrivateRefused(t *testing.T) {
	dir := t.TempDir()
	secret, wrong := filepath.Join(dir, "secret"), filepath.Join(dir, "wrong")
	for f, b := range map[string]string{secret: "hunter2\n", wrong: "hunter3\n"} {
		if err := os.WriteFile(f, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u := newTestUser(t, startUpWith(t, []string{"--secret-file", secret}))
	code, _, stderr := u.run(t, "join", "lobby")
	if code != ExitRefused || !strings.Contains(stderr, "give its secret: huddle join lobby --secret-file FILE") || strings.Contains(stderr, "this key") {
		t.Errorf("join without the secret: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = u.run(t, "join", "lobby", "--secret-file", wrong)
	if code != ExitRefused || !strings.Contains(stderr, "the secret in "+wrong+" is not the group's") || strings.Contains(stderr, "this key") {
		t.Errorf("join with a wrong secret: exit %d, stderr %q", code, stderr)
	}
	u.ok(t, "join", "lobby", "--secret-file", secret)
}

// TestLANAddr: listening on every address, the start lines offer a LAN
// address of this machine with the port; bound to one address, none.
func TestLANAddr(t *testing.T) {
	if got := lanAddr(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7373}); got != "" {
		t.Errorf("lanAddr(127.0.0.1:7373) = %q, want none", got)
	}
	var want []string
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				want = append(want, net.JoinHostPort(ipn.IP.String(), "7373"))
			}
		}
	}
	got := lanAddr(&net.UDPAddr{Port: 7373})
	switch {
	case len(want) == 0 && got != "":
		t.Errorf("lanAddr(:7373) = %q on a machine with no LAN address", got)
	case len(want) > 0 && !regexp.MustCompile(`:7373$`).MatchString(got):
		t.Errorf("lanAddr(:7373) = %q, want one of %v", got, want)
	case len(want) > 0 && !strings.Contains(strings.Join(want, " "), got):
		t.Errorf("lanAddr(:7373) = %q, not an address of this machine (%v)", got, want)
	}
}

// TestUnknownHostSaidInWords: a registry name that does not resolve is
// said as such, not with the resolver's Go text. (The error is made here:
// a test must not ask a real DNS server.)
func TestUnknownHostSaidInWords(t *testing.T) {
	err := fmt.Errorf("registry x: %w: resolve x:7373: %w", client.ErrUnreachable, &net.DNSError{Err: "no such host", Name: "nosuchhost.invalid", Server: "10.0.0.53:53", IsNotFound: true})
	msg, code := explain(err)
	if code != ExitUnreachable || !strings.Contains(msg, `cannot find the host "nosuchhost.invalid" (no such host)`) || strings.Contains(msg, "10.0.0.53") {
		t.Errorf("explain: %d, %q", code, msg)
	}
}

// TestHelpReadsAsPeopleWrite: every verb's --help (and each cell
// subcommand's) names its flags' values for what they are, not by Go type
// (--since TIME, not "--since string"; --group NAME, not "stringArray"),
// shows a boolean flag bare (--json, not pflag's --json[=true|false]),
// prints no empty default or empty Flags section, and a cell
// subcommand's synopsis names it once. Until session 21 pflag's text was
// shown as it is, huddle cell --help named none of its flags, and huddle
// cell add --help began "Usage: huddle cell add status|add|remove".
func TestHelpReadsAsPeopleWrite(t *testing.T) {
	helps := [][]string{{"cell", "--help"}, {"cell", "status", "--help"}, {"cell", "add", "--help"}, {"cell", "remove", "--help"}}
	for name := range verbs {
		helps = append(helps, []string{name, "--help"})
	}
	for _, args := range helps {
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		if code := Main(context.Background(), args, env); code != ExitOK {
			t.Errorf("huddle %s: exit %d, stderr %q", strings.Join(args, " "), code, errb.String())
			continue
		}
		help := out.String()
		for _, bad := range []string{"[=true|false]", " stringArray ", " string ", " strings ", " addrs ", " int ", " float ", "(default [])", "Flags:\n\n", "\n\n\n", "Usage: huddle cell status status"} {
			if strings.Contains(help, bad) {
				t.Errorf("huddle %s: %q in\n%s", strings.Join(args, " "), bad, help)
			}
		}
	}
	// huddle --help lists the exit codes a script tells outcomes apart by
	// (until session 21 only README did).
	var out bytes.Buffer
	Main(context.Background(), []string{"--help"}, Env{Stdout: &out, Stderr: io.Discard, Getenv: func(string) string { return "" }})
	for _, code := range []int{ExitOK, ExitRefused, ExitUsage, ExitUnreachable, ExitInterrupted, ExitReaderGone} {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^  %d +\S`, code)).MatchString(out.String()) {
			t.Errorf("huddle --help does not say what exit code %d means:\n%s", code, out.String())
		}
	}
	out.Reset()
	Main(context.Background(), []string{"cell", "--help"}, Env{Stdout: &out, Stderr: io.Discard, Getenv: func(string) string { return "" }})
	for _, want := range []string{"--server HOST:PORT", "--fingerprint FINGERPRINT", "--wait DURATION", "--json"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("huddle cell --help names no %s:\n%s", want, out.String())
		}
	}
	out.Reset()
	Main(context.Background(), []string{"cell", "add", "--help"}, Env{Stdout: &out, Stderr: io.Discard, Getenv: func(string) string { return "" }})
	if !strings.HasPrefix(out.String(), "Usage: huddle cell add --server HOST:PORT") {
		t.Errorf("huddle cell add --help: %q", strings.SplitN(out.String(), "\n", 2)[0])
	}
}

// TestStrayArgumentRefused: a verb that takes no argument refuses one,
// exit 2, as groups and doctor did already; id and version ignored it
// (huddle id lobby printed the fingerprint) until session 21, and bench's
// unknown scenario was said as "loadgen: invalid config".
func TestStrayArgumentRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"id", "lobby"}, `huddle id: unexpected argument "lobby"`},
		{[]string{"version", "x"}, `huddle version: unexpected argument "x"`},
		{[]string{"bench", "sendd"}, `huddle bench: no scenario "sendd": want one of send, `},
		// Refused before anything starts: no mDNS is sent.
		{[]string{"doctor", "--wait", "-1s"}, `huddle doctor: invalid argument "-1s" for "--wait" flag: want a duration of at least 1ms`},
		{[]string{"doctor", "--wait", "0"}, `huddle doctor: invalid argument "0" for "--wait" flag: want a duration of at least 1ms`},
	} {
		var out, errb bytes.Buffer
		home := t.TempDir()
		code := Main(context.Background(), tc.args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
			return map[string]string{"HUDDLE_HOME": home}[k]
		}})
		if code != ExitUsage || out.Len() != 0 || !strings.HasPrefix(errb.String(), tc.want) {
			t.Errorf("huddle %s: exit %d, stdout %q, stderr %q; want exit 2 saying %q", strings.Join(tc.args, " "), code, out.String(), errb.String(), tc.want)
		}
	}
}

// TestRegistryThatIsADaemon: a group daemon's address given as --registry
// (huddle up's other port, a likely slip) is said to be no registry, with
// where a registry is, by the commands and by doctor, which printed "all
// good" under its "NO: unsupported operation: list" and exited 3. Until
// session 21 the commands said "unsupported operation: list" and asked
// whether the server, which had just answered, was running. Its PIN is
// none (new until session 22).
func TestRegistryThatIsADaemon(t *testing.T) {
	reg := startUp(t, "lobby")
	u := newTestUser(t, reg)
	var g struct{ Addrs []string }
	if err := json.Unmarshal([]byte(u.ok(t, "groups", "--json")), &g); err != nil || len(g.Addrs) == 0 {
		t.Fatalf("groups --json: %v, %+v", err, g)
	}
	d := &testUser{home: u.home, registry: g.Addrs[0]}
	code, _, errs := d.run(t, "groups")
	if code != ExitUnreachable || !strings.Contains(errs, g.Addrs[0]+" (given): answers, but is no registry") ||
		!strings.Contains(errs, "give --registry a registry's address") || strings.Contains(errs, "is it running") {
		t.Errorf("groups at a daemon's address: exit %d, stderr:\n%s", code, errs)
	}
	// doctor's registry checks and verdict, as huddle doctor --registry
	// runs them (without its mDNS look, which a test must not make here).
	var out bytes.Buffer
	doc := doctorFor(t, &out, waitTimeout)
	doc.s.flags.registries = registryAddrsValue{g.Addrs[0]}
	_, code = doc.registries(t.Context())
	doc.finish(code)
	if code != ExitUnreachable || !strings.Contains(out.String(), "NO: not a registry") || strings.Contains(out.String(), "all good") ||
		!strings.Contains(out.String(), g.Addrs[0]+" answers, but is no registry (a group daemon?): give --registry a registry's address") {
		t.Errorf("doctor --registry at a daemon's address: exit %d, output:\n%s", code, out.String())
	}
	// Its PIN is none, not new: no key is pinned for a server that is no
	// registry, nor would be (it was "new" until session 22).
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[0] == g.Addrs[0] && f[3] != "none" {
			t.Errorf("doctor's row for the daemon has PIN %q, want none:\n%s", f[3], out.String())
		}
	}
	if rs := doc.report.Registries; len(rs) != 1 || rs[0].Pin != "none" {
		t.Errorf("doctor --json's registries: %+v, want the daemon's pin none", rs)
	}
}

// TestRegistryFailureSaidOnce: a registry's error on the line that names
// its address does not name the address twice more ("127.0.0.1:7373 (this
// machine): registry 127.0.0.1:7373: server unreachable: 127.0.0.1:7373"
// until session 21), and says its failure in words (until session 22:
// "server unreachable", or QUIC's own text).
func TestRegistryFailureSaidOnce(t *testing.T) {
	r := registryReport{from: fromLocal, addr: "127.0.0.1:7373", after: time.Second, err: fmt.Errorf("registry 127.0.0.1:7373: %w: 127.0.0.1:7373: %w", client.ErrUnreachable, context.DeadlineExceeded)}
	if got := summarize([]registryReport{r}); got != "127.0.0.1:7373 (this machine): nothing answered in 1s" {
		t.Errorf("summarize: %q", got)
	}
	// As quic-go closes a dial whose packets the socket could not send.
	r = registryReport{from: fromGiven, addr: "10.0.0.9:7373", after: time.Millisecond, err: fmt.Errorf("registry 10.0.0.9:7373: %w: 10.0.0.9:7373: %w", client.ErrUnreachable,
		errors.New("INTERNAL_ERROR (local): write udp [::]:43497->10.0.0.9:7373: sendmsg: network is unreachable"))}
	if got := summarize([]registryReport{r}); got != "10.0.0.9:7373 (given): this machine has no route to that network (network unreachable): check the address, and this machine's network connection" {
		t.Errorf("summarize: %q", got)
	}
}

// TestChatEventsDocumented: every event chat --json prints is named in
// README's --json paragraph, where a script's author looks for them. Until
// session 21 only in_doubt and gap were, of fifteen.
func TestChatEventsDocumented(t *testing.T) {
	src, err := os.ReadFile("chat.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, doc, ok := strings.Cut(string(readme), "`chat --json` prints")
	if !ok {
		t.Fatal(`README.md has no paragraph on "chat --json" events`)
	}
	doc, _, _ = strings.Cut(doc, "members `{fingerprint")
	kinds := regexp.MustCompile(`c\.(?:notice|event)\("([a-z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(kinds) < 10 {
		t.Fatalf("found %d chat events in chat.go; the pattern no longer matches how they are printed", len(kinds))
	}
	for _, k := range kinds {
		name := k[1]
		if name == "help" || name == "members" || name == "info" {
			name = "/" + name // the answers to commands, named by the command
		}
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("chat --json event %q is not in README's chat --json paragraph", k[1])
		}
	}
}

// TestSinceMistakeNamesTheFlag: a TIME that cannot be read is said under
// its flag, as --after's mistakes are; it read "cannot read time ..."
// until session 21.
func TestSinceMistakeNamesTheFlag(t *testing.T) {
	_, err := query("yesterday", "", 0, time.Now())
	if err == nil || !strings.HasPrefix(err.Error(), `--since "yesterday": not a time: give a date`) {
		t.Errorf("query --since yesterday: %v", err)
	}
}

package cli

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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

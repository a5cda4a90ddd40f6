//go:build linux

package e2e

import (
	"encoding/json"
	"net"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestDoctor runs huddle doctor against a registry listing three groups,
// one with a wide-character name and one whose daemon was killed: the
// tables line up by display width, each piece of advice is given once,
// doctor never tells the user to run doctor, and --json gives the same
// findings as one object (16.7, 16.14).
func TestDoctor(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--lease", "10m", "--state-dir", t.TempDir())
	startDaemon(t, "serve", "--group", "日本語🎉", "--group", "plain", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	gone := startDaemon(t, "serve", "--group", "gone", "--registry", reg.registry, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	alice := newUser(t, "alice", reg.registry)
	waitListed(t, alice, gone.groups["gone"])
	gone.proc.stop(t, syscall.SIGKILL) // listed for ten minutes more, answering nothing

	r := alice.run(t, "doctor", "--wait", "200ms", "--timeout", "3s")
	t.Logf("huddle doctor:\n%s", r.stdout)
	if r.code != 3 {
		t.Errorf("doctor with a daemon gone: exit %d, want 3", r.code)
	}
	if strings.Contains(r.stdout, "huddle doctor") || strings.Contains(r.stderr, "huddle doctor") {
		t.Errorf("doctor tells the user to run doctor:\n%s%s", r.stdout, r.stderr)
	}
	// The group daemons' table: the ADDRESS column starts at one display
	// column on every line, whatever the width of the names before it.
	var cols []int
	section := false
	for _, line := range strings.Split(r.stdout, "\n") {
		switch {
		case line == "group daemons:":
			section = true
			continue
		case !strings.HasPrefix(line, "  "):
			section = false
		}
		if !section {
			continue
		}
		i := strings.Index(line, "127.0.0.1:")
		if strings.HasPrefix(line, "  GROUP") {
			i = strings.Index(line, "ADDRESS")
		}
		if i < 0 {
			t.Fatalf("group daemons' line without an address: %q", line)
		}
		cols = append(cols, displayWidth(line[:i]))
	}
	if len(cols) != 4 {
		t.Fatalf("group daemons' table has %d lines, want a header and 3 groups:\n%s", len(cols), r.stdout)
	}
	for _, c := range cols[1:] {
		if c != cols[0] {
			t.Errorf("the ADDRESS column starts at display columns %v, not one:\n%s", cols, r.stdout)
			break
		}
	}
	advice := r.stdout[strings.Index(r.stdout, "\nadvice:"):]
	lines := strings.Split(strings.TrimSpace(advice), "\n")[1:]
	if len(lines) != 1 || !strings.Contains(lines[0], `group "gone"`) {
		t.Errorf("advice %q: want once, about the daemon gone", lines)
	}
	// The likeliest cause first: a daemon killed stays listed until its
	// lease lapses (here ten minutes), which the advice did not say.
	if !regexp.MustCompile(`it may have stopped without deregistering \(killed, crashed, or its host down: its registries list it until its lease lapses, in (9m[0-9]+s|10m0s)\)`).MatchString(advice) {
		t.Errorf("the advice about the daemon gone does not say it may have stopped, and when its listing lapses:\n%s", advice)
	}
	if n := strings.Count(r.stdout, "does not answer there"); n != 1 || strings.Contains(r.stdout, "is it running") {
		t.Errorf("the advice about the daemon gone is printed %d times, or the table repeats advice of its own:\n%s", n, r.stdout)
	}

	r = alice.run(t, "doctor", "--json", "--wait", "200ms", "--timeout", "3s")
	if r.code != 3 || strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
		t.Fatalf("doctor --json: want one line and exit 3: %s", r)
	}
	var rep struct {
		You        string `json:"you"`
		Registries []struct {
			Addr, From, Fingerprint string
			Answered                bool
			Groups                  int
		} `json:"registries"`
		Groups []struct {
			Name string
			OK   bool
		} `json:"groups"`
		Advice []string `json:"advice"`
		OK     bool     `json:"ok"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	if rep.OK || rep.You == "" || len(rep.Registries) != 1 || !rep.Registries[0].Answered || rep.Registries[0].From != "given" ||
		rep.Registries[0].Fingerprint != reg.regFP || rep.Registries[0].Groups != 3 || len(rep.Advice) != 1 {
		t.Errorf("doctor --json: %+v", rep)
	}
	ok := map[string]bool{}
	for _, g := range rep.Groups {
		ok[g.Name] = g.OK
	}
	if len(ok) != 3 || !ok["plain"] || !ok["日本語🎉"] || ok["gone"] {
		t.Errorf("doctor --json groups: %v", ok)
	}
}

// displayWidth counts East Asian wide characters and emoji as two columns,
// as a terminal shows them (enough for the names of TestDoctor).
func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		switch {
		case r >= 0x1100 && (r <= 0x115f || r >= 0x2e80 && r <= 0xa4cf || r >= 0xac00 && r <= 0xd7a3 || r >= 0xf900 && r <= 0xfaff || r >= 0xfe30 && r <= 0xfe4f || r >= 0xff00 && r <= 0xff60 || r >= 0xffe0 && r <= 0xffe6 || r >= 0x1f300 && r <= 0x1faff):
			n += 2
		default:
			n++
		}
	}
	return n
}

// TestDoctorKeyChange runs doctor after the registry a user pinned came back
// with another key: doctor shows the registry's row as a key change and
// advises, once, the forget-registry command to paste; it exits 1 as the
// other commands do.
func TestDoctorKeyChange(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	addr, oldFP := reg.registry, reg.regFP
	alice := newUser(t, "alice", addr)
	alice.ok(t, "groups") // pins the registry's key
	reg.stop(t)
	reg = startDaemon(t, "registry", "--listen", addr, "--state-dir", t.TempDir())
	defer reg.stop(t)

	r := alice.run(t, "doctor", "--wait", "200ms", "--timeout", "3s")
	t.Logf("huddle doctor:\n%s", r.stdout)
	if r.code != 1 {
		t.Errorf("doctor after a key change: exit %d, want 1", r.code)
	}
	if !strings.Contains(r.stdout, "KEY CHANGED") || !strings.Contains(r.stdout, oldFP[:9]) || !strings.Contains(r.stdout, reg.regFP[:9]) {
		t.Errorf("doctor's registry row does not show the key change from %s to %s", oldFP, reg.regFP)
	}
	if n := strings.Count(r.stdout, "run: huddle forget-registry "+addr+"\n"); n != 1 {
		t.Errorf("the forget-registry command is advised %d times, want once, ready to paste", n)
	}
}

// TestDoctorSaysAddresses runs a group daemon listening at one loopback
// address and registering another where nothing answers, then both. The
// doctor asked the addresses listed, together, and no other: the first
// was one of three guesses ("stopped without deregistering, an address
// unreachable from here, or a firewall"), the second "ok", "all good".
// Now it says the daemon answers at its registry's host, an address no
// registry lists, with the --advertise to give; and which listed address
// does not answer, beside the one that does.
func TestDoctorSaysAddresses(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--lease", "10m", "--state-dir", t.TempDir())
	listen := freeUDPAddr(t)
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatal(err)
	}
	dead := "127.0.0.2:" + port // loopback, where nothing listens
	alice := newUser(t, "alice", reg.registry)
	doctor := func(advertise ...string) (doctorOut, string) {
		t.Helper()
		args := []string{"--group", "lobby", "--registry", reg.registry, "--listen", listen, "--state-dir", t.TempDir()}
		for _, a := range advertise {
			args = append(args, "--advertise", a)
		}
		gd := startDaemon(t, "serve", args...)
		defer gd.stop(t)
		if !eventually(t, waitTimeout, func() bool {
			return strings.Contains(alice.ok(t, "groups", "--json"), `"addrs":["`+strings.Join(advertise, `","`)+`"]`)
		}) {
			t.Fatalf("the registry never listed lobby at %v", advertise)
		}
		// Both forms at once: each waits its whole --timeout for the
		// address where nothing answers.
		textRun := alice.start(t, "doctor", "--wait", "100ms", "--timeout", "3s")
		r := alice.run(t, "doctor", "--wait", "100ms", "--timeout", "3s", "--json")
		var out doctorOut
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
		}
		if r.code != 3 || out.OK {
			t.Errorf("doctor, lobby registered at %v: exit %d, ok %v; want 3, not ok", advertise, r.code, out.OK)
		}
		textRun.wait(t)
		text := textRun.stdout.String()
		t.Logf("huddle doctor, lobby listening at %s, registered at %v:\n%s", listen, advertise, text)
		return out, text
	}

	out, text := doctor(dead)
	want := "its daemon does not answer at " + dead + ", the address it registered, but answers at " + listen + ", which no registry lists"
	if !slices.ContainsFunc(out.Advice, func(a string) bool { return strings.Contains(a, want) && strings.Contains(a, "--advertise") }) ||
		!strings.Contains(text, "answers at "+listen+", NOT LISTED") {
		t.Errorf("lobby registered at %s, answering at %s: advice %q; want %q, with --advertise, and the table saying NOT LISTED", dead, listen, out.Advice, want)
	}
	if g := out.Groups; len(g) != 1 || !slices.Contains(g[0].At, doctorAt{Addr: listen, Listed: false, OK: true}) {
		t.Errorf("doctor --json groups: %+v; want %s among lobby's addresses, answering, not listed", g, listen)
	}

	out, text = doctor(listen, dead)
	want = "its daemon answers at " + listen + " but not at " + dead + ", which its registries list too"
	if !slices.ContainsFunc(out.Advice, func(a string) bool { return strings.Contains(a, want) }) || !strings.Contains(text, ", NOT at "+dead) {
		t.Errorf("lobby registered at %s and %s: advice %q; want %q, and the table saying NOT at %s", listen, dead, out.Advice, want, dead)
	}
	if g := out.Groups; len(g) != 1 || !g[0].OK || len(g[0].At) != 2 || !g[0].At[0].OK || g[0].At[1].OK || !g[0].At[1].Listed {
		t.Errorf("doctor --json groups: %+v; want lobby reached, %s answering, %s listed and not", g, listen, dead)
	}
}

// doctorOut is what TestDoctorSaysAddresses reads of huddle doctor --json.
type doctorOut struct {
	OK     bool     `json:"ok"`
	Advice []string `json:"advice"`
	Groups []struct {
		OK bool       `json:"ok"`
		At []doctorAt `json:"at"`
	} `json:"groups"`
}

type doctorAt struct {
	Addr   string `json:"addr"`
	Listed bool   `json:"listed"`
	OK     bool   `json:"ok"`
}

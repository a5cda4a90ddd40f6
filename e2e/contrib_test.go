//go:build linux

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// unit is a systemd unit file as key=value lines of its [Service] section
// (repeated keys keep every value, in order).
type unit map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			u[section+"."+k] = append(u[section+"."+k], v)
		}
	}
	return u
}

func (u unit) get(key string) string {
	if v := u["Service."+key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// TestSystemdUnits checks the units under contrib/systemd: the hardening
// they promise, systemd's own verdict on them where systemd-analyze is
// installed, and that the command they run, in the environment they give
// it, starts a daemon that stops cleanly on SIGTERM.
func TestSystemdUnits(t *testing.T) {
	for _, c := range []struct {
		file  string
		extra []string // what an operator's EnvironmentFile would add
	}{
		{"huddle-registry.service", nil},
		{"huddle-groups.service", []string{"HUDDLE_GROUP=lobby,ops", "HUDDLE_REGISTRY=127.0.0.1:9"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join("..", "contrib", "systemd", c.file)
			u := readUnit(t, path)
			for key, want := range map[string]string{
				"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
				"PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictNamespaces": "yes",
				"MemoryDenyWriteExecute": "yes", "KillSignal": "SIGTERM", "UMask": "0077",
			} {
				if got := u.get(key); got != want {
					t.Errorf("%s=%q, want %q", key, got, want)
				}
			}
			if u.get("RestartPreventExitStatus") != "2" {
				t.Error("RestartPreventExitStatus is not 2: a usage error (a bad setting) would restart the daemon every few seconds, for ever")
			}
			if c.file == "huddle-groups.service" {
				// The daemon needs its settings file; without it the unit
				// must not start (nor restart-loop).
				env := strings.TrimPrefix(u.get("EnvironmentFile"), "-")
				if cond := u["Unit.ConditionPathExists"]; env == "" || len(cond) != 1 || cond[0] != env {
					t.Errorf("ConditionPathExists=%v, want the EnvironmentFile %q, without which serve has no group", cond, env)
				}
				// And what it runs without the file is a usage error (2).
				p := startProc(t, c.file+" without settings", append(childEnv(t.TempDir()), "HUDDLE_STATE_DIR="+t.TempDir(), "HUDDLE_NO_MDNS=true"), false, endsItself, strings.Fields(u.get("ExecStart"))[1:]...)
				if code := p.wait(t); code != 2 {
					t.Errorf("%s without its settings: exit code %d, want 2", u.get("ExecStart"), code)
				}
			}
			if u.get("StateDirectory") == "" {
				t.Error("no StateDirectory: the daemon's key would not survive restarts")
			}
			if !strings.Contains(u.get("RestrictAddressFamilies"), "AF_NETLINK") {
				t.Error("RestrictAddressFamilies lacks AF_NETLINK, which listing interfaces for mDNS needs")
			}

			exec0 := strings.Fields(u.get("ExecStart"))
			if len(exec0) < 2 || exec0[0] != "/usr/local/bin/huddle" {
				t.Fatalf("ExecStart=%q", u.get("ExecStart"))
			}
			stateRoot := t.TempDir()
			if sa, err := exec.LookPath("systemd-analyze"); err == nil {
				analyze(t, sa, path, u)
			} else {
				t.Log("systemd-analyze not installed: unit syntax not checked by systemd")
			}

			// Run what the unit runs, with its environment (%S is the
			// state root), listening on loopback without mDNS.
			env := childEnv(t.TempDir())
			for _, e := range u["Service.Environment"] {
				for _, kv := range strings.Fields(e) {
					env = append(env, strings.ReplaceAll(kv, "%S", stateRoot))
				}
			}
			env = append(env, c.extra...)
			env = append(env, "HUDDLE_LISTEN=127.0.0.1:0", "HUDDLE_NO_MDNS=true")
			p := startProc(t, c.file, env, false, untilStopped, exec0[1:]...)
			// The units log JSON, the start lines included (on stderr).
			if !p.stderr.waitFor(waitTimeout, func(lines []string) bool {
				return strings.Contains(strings.Join(lines, "\n"), ` listening","addr":`)
			}) {
				t.Fatalf("%s did not start:\n%s\n%s", c.file, p.stdout, p.stderr)
			}
			entries, err := os.ReadDir(filepath.Join(stateRoot, u.get("StateDirectory")))
			if err != nil || len(entries) == 0 {
				t.Errorf("state directory %%S/%s not used: %v", u.get("StateDirectory"), err)
			}
			if code := p.stop(t, syscall.SIGTERM); code != 0 {
				t.Errorf("exit code %d after a stop signal, want 0\n%s", code, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), `"level":"INFO"`) {
				t.Errorf("HUDDLE_LOG_FORMAT=json from the unit did not give JSON logs:\n%s", p.stderr)
			}
		})
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// analyze runs systemd-analyze verify and security on a copy of the unit
// whose ExecStart names the binary under test (verify insists it exists).
func analyze(t *testing.T, sa, path string, u unit) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/huddle", huddleBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", tmp).CombinedOutput()
	if err != nil || strings.Contains(string(out), filepath.Base(path)) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ = exec.Command(sa, "security", "--offline=true", tmp).CombinedOutput()
	m := exposure.FindSubmatch(out)
	if m == nil {
		t.Logf("systemd-analyze security gave no exposure level:\n%s", out)
		return
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", level)
	if level > 2.0 {
		t.Errorf("exposure level %.1f, want at most 2.0 (OK):\n%s", level, out)
	}
}

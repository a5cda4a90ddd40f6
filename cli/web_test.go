package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOpenPage checks --open's launcher: the browser is handed a file of
// this user's alone that redirects to the link, never the link itself,
// which a command line would show to every user of the machine.
func TestOpenPage(t *testing.T) {
	bin := t.TempDir()
	got := filepath.Join(t.TempDir(), "args")
	// A stand-in for xdg-open (open on macOS) that records its arguments,
	// with nothing but the shell's builtins (PATH holds only itself).
	script := "#!/bin/sh\necho \"$@\" > " + got + "\n"
	for _, name := range []string{"xdg-open", "open"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	const url = "http://127.0.0.1:7380/?k=SECRETsecret_0123456789"
	path, _, err := openPage(url)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(filepath.Dir(path))
	deadline := time.Now().Add(10 * time.Second)
	var args []byte
	for {
		args, err = os.ReadFile(got)
		if (err == nil && strings.HasSuffix(string(args), "\n")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the browser was not started: %v", err)
	}
	if a := strings.TrimSpace(string(args)); a != path || strings.Contains(a, "SECRET") {
		t.Fatalf("the browser was given %q, want the launcher file %s and no secret", a, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("launcher mode %v, want 0600", fi.Mode().Perm())
	}
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `content="0;url=`+url+`"`) {
		t.Errorf("launcher page %q does not redirect to the link", page)
	}
}

// TestOpenPageFails: on a machine with no browser (a server, a desktop-less
// VM), xdg-open exits 3 saying "no method available", and huddle web
// --open said nothing: the user waited for a window. It says the browser
// did not open, with the launcher's word, and goes on serving the link.
func TestOpenPageFails(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho \"xdg-open: no method available for opening '$1'\" >&2\nexit 3\n"
	for _, name := range []string{"xdg-open", "open"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	home := t.TempDir()
	v := startVerb(t, func(k string) string {
		return map[string]string{"HUDDLE_HOME": home}[k]
	}, "web", "--open", "--listen", "127.0.0.1:0", "--no-mdns", "--registry", "127.0.0.1:1")
	v.waitLine(t, regexp.MustCompile(`(?m)^huddle web: (http://127\.0\.0\.1:\d+)/\?k=`))
	said := regexp.MustCompile(`(?m)^huddle web: the browser did not open \(.*no method available for opening.*\); open the link yourself$`)
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		written := v.stderr.written()
		if said.MatchString(v.stderr.String()) {
			break
		}
		select {
		case <-written:
		case <-deadline.C:
			t.Fatalf("huddle web --open with a launcher that failed did not say so; stderr:\n%s", v.stderr)
		}
	}
	if code := v.stop(t); code != ExitOK {
		t.Errorf("huddle web stopped with exit code %d, want 0", code)
	}
}

// TestWebRegistryList: huddle web --registry takes a comma-separated list,
// as every client command's --registry and HUDDLE_REGISTRY do. It took
// the list as one address ("lookup 127.0.0.1:7373,127.0.0.1:7390: no such
// host") and listed no group; a malformed address was found only then.
func TestWebRegistryList(t *testing.T) {
	a, b := startUp(t, "lobby"), startUp(t, "dev")
	home := t.TempDir()
	getenv := func(k string) string { return map[string]string{"HUDDLE_HOME": home}[k] }
	v := startVerb(t, getenv, "web", "--listen", "127.0.0.1:0", "--no-mdns", "--registry", a+","+b)
	link := v.waitLine(t, regexp.MustCompile(`(?m)^huddle web: (http://127\.0\.0\.1:\d+/\?k=\S+)$`))
	base, secret, _ := strings.Cut(link, "/?k=")
	type listJSON struct {
		Groups []struct {
			Name string `json:"name"`
		} `json:"groups"`
		Registries []struct {
			Addr  string `json:"addr"`
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"registries"`
	}
	// Each registry is polled on its own: the list has both once each
	// answered.
	var list listJSON
	var addrs, names []string
	for deadline := time.Now().Add(waitTimeout); ; {
		req, err := http.NewRequest("GET", base+"/api/groups", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		list = listJSON{}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		addrs, names = nil, nil
		for _, r := range list.Registries {
			if r.OK {
				addrs = append(addrs, r.Addr)
			}
		}
		for _, g := range list.Groups {
			names = append(names, g.Name)
		}
		slices.Sort(names)
		if slices.Equal(addrs, []string{a, b}) && slices.Equal(names, []string{"dev", "lobby"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("huddle web --registry %s,%s lists registries %q answering (%+v) and groups %q; want both, and dev and lobby", a, b, addrs, list.Registries, names)
		}
		<-time.After(50 * time.Millisecond) // polling a condition, with a deadline
	}
	if code := v.stop(t); code != ExitOK {
		t.Errorf("huddle web stopped with exit code %d", code)
	}

	bad := startVerb(t, getenv, "web", "--listen", "127.0.0.1:0", "--no-mdns", "--registry", a+",not an/address")
	select {
	case code := <-bad.code:
		bad.code <- code
		if code != ExitUsage || !strings.Contains(bad.stderr.String(), `"not an/address"`) {
			t.Errorf("huddle web --registry with a malformed address: exit %d, stderr %q; want 2, naming it", code, bad.stderr)
		}
	case <-time.After(waitTimeout):
		t.Fatal("huddle web ran with a malformed --registry address")
	}
}

// TestWebPortInUse: huddle web on a port another program holds says so as
// the daemons do, exit 1 (README: "a daemon could not listen (its port in
// use)"). It said "web: listen: listen tcp 127.0.0.1:7380: bind: address
// already in use" and exited 3, as if a server were unreachable.
func TestWebPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	home := t.TempDir()
	var out, errb strings.Builder
	code := Main(t.Context(), []string{"web", "--listen", l.Addr().String(), "--no-mdns", "--registry", "127.0.0.1:1"},
		Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return map[string]string{"HUDDLE_HOME": home}[k] }})
	want := "huddle web: --listen " + l.Addr().String() + ": the address is in use"
	if code != ExitRefused || !strings.HasPrefix(errb.String(), want) {
		t.Errorf("huddle web on a port in use: exit %d, stderr %q; want exit 1 saying %q", code, errb.String(), want)
	}
}

package cli

import (
	"os"
	"path/filepath"
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
	path, err := openPage(url)
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

//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hregistry "github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/wire"
)

// TestLANPinsFull: a LAN flood of registry names does not displace the
// user's pin. The user's known_registries pins the office registry
// (mdns:office (TAG)) and 255 more names of an advertiser's, as after a
// flood (Browse takes 32 new names a run, so 8 runs of one). A stranger's
// registry under a new name is used but not pinned, with a warning naming
// huddle forget-registry; then the advertiser presents, under the office's
// name, a key of theirs with the same 40-bit tag, and the command refuses
// it as a changed key. (Grinding 40 bits is beyond a test: the test makes
// the collision on the user's side, pinning a key that shares the
// advertiser's tag.) Until this was found the stranger's name pushed out
// the office pin (the one unused longest) and the advertiser's key was
// pinned under the office's name: exit 0.
func TestLANPinsFull(t *testing.T) {
	t.Parallel() // its LAN is namespaces of its own
	lan := netlab.New(t)
	h1 := lan.AddHost("cli", "10.79.0.3/24")
	h2 := lan.AddHost("evil", "10.79.0.4/24")
	cli := &lanUser{t: t, host: h1, home: filepath.Join(t.TempDir(), "alice")}

	evilState := t.TempDir()
	evil, err := identity.LoadOrCreate(evilState)
	if err != nil {
		t.Fatal(err)
	}
	officeKey := evil.Fingerprint()
	officeKey[len(officeKey)-1] ^= 1 // the user's office registry: another key, the same tag
	officeName := fmt.Sprintf("%soffice (%s)", identity.DiscoveredPrefix, officeKey.Short())
	var file bytes.Buffer
	fmt.Fprintf(&file, "%s %s\n", officeName, officeKey)
	for i := range identity.MaxDiscoveredPins - 1 {
		fmt.Fprintf(&file, "%sflood %d %s\n", identity.DiscoveredPrefix, i, wire.Fingerprint{byte(i), byte(i >> 8), 3})
	}
	path := filepath.Join(cli.home, identity.KnownHostsFile)
	if err := os.MkdirAll(cli.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// A stranger's registry under a new name: used, not pinned, said.
	stranger := startImpostor(t, h2, t.TempDir(), "a stranger")
	var last lanResult
	if !eventually(t, waitTimeout, func() bool {
		last = cli.run("groups")
		return strings.Contains(last.stderr, "10.79.0.4:7373")
	}) {
		t.Fatalf("the stranger's registry never answered; last exit %d, stderr:\n%s", last.code, last.stderr)
	}
	t.Logf("groups with the file full: exit %d, stderr:\n%s", last.code, last.stderr)
	if last.code != 0 || !strings.Contains(last.stderr, "not pinned") || !strings.Contains(last.stderr, "huddle forget-registry") {
		t.Errorf("groups with the file full: exit %d; want 0 and a warning naming huddle forget-registry", last.code)
	}
	stranger()

	// The advertiser's key under the office's name: refused.
	startImpostor(t, h2, evilState, "office")
	if !eventually(t, waitTimeout, func() bool {
		last = cli.run("groups")
		// Refused, or (before the fix) listed: either says it answered.
		return strings.Contains(last.stderr, "presented fingerprint") || strings.Contains(last.stderr, "10.79.0.4:7373")
	}) {
		t.Fatalf("the impostor never answered; last exit %d, stderr:\n%s", last.code, last.stderr)
	}
	t.Logf("groups with the impostor under %q: exit %d, stderr:\n%s", officeName, last.code, last.stderr)
	if last.code == 0 || !strings.Contains(last.stderr, "presented fingerprint") || !strings.Contains(last.stderr, "huddle forget-registry") {
		t.Errorf("another key under the pinned name %q: exit %d; want a refusal naming huddle forget-registry", officeName, last.code)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, file.Bytes()) {
		t.Errorf("known_registries changed; now:\n%s", after)
	}
}

// startImpostor runs, in host h, a registry with the key in state (made
// if none), advertised over mDNS under instance; the returned func stops it.
func startImpostor(t *testing.T, h *netlab.Host, state, instance string) func() {
	t.Helper()
	return startInHost(t, h, "TestLANImpostor", "HUDDLE_IMPOSTOR_STATE="+state, "HUDDLE_IMPOSTOR_INSTANCE="+instance)
}

// TestLANImpostor is the impostor's process in TestLANPinsFull: a real
// registry whose key is its own, advertised under the instance name given.
// It does nothing when run as an ordinary test.
func TestLANImpostor(t *testing.T) {
	if _, ok := netlab.InHost(); !ok || os.Getenv("HUDDLE_IMPOSTOR_STATE") == "" {
		t.Skip("helper process of TestLANPinsFull")
	}
	r, err := hregistry.New(hregistry.Config{Listen: ":7373", StateDir: os.Getenv("HUDDLE_IMPOSTOR_STATE"), MDNS: true, Instance: os.Getenv("HUDDLE_IMPOSTOR_INSTANCE")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r.Serve(ctx)
	r.Close()
}

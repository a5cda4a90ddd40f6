package client

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// TestRefusedKeysBounded: a rogue answering at a pinned address presents a
// new key at each handshake, for free; the Client remembers the first
// maxRefusedKeys it refused, not every one (the map grew by one per poll of
// huddle web for as long as the rogue answered), and still takes back its
// first-use pin of a key refused past the bound.
func TestRefusedKeysBounded(t *testing.T) {
	kh := identity.OpenKnownHosts(filepath.Join(t.TempDir(), "known"))
	var ps pinsSeen
	log := slog.New(slog.DiscardHandler)
	late := wire.Fingerprint{0xff, 0xff}
	if err := ps.pin(t.Context(), kh, "10.0.0.2:7373", late, log); err != nil {
		t.Fatal(err)
	}
	for i := range 3 * maxRefusedKeys {
		ps.refuse(t.Context(), kh, &identity.ChangedError{Name: "10.0.0.1:7373", Presented: wire.Fingerprint{byte(i), byte(i >> 8), 1}}, log)
	}
	if n := len(ps.refused); n != maxRefusedKeys {
		t.Errorf("%d keys refused, %d remembered; want %d", 3*maxRefusedKeys, n, maxRefusedKeys)
	}
	ps.refuse(t.Context(), kh, &identity.ChangedError{Name: "10.0.0.1:7373", Presented: late}, log)
	if _, ok, err := kh.Lookup("10.0.0.2:7373"); ok || err != nil {
		t.Errorf("a key refused past the bound: its first-use pin elsewhere kept (err %v)", err)
	}
}

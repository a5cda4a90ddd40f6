package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/huddle-chat/huddle/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoadOrCreateKeepsKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "id")
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key mode = %v, want %v", got, want)
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != b.Fingerprint() {
		t.Errorf("fingerprint changed across loads: %s then %s", a.Fingerprint(), b.Fingerprint())
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); !errors.Is(err, ErrBadKey) {
		t.Errorf("world-readable key: err = %v, want ErrBadKey", err)
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); !errors.Is(err, ErrBadKey) {
		t.Errorf("err = %v, want ErrBadKey", err)
	}
}

// TestPinnedHandshake dials a real QUIC listener on loopback and checks both
// sides see each other's fingerprint, and that a wrong pin fails the
// handshake with a *MismatchError.
func TestPinnedHandshake(t *testing.T) {
	server, _ := Generate()
	client, _ := Generate()
	ln := listen(t, server)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	accepted := make(chan wire.Fingerprint, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			close(accepted)
			return
		}
		fp, _ := PeerFingerprint(conn.ConnectionState().TLS)
		accepted <- fp
		conn.CloseWithError(0, "")
	}()

	conn, err := dial(t).Dial(ctx, ln.Addr(), client.ClientTLS(server.Fingerprint(), nil), nil)
	if err != nil {
		t.Fatalf("dial with the right pin: %v", err)
	}
	if got, _ := PeerFingerprint(conn.ConnectionState().TLS); got != server.Fingerprint() {
		t.Errorf("client saw %s, want %s", got, server.Fingerprint())
	}
	if got := <-accepted; got != client.Fingerprint() {
		t.Errorf("server saw %s, want %s", got, client.Fingerprint())
	}
	conn.CloseWithError(0, "")

	stranger, _ := Generate()
	_, err = dial(t).Dial(ctx, ln.Addr(), client.ClientTLS(stranger.Fingerprint(), nil), nil)
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("dial with the wrong pin: err = %v, want *MismatchError", err)
	}
	if mm.Got != server.Fingerprint() || mm.Want != stranger.Fingerprint() {
		t.Errorf("mismatch = %+v", mm)
	}
}

func TestServerRequiresClientCertificate(t *testing.T) {
	server, _ := Generate()
	ln := listen(t, server)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		if conn, err := ln.Accept(ctx); err == nil {
			conn.CloseWithError(0, "")
		}
	}()
	tc := (&Identity{}).ClientTLS(server.Fingerprint(), nil)
	tc.Certificates = nil
	conn, err := dial(t).Dial(ctx, ln.Addr(), tc, nil)
	if err == nil {
		// TLS 1.3 lets the client finish before the server checks its
		// certificate; the server then closes the connection.
		_, err = conn.AcceptStream(ctx)
	}
	if err == nil {
		t.Fatal("connection without a client certificate was accepted")
	}
}

// listen starts a QUIC listener for id on its own transport, closed (and
// waited for) at cleanup.
func listen(t *testing.T, id *Identity) *quic.Listener {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(id.ServerTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); tr.Close(); udp.Close() })
	return ln
}

// dial returns a client transport closed at cleanup.
func dial(t *testing.T) *quic.Transport {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return tr
}

func TestKnownHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	a, _ := Generate()
	b, _ := Generate()
	if err := k.Check(t.Context(), "reg:7373", a.Fingerprint()); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := k.Check(t.Context(), "reg:7373", a.Fingerprint()); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	err := OpenKnownHosts(path).Check(t.Context(), "reg:7373", b.Fingerprint())
	var ce *ChangedError
	if !errors.As(err, &ce) {
		t.Fatalf("changed key: err = %v, want *ChangedError", err)
	}
	if ce.Pinned != a.Fingerprint() || ce.Presented != b.Fingerprint() {
		t.Errorf("ChangedError = %+v", ce)
	}
	if ok, err := k.Forget(t.Context(), "reg:7373"); !ok || err != nil {
		t.Fatalf("Forget = %v, %v", ok, err)
	}
	if err := k.Check(t.Context(), "reg:7373", b.Fingerprint()); err != nil {
		t.Fatalf("after forget: %v", err)
	}
	got, ok, err := k.Lookup("reg:7373")
	if err != nil || !ok || got != b.Fingerprint() {
		t.Errorf("Lookup = %s, %v, %v; want %s", got, ok, err, b.Fingerprint())
	}
	if err := k.Check(t.Context(), "mdns:huddle registry on host", a.Fingerprint()); err != nil {
		t.Fatalf("name with spaces: %v", err)
	}
	if got, ok, err := OpenKnownHosts(path).Lookup("mdns:huddle registry on host"); err != nil || !ok || got != a.Fingerprint() {
		t.Errorf("Lookup of a name with spaces = %s, %v, %v", got, ok, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
}

// TestForgetCommandPastes checks that the forget-registry command a key
// change suggests survives a POSIX shell: each name comes back as one
// argument, unchanged (16.10: an mDNS name has spaces and parentheses).
func TestForgetCommandPastes(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("no sh to paste into")
	}
	for _, name := range []string{
		"127.0.0.1:7373",
		"registry.example:7373",
		"[::1]:7373",
		"mdns:huddle registry on vm (abcd-efgh)",
		"mdns:huddle registry on vm (abcd-efgh) #2",
		`mdns:it's "quoted" $HOME \ *`,
	} {
		cmd := (&ChangedError{Name: name}).ForgetCommand()
		arg, ok := strings.CutPrefix(cmd, "huddle forget-registry ")
		if !ok {
			t.Fatalf("command %q", cmd)
		}
		out, err := exec.Command(sh, "-c", `printf '%s|' `+arg).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if got := strings.TrimSuffix(string(out), "|"); got != name {
			t.Errorf("pasting %q gives the argument %q, want %q", cmd, got, name)
		}
	}
}

// TestKnownHostsNameIsOneLine checks that a name the file cannot hold on
// one line is refused, and pins nothing: an mDNS instance name is anyone's
// to choose on the LAN, and one with line breaks ("a FP\n10.0.0.9:7373
// FP\nb", the fingerprints without dashes to fit DNS labels) added lines
// of its own to the file, pinning a registry's address to the advertiser's
// key.
func TestKnownHostsNameIsOneLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	evil, _ := Generate()
	fp := strings.ReplaceAll(evil.Fingerprint().String(), "-", "")
	for _, name := range []string{
		"mdns:a " + fp + "\n10.0.0.9:7373 " + fp + "\nb",
		"mdns:a " + fp + "\r10.0.0.9:7373 " + fp,
		"mdns:\x1b]0;title\x07",
		"mdns:\xff",
		"",
	} {
		err := k.Check(t.Context(), name, evil.Fingerprint())
		if !errors.Is(err, ErrBadPinName) {
			t.Errorf("Check(%q) = %v, want ErrBadPinName", name, err)
		}
	}
	if _, ok, err := OpenKnownHosts(path).Lookup("10.0.0.9:7373"); ok || err != nil {
		t.Errorf("Lookup of the address a name smuggled in = %v, %v; want no pin", ok, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file was written: %v", err)
	}
}

// TestDiscoveredPinsBounded checks that known_registries holds at most
// MaxDiscoveredPins pins of registries found over mDNS, and that a flood of
// names past it displaces none of the user's: anyone on a LAN advertises
// registries under names of their choosing (a client pinned up to 32 new
// names a run, a long-running huddle web 32 every two minutes, for ever).
// The attack: the user has mdns:office pinned; an advertiser gets 256+
// names of theirs pinned, then presents a key of theirs under
// "office". Until this was found the flood pushed the user's pin out (the
// one unused longest was dropped) and the advertiser's key was pinned under
// the name the user trusted; now it is refused as a changed key, and the
// flood's names past the bound are not pinned (ErrPinsFull, the file not
// written).
func TestDiscoveredPinsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	key := func(i int) wire.Fingerprint { return wire.Fingerprint{byte(i), byte(i >> 8), 1} }
	name := func(i int) string { return fmt.Sprintf("%sflood %d", DiscoveredPrefix, i) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	office := DiscoveredPrefix + "huddle registry on office (abcd-efgh)"
	userKey, attackerKey := key(5000), key(6000)
	must(k.Check(t.Context(), "192.168.1.20:7373", key(9999)))
	must(k.Check(t.Context(), office, userKey))
	full := 0
	var before []byte
	for i := range 3 * MaxDiscoveredPins {
		switch err := k.Check(t.Context(), name(i), key(i)); {
		case i < MaxDiscoveredPins-1:
			must(err)
		case errors.Is(err, ErrPinsFull):
			full++
		case full == 0 && i == MaxDiscoveredPins-1:
			t.Errorf("Check of flood name %d with the file full = %v, want ErrPinsFull", i, err)
		}
		if i == MaxDiscoveredPins-1 { // full now: the file is no longer written
			var err error
			before, err = os.ReadFile(path)
			must(err)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("the file changed after it was full")
	}
	t.Logf("%d flood names pinned, %d refused as full", 3*MaxDiscoveredPins-full, full)
	pins, err := k.read()
	must(err)
	if n := pins.discovered(); n != MaxDiscoveredPins {
		t.Errorf("%d discovered pins kept, want %d", n, MaxDiscoveredPins)
	}
	var ce *ChangedError
	if err := k.Check(t.Context(), office, attackerKey); !errors.As(err, &ce) || ce.Pinned != userKey || ce.Presented != attackerKey {
		t.Fatalf("the advertiser's key under the user's pinned name after the flood: Check = %v, want a *ChangedError pinned %v presented %v", err, userKey, attackerKey)
	}
	if fp, ok, err := k.Lookup(office); !ok || err != nil || fp != userKey {
		t.Errorf("Lookup(%q) = %v, %v, %v; want the user's key", office, fp, ok, err)
	}
	for _, n := range []string{"192.168.1.20:7373", name(0), name(MaxDiscoveredPins - 2)} {
		if _, ok, _ := k.Lookup(n); !ok {
			t.Errorf("%q was dropped", n)
		}
	}
	if _, ok, _ := k.Lookup(name(MaxDiscoveredPins - 1)); ok {
		t.Errorf("a flood name past the bound was pinned")
	}
	must(k.Check(t.Context(), "10.0.0.1:7373", key(7000))) // addresses are bounded apart
	if found, err := k.Forget(t.Context(), name(0)); !found || err != nil {
		t.Fatalf("Forget = %v, %v", found, err)
	}
	must(k.Check(t.Context(), name(MaxDiscoveredPins-1), key(MaxDiscoveredPins-1))) // a place freed by the user
}

// TestNewKeyDurable: a new key is on the device, whole, before it is used,
// and so is the directory entry naming it: the file is synced before it
// appears under its name (a link from a synced temporary file), and the
// directory after. It was written and closed, never synced: a power cut
// within the half minute the kernel may hold it left key.pem empty or
// missing, and a daemon whose fingerprint clients had pinned then refused
// to start (no PEM block) or came back under another key. No temporary
// file is left behind.
func TestNewKeyDurable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	var events []string
	s := syncs{
		file: func(f *os.File) error {
			if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
				events = append(events, "file synced after key.pem appeared")
			} else {
				events = append(events, "file")
			}
			return f.Sync()
		},
		dir: func(d string) error {
			events = append(events, "dir "+filepath.Base(d))
			return syncDir(d)
		},
	}
	id, err := loadOrCreate(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dir " + filepath.Base(filepath.Dir(dir)), "file", "dir state"}; !slices.Equal(events, want) {
		t.Errorf("syncs %q, want %q", events, want)
	}
	again, err := LoadOrCreate(dir)
	if err != nil || again.Fingerprint() != id.Fingerprint() {
		t.Fatalf("loaded again: %v, %v; want the key created", again, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != KeyFile {
		t.Errorf("state dir holds %v, want key.pem alone", ents)
	}
	// A temporary file a crash left (a create killed before its link, or
	// after it) goes at the next load.
	left := filepath.Join(dir, "."+KeyFile+"-123")
	if err := os.WriteFile(left, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after a load: %v, want it removed", left, err)
	}
}

// TestKnownHostsConcurrentWriters: processes pinning at once (here, handles
// of their own on one file, as two commands or a command and huddle web
// have) lose none of each other's pins. Each read the file, added its pin
// and wrote it back, so the last write dropped the pins written since its
// read: a registry pinned by one command was trusted on first use again by
// the next, under whatever key it then presented.
func TestKnownHostsConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	const writers, each = 8, 16
	errs := make(chan error, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		k := OpenKnownHosts(path) // a process of its own: its own lock
		wg.Go(func() {
			for i := range each {
				errs <- k.Check(t.Context(), fmt.Sprintf("10.0.%d.%d:7373", w, i), wire.Fingerprint{byte(w), byte(i), 1})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	pins, err := OpenKnownHosts(path).read()
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != writers*each {
		t.Fatalf("%d pins in the file after %d writers pinned %d each, want %d", len(pins), writers, each, writers*each)
	}
}

// TestAddressPinsBounded: pins of addresses are bounded apart from those of
// names found over mDNS. A full file pins no new address (ErrPinsFull,
// nothing written) and drops none; names found over mDNS are still pinned,
// and a flood of them (full too) leaves addresses their room. Scripts naming
// a registry on a new port each run grew the file without end.
func TestAddressPinsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	key := func(i int) wire.Fingerprint { return wire.Fingerprint{byte(i), byte(i >> 8), 4} }
	// A LAN flood first (it takes none of the addresses' room), then all
	// but one of the addresses the file may hold, written as Check writes
	// them (Check by Check, the file read and written whole each time, was
	// seconds under -race).
	var file bytes.Buffer
	for i := range MaxDiscoveredPins {
		fmt.Fprintf(&file, "%sflood %d %s\n", DiscoveredPrefix, i, key(i))
	}
	for i := range MaxAddressPins - 1 {
		fmt.Fprintf(&file, "127.0.0.1:%d %s\n", 10000+i, key(i))
	}
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Check(t.Context(), "127.0.0.1:20000", key(7000)); err != nil {
		t.Fatalf("the last address the file may hold: %v", err)
	}
	if err := k.Check(t.Context(), DiscoveredPrefix+"flood 0", key(0)); err != nil {
		t.Fatalf("a pinned name with the file full: %v", err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Check(t.Context(), "127.0.0.1:9999", key(9999)); !errors.Is(err, ErrPinsFull) {
		t.Fatalf("Check of a new address with %d pinned = %v, want ErrPinsFull", MaxAddressPins, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("the file changed when a new address was refused as full")
	}
	var ce *ChangedError
	if err := k.Check(t.Context(), "127.0.0.1:10000", key(8000)); !errors.As(err, &ce) {
		t.Errorf("another key at a pinned address with the file full: Check = %v, want a *ChangedError", err)
	}
	if found, err := k.Forget(t.Context(), "127.0.0.1:10000"); !found || err != nil {
		t.Fatalf("Forget = %v, %v", found, err)
	}
	if err := k.Check(t.Context(), "127.0.0.1:9999", key(9999)); err != nil {
		t.Errorf("Check of a new address after the user forgot one: %v", err)
	}
}

// TestKnownHostsPinnedNeedsNoLock: checking a name pinned already writes
// nothing, so it takes no lock. Every command checks its registry's pin:
// since the writers' lock (session 14), one run where the lock file could
// not be made (a read-only configuration directory, a file system without
// locks) failed every command, though nothing was to be written. Here the
// lock file's place holds a directory, which no lock can be taken on.
func TestKnownHostsPinnedNeedsNoLock(t *testing.T) {
	a, b := wire.Fingerprint{1}, wire.Fingerprint{2}
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	if err := k.Check(t.Context(), "reg:7373", a); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + ".lock"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path+".lock", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := k.Check(t.Context(), "reg:7373", a); err != nil {
		t.Errorf("Check of the pinned key, no lock to be had: %v", err)
	}
	var ce *ChangedError
	if err := k.Check(t.Context(), "reg:7373", b); !errors.As(err, &ce) {
		t.Errorf("Check of another key, no lock to be had: %v, want a *ChangedError", err)
	}
	if err := k.Check(t.Context(), "other:7373", b); err == nil {
		t.Errorf("a new pin was written with no lock to be had")
	}
}

// TestKnownHostsHugeFile: a known_registries written before addresses were
// bounded (session 14) may hold any number of them: scripts that named a
// new address each run grew it without end, and nothing shrinks it. Each
// line read was compared with every pin before it (a name pinned twice
// counts at its last line), so each read of the file took time in the
// square of its lines: 100,000 pins, 15.7 s, at every command's every
// lookup. Read in one pass, a name's last line still counts, in the
// order of the last lines.
//
// The file's size is chosen so that one bound in seconds tells the two
// apart with room on both sides under -race at CI's load: 200,000 pins
// read in one pass took 39 s at load 35 (session 22: over the 30 s bound
// it had then), and 40,000 in the square took 55-65 s at load 30. At
// 80,000 pins one pass takes up to ~16 s there and the square ~4 min: the
// bound, 60 s, is ~4 times each side. (A ratio of two reads' times was
// tried: under -race a short read's time varies too much for it.)
func TestKnownHostsHugeFile(t *testing.T) {
	const lines = 80_000
	path := writeHugeKnownHosts(t, lines)
	type answer struct {
		pins pinList
		err  error
	}
	read := make(chan answer, 1)
	began := time.Now()
	go func() {
		pins, err := OpenKnownHosts(path).read()
		read <- answer{pins, err}
	}()
	var a answer
	select {
	case a = <-read:
	case <-time.After(60 * time.Second):
		t.Fatalf("reading a file of %d pins took over 60 s: the read grows with the square of its lines (one pass takes ~16 s at most under -race at load 35)", lines)
	}
	t.Logf("%d pins read in %v", lines, time.Since(began))
	if a.err != nil {
		t.Fatal(a.err)
	}
	checkHugeKnownHosts(t, a.pins, lines)
}

// writeHugeKnownHosts writes a known_registries of lines pins, one name
// each, and the 8th name (10.0.0.7) pinned again by hand at the end. The
// file is made of 256 keys' lines, each encoded once: the encoding of
// 200,000 took longer than the read under -race (~8 s on two loaded cores).
func writeHugeKnownHosts(t *testing.T, lines int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	var keys [256]string
	for i := range keys {
		keys[i] = wire.Fingerprint{byte(i)}.String()
	}
	var file bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&file, "10.%d.%d.%d:7373 %s\n", i>>16, i>>8&255, i&255, keys[i&255])
	}
	fmt.Fprintf(&file, "10.0.0.7:7373 %s\n", wire.Fingerprint{9})
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkHugeKnownHosts checks a read of writeHugeKnownHosts' file: the
// name pinned twice counts once, at its last line; the others in order.
func checkHugeKnownHosts(t *testing.T, pins pinList, lines int) {
	t.Helper()
	if len(pins) != lines || pins[lines-1] != (pin{"10.0.0.7:7373", wire.Fingerprint{9}}) || pins[6].name != "10.0.0.6:7373" || pins[7].name != "10.0.0.8:7373" {
		t.Errorf("read %d pins, the last %+v, the 7th and 8th %q %q; want %d, the one pinned twice last at its last line, the others in order",
			len(pins), pins[len(pins)-1], pins[6].name, pins[7].name, lines)
	}
}

// TestKnownHostsLongLine: a line longer than the reader takes (64 KiB: a
// file overwritten with other data, a binary copied over it) failed every
// command with "known registries: bufio.Scanner: token too long", naming
// neither the file nor the line the user must mend. The error now names
// both, as for any line it cannot read.
func TestKnownHostsLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	file := fmt.Sprintf("reg:7373 %s\n%s\n", wire.Fingerprint{1}, strings.Repeat("x", 70<<10))
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := OpenKnownHosts(path).Lookup("reg:7373")
	if err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("Lookup in a file whose second line is 70 KiB: %v; want an error naming %s:2", err, path)
	}
}

// TestKnownHostsSymlinked: a known_registries that is a symbolic link (a
// dotfile kept elsewhere, shared by two HUDDLE_HOMEs) was replaced by a
// regular file at the first pin (the new file renamed over the link), so
// the file it named stopped getting pins, and a second path to it locked
// a lock file of its own: writers through the two lost each other's pins.
// A change is now written to the file the link names, and locked beside
// it; a link to a file not made yet is made there.
func TestKnownHostsSymlinked(t *testing.T) {
	for _, exists := range []bool{true, false} {
		real := filepath.Join(t.TempDir(), "dotfiles", KnownHostsFile)
		if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
			t.Fatal(err)
		}
		if exists {
			if err := OpenKnownHosts(real).Check(t.Context(), "old:7373", wire.Fingerprint{1}); err != nil {
				t.Fatal(err)
			}
		}
		link := filepath.Join(t.TempDir(), KnownHostsFile)
		if err := os.Symlink(filepath.Join("..", filepath.Base(filepath.Dir(filepath.Dir(real))), "dotfiles", KnownHostsFile), link); err != nil {
			t.Fatal(err)
		}
		if err := OpenKnownHosts(link).Check(t.Context(), "new:7373", wire.Fingerprint{2}); err != nil {
			t.Fatalf("exists %v: Check through the link: %v", exists, err)
		}
		if st, err := os.Lstat(link); err != nil || st.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("exists %v: the link after a pin: %v, %v; want the link kept", exists, st.Mode(), err)
		}
		if fp, ok, err := OpenKnownHosts(real).Lookup("new:7373"); err != nil || !ok || fp != (wire.Fingerprint{2}) {
			t.Errorf("exists %v: the file the link names has %v %v %v; want the new pin", exists, fp, ok, err)
		}
		if _, err := os.Stat(real + ".lock"); err != nil {
			t.Errorf("exists %v: no lock beside the file the link names: %v", exists, err)
		}
	}
}

// TestPinNameHasNoFormatCharacter: a name that holds a format character
// (a bidirectional override, a zero-width space or joiner, the BOM) or a
// line or paragraph separator is refused, and pins nothing: each reads as
// another name ("mdns:office" and "mdns:office\u200b" alike, each pinned
// to its own key), as group and member names refuse them (wire.CheckName).
// Until session 19 Check took them. So is a filler, drawn as nothing or as
// a blank (wire.Filler: U+3164, U+2800...; until session 20). A file that
// holds one already (pinned before) still reads, and the pin is found and
// forgotten by its name.
func TestPinNameHasNoFormatCharacter(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownHostsFile)
	k := OpenKnownHosts(path)
	fp := wire.Fingerprint{7}
	for _, name := range []string{
		"mdns:office\u200b",             // zero-width space
		"mdns:off\u200dice",             // zero-width joiner
		"mdns:\u202eeciffo",             // right-to-left override
		"mdns:office\u2066x\u2069",      // isolates
		"mdns:\ufeffoffice",             // BOM
		"mdns:a\u2028b",                 // line separator
		"mdns:a\u2029b",                 // paragraph separator
		"10.0.0.1\u00ad:7373",           // soft hyphen (Cf)
		"mdns:office\U000E0041 (ab-cd)", // a tag character
		"mdns:office\u3164",             // Hangul filler, drawn as nothing
		"mdns:\u3164 (ab-cd)",           // an instance named by a filler alone
		"mdns:office\u2800",             // Braille blank, drawn as a blank
		"mdns:off\u034fice",             // combining grapheme joiner
		"mdns:office \ufe0f",            // a blank at the end, behind a variation selector
		"\ufe0f mdns:office",            // and at the start
	} {
		if err := k.Check(t.Context(), name, fp); !errors.Is(err, ErrBadPinName) {
			t.Errorf("Check(%q) = %v, want ErrBadPinName", name, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file was written: %v", err)
	}
	// Names an honest registry has: accents, other scripts, emoji
	// without joiners, right-to-left letters.
	for _, name := range []string{"mdns:huddle registry on café (ab-cd)", "mdns:日本語", "mdns:🙂 box", "mdns:מרשם"} {
		if err := k.Check(t.Context(), name, fp); err != nil {
			t.Errorf("Check(%q) = %v, want pinned", name, err)
		}
	}
	// A file of before these rules: its names read, and are forgotten.
	for _, old := range []string{"mdns:office\u200b", "mdns:office\u3164"} {
		if err := os.WriteFile(path, []byte(old+" "+fp.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := k.Lookup(old); err != nil || !ok || got != fp {
			t.Errorf("Lookup of %q pinned before: %v %v %v", old, got, ok, err)
		}
		if ok, err := k.Forget(t.Context(), old); err != nil || !ok {
			t.Errorf("Forget of %q pinned before: %v %v", old, ok, err)
		}
	}
}

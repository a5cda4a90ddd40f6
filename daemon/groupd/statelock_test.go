package groupd

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/daemon/registry"
)

// TestStateDirLock: a second daemon on a state directory in use refuses to
// start, naming the process that holds it, instead of sharing its key and
// files (it used to take over the first one's registrations); once the
// first closes, the directory is free.
func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	first, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "lobby"}}, Logger: testLogger(t)})
	must(t, err)
	must(t, first.Listen())
	second, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "lobby"}}, Logger: testLogger(t)})
	must(t, err)
	err = second.Listen()
	var inUse *StateDirInUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrStateDirInUse) || inUse.PID != os.Getpid() || inUse.Dir != dir {
		t.Fatalf("second daemon on the same state dir: %v, want state dir %s in use by PID %d", err, dir, os.Getpid())
	}
	must(t, first.Close())
	third, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "lobby"}}, Logger: testLogger(t)})
	must(t, err)
	must(t, third.Listen())
	if third.Fingerprint() != first.Fingerprint() {
		t.Error("the daemon after the first has another key")
	}
	must(t, third.Close())
	must(t, second.Close())

	rdir := t.TempDir()
	r1, err := registry.New(registry.Config{StateDir: rdir, Listen: "127.0.0.1:0", Logger: testLogger(t)})
	must(t, err)
	must(t, r1.Listen())
	defer r1.Close()
	r2, err := registry.New(registry.Config{StateDir: rdir, Listen: "127.0.0.1:0", Logger: testLogger(t)})
	must(t, err)
	defer r2.Close()
	if err := r2.Listen(); !errors.Is(err, ErrStateDirInUse) {
		t.Fatalf("second registry on the same state dir: %v, want ErrStateDirInUse", err)
	}
}

// TestListenBusyPortCreatesNothing: a daemon whose port is taken refuses
// to start before it writes anything: it created its state directory, its
// key, each group's identity and log first, so a mistyped --listen left a
// state directory behind (and a new key, which a cell's --cell-peer list
// does not name).
func TestListenBusyPortCreatesNothing(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer busy.Close()
	dir := filepath.Join(t.TempDir(), "state")
	d, err := New(Config{StateDir: dir, Listen: busy.LocalAddr().String(), Groups: []Spec{{Name: "lobby"}}, Logger: testLogger(t)})
	must(t, err)
	defer d.Close()
	if err := d.Listen(); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a port in use: %v, want EADDRINUSE", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the state directory after Listen failed: %v, want none created", err)
	}
}

package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestCellAttemptErrorNamesMember: an attempt at a cell's member that
// did not answer named the operation, and Group.fail named it again:
// "send group lobby: send at [127.0.0.1:9]: server unreachable: no
// handshake in time". The attempt names the member; the operation is
// named once.
func TestCellAttemptErrorNamesMember(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cl := newTestClient(t, Config{DialTimeout: time.Minute})
	defer cl.Close()
	at := silent.LocalAddr().String()
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{at}, Fingerprint: wire.Fingerprint{1},
		Replicas: []wire.Replica{{Addr: at, Fingerprint: wire.Fingerprint{1}, Leader: true}, {Addr: "127.0.0.1:1", Fingerprint: wire.Fingerprint{2}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var sent wire.Sent
	err = g.fail("send", g.attempt(ctx, time.Time{}, time.Minute, wire.OpSend, wire.Send{Group: g.id, Messages: []wire.Outgoing{{ID: wire.NewID(), Body: []byte("hi")}}}, &sent, nil))
	if got := strings.Count(err.Error(), "send"); got != 1 {
		t.Errorf("%q names the send %d times, want once", err, got)
	}
	if want := "send group lobby: member at " + at + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%q, want it to begin %q", err, want)
	}
}

// TestListedRegistryAddressShown: Listed's error names each registry
// that failed by its address, shown (wire.Shown) as listed addresses are.
// (A Registry opened at such an address fails to open today: resolve
// refuses it; Listed does not count on that.)
func TestListedRegistryAddressShown(t *testing.T) {
	const addr = "127.0.0.1:9\nfake line\u202e"
	_, err := Listed([]RegistryListing{{Registry: &Registry{addr: addr}, Err: ErrUnreachable}})
	if err == nil || strings.ContainsAny(err.Error(), "\n\u202e") {
		t.Errorf("Listed, a registry at %q failing: %q, want its address shown", addr, err)
	}
	if !strings.Contains(err.Error(), wire.Shown(addr)) {
		t.Errorf("Listed: %q does not name the registry at %q", err, wire.Shown(addr))
	}
}

// TestJoinedErrorsOneLine: a dial's errors at a daemon's several
// addresses, and Listed's errors of the registries that failed, were
// joined by errors.Join, one line each: a program's one-line message held
// line breaks of the client's making, and the CLI showed each as U+FFFD.
// They are joined on one line now, each still found by errors.Is.
func TestJoinedErrorsOneLine(t *testing.T) {
	var silent []string
	for range 2 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		silent = append(silent, pc.LocalAddr().String())
	}
	cl := newTestClient(t, Config{DialTimeout: 300 * time.Millisecond}) // each dial's own bound: its error joins the others
	defer cl.Close()
	g, err := cl.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{silent[0], "127.0.0.1:bad\n", silent[1]}, Fingerprint: wire.Fingerprint{1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err = g.Info(ctx)
	t.Logf("info: %v", err)
	if err == nil || strings.Contains(err.Error(), "\n") || !errors.Is(err, ErrUnreachable) {
		t.Errorf("info of a group at three addresses none answers: %q, want one line, unreachable", err)
	}

	boom := errors.New("boom")
	_, err = Listed([]RegistryListing{{Registry: &Registry{addr: "10.0.0.1:7373"}, Err: ErrUnreachable}, {Registry: &Registry{addr: "10.0.0.2:7373"}, Err: boom}})
	if err == nil || strings.Contains(err.Error(), "\n") || !errors.Is(err, ErrNoListing) || !errors.Is(err, ErrUnreachable) || !errors.Is(err, boom) {
		t.Errorf("Listed, two registries failing: %q, want one line, ErrNoListing and each registry's error", err)
	}
}

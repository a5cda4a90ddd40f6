package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// doctorFor returns a doctor of a user of its own, its text output in
// out, its questions bounded by timeout.
func doctorFor(t *testing.T, out *bytes.Buffer, timeout time.Duration) *doctor {
	t.Helper()
	env := map[string]string{"HUDDLE_HOME": t.TempDir()}
	s, err := open(t.Context(), Env{Stdout: out, Stderr: out, Getenv: func(k string) string { return env[k] }}, "doctor", &clientFlags{timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &doctor{s: s}
}

// infoDaemon runs a daemon of its own key that answers every group's info
// once wait returns nil (its error, if not), and returns its address and
// key.
func infoDaemon(t *testing.T, wait func(ctx context.Context) error) (string, wire.Fingerprint) {
	t.Helper()
	dk, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{}, server.Setup{Listen: "127.0.0.1:0", Role: "groups"}, func(ctx context.Context, c *server.Call) error {
		var ref wire.GroupRef
		if err := c.Decode(&ref); err != nil {
			return err
		}
		if err := wait(ctx); err != nil {
			return err
		}
		return c.Result(wire.Info{Group: ref.Group, Name: "g", Epoch: 1, Members: 1, Fingerprint: dk.Fingerprint()})
	})
	if err := s.Listen(dk); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Addr().String(), dk.Fingerprint()
}

// TestDoctorChecksCellMembersEachAddress: huddle doctor asks each member
// of a cell's group at every address listed for it, alone. It asked the
// group only as the commands reach it (any member, any address): a
// member that answered at none of its addresses, or not at one of them,
// was "ok".
func TestDoctorChecksCellMembersEachAddress(t *testing.T) {
	var asked atomic.Int32
	var says atomic.Pointer[[]wire.Fingerprint]
	a, b := statusDaemon(t, &says, &asked), statusDaemon(t, &says, &asked)
	c := wire.Fingerprint{0xc} // down
	says.Store(&[]wire.Fingerprint{a.Fingerprint, b.Fingerprint, c})
	const dead = "127.0.0.1:9"
	e := client.ListedGroup{GroupEntry: wire.GroupEntry{Group: wire.UUID{7}, Name: "general", Fingerprint: a.Fingerprint, Addrs: []string{a.Addr}, ExpiresMS: 20000,
		Replicas: []wire.Replica{{Addr: a.Addr, Fingerprint: a.Fingerprint, Leader: true}, b, {Addr: dead, Fingerprint: c}}},
		MemberAddrs: map[wire.Fingerprint][]string{b.Fingerprint: {b.Addr, dead}}}
	var out bytes.Buffer
	d := doctorFor(t, &out, time.Second)
	code := d.daemons(context.Background(), &listing{groups: []client.ListedGroup{e}})
	if code != ExitUnreachable {
		t.Errorf("doctor: exit %d; want %d (a member not answering)", code, ExitUnreachable)
	}
	got := make(map[string]bool)
	for _, at := range d.report.Groups[0].At {
		got[fmt.Sprintf("%s@%s", at.Member, at.Addr)] = at.OK
	}
	want := map[string]bool{
		a.Fingerprint.String() + "@" + a.Addr: true,
		b.Fingerprint.String() + "@" + b.Addr: true,
		b.Fingerprint.String() + "@" + dead:   false,
		c.String() + "@" + dead:               false,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("members asked: %v; want %v", got, want)
	}
	advice := strings.Join(d.report.Advice, "\n")
	if !strings.Contains(advice, "member "+b.Fingerprint.Short()+" answers at "+b.Addr+" but not at "+dead) ||
		!strings.Contains(advice, "member "+c.Short()+" answers at none of "+dead) {
		t.Errorf("advice:\n%s\nwant b said not at %s, c at none", advice, dead)
	}
}

// TestDoctorGroupsBounded: huddle doctor checks doctorMaxGroups groups at
// most, those the user joined first, and says how many it left: a rogue
// registry listing thousands of groups at addresses that never answer had
// it run for hours.
func TestDoctorGroupsBounded(t *testing.T) {
	addr, fp := infoDaemon(t, func(context.Context) error { return nil })
	const more = 3
	l := &listing{}
	for i := range doctorMaxGroups + more {
		l.groups = append(l.groups, client.ListedGroup{GroupEntry: wire.GroupEntry{Group: wire.UUID{byte(i + 1)}, Name: fmt.Sprintf("g%d", i),
			Addrs: []string{addr}, Fingerprint: fp, ExpiresMS: 20000}})
	}
	mine := l.groups[len(l.groups)-1]
	var out bytes.Buffer
	d := doctorFor(t, &out, 10*time.Second)
	d.s.joined = joinedSet{{mine.Group, mine.Fingerprint}: {name: mine.Name}}
	if code := d.daemons(context.Background(), l); code != ExitOK {
		t.Errorf("doctor: exit %d:\n%s", code, out.String())
	}
	if n := len(d.report.Groups); n != doctorMaxGroups || d.report.GroupsUnchecked != more {
		t.Errorf("doctor checked %d groups, %d unchecked; want %d, %d", n, d.report.GroupsUnchecked, doctorMaxGroups, more)
	}
	if len(d.report.Groups) > 0 && d.report.Groups[len(d.report.Groups)-1].Name != mine.Name {
		t.Errorf("the group joined, listed last, was not checked")
	}
	if !strings.Contains(out.String(), fmt.Sprintf("and %d more groups not checked", more)) {
		t.Errorf("doctor's output:\n%s\nwant the groups unchecked said", out.String())
	}
}

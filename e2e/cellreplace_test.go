//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/wire"
)

// cellLoad is a client sending to a cell's group, one message at a time,
// through a handle made from the registry's listing, as a program would:
// each message is retried under its ID until acknowledged. It records each
// ack and when it came, to check the replicas against and to measure the
// pauses an operation causes.
type cellLoad struct {
	h    *client.Group
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	acks  []client.Ack
	times []time.Time
	err   error
}

func startCellLoad(t *testing.T, h *client.Group) *cellLoad {
	l := &cellLoad{h: h, stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	t.Cleanup(l.halt)
	return l
}

func (l *cellLoad) run() {
	defer close(l.done)
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		// A message begun is sent until acknowledged, even past stop.
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		id, body := wire.NewID(), []byte(fmt.Sprintf("load %d", i))
		var a client.Ack
		var err error
		for {
			if a, err = l.h.SendWithID(ctx, id, body); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // the cell elects, or the client looks for the leader: again, same ID
		}
		cancel()
		l.mu.Lock()
		if err != nil {
			l.err = fmt.Errorf("message %d unacknowledged after %v: %w", i, 2*waitTimeout, err)
			l.mu.Unlock()
			return
		}
		l.acks = append(l.acks, a)
		l.times = append(l.times, time.Now())
		l.mu.Unlock()
	}
}

func (l *cellLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// await waits until k more messages are acknowledged.
func (l *cellLoad) await(t *testing.T, what string, k int) {
	t.Helper()
	l.mu.Lock()
	want := len(l.acks) + k
	l.mu.Unlock()
	if !eventually(t, waitTimeout, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.acks) >= want || l.err != nil
	}) || l.failed() != nil {
		t.Fatalf("%s: the load did not get %d more acknowledgments: %v", what, k, l.failed())
	}
}

func (l *cellLoad) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// measure runs op, waits for k more acks, and logs the longest pause in
// acknowledgments from op's start until then.
func (l *cellLoad) measure(t *testing.T, what string, k int, op func()) {
	t.Helper()
	start := time.Now()
	op()
	took := time.Since(start)
	l.await(t, what, k)
	l.mu.Lock()
	prev, longest, n := start, time.Duration(0), 0
	for _, at := range l.times {
		if at.Before(start) {
			prev = at
			continue
		}
		longest = max(longest, at.Sub(prev))
		prev = at
		n++
	}
	l.mu.Unlock()
	t.Logf("%s: took %v; longest send pause %v (%d messages acknowledged since it began)", what, took.Round(time.Millisecond), longest.Round(time.Millisecond), n)
}

// replicaJSON is a replica in `huddle groups --json`.
type listedReplica struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	Leader      bool   `json:"leader"`
}

// listedCell returns the replicas `huddle groups --json` lists for group,
// by address.
func listedCell(t *testing.T, u *user, group string) map[string]listedReplica {
	t.Helper()
	rs := make(map[string]listedReplica)
	for _, line := range strings.Split(strings.TrimSpace(u.ok(t, "groups", "--json")), "\n") {
		var g struct {
			UUID     string          `json:"uuid"`
			Replicas []listedReplica `json:"replicas"`
		}
		if err := json.Unmarshal([]byte(line), &g); err != nil {
			t.Fatalf("huddle groups --json: %v: %s", err, line)
		}
		if g.UUID == group {
			for _, r := range g.Replicas {
				rs[r.Addr] = r
			}
		}
	}
	return rs
}

// TestCellReplaceDeadHost replaces a dead host of a three-member cell the
// way README's "A three-host cell" tells an operator to, with its commands,
// while a client sends: the leader's host dies for good (SIGKILL, its state
// directory deleted); on the new host `huddle id` names the new key; the new
// daemon, started with --cell-join and the --cell-peer flags, says what to
// add; `huddle cell add` (with a member's state directory as HUDDLE_HOME)
// waits until it caught up and votes; `huddle cell remove` takes the dead
// one out. The registry then lists the three live members with their keys,
// the new one serves the whole history, and new clients use the cell.
// Then the operator removes the member that leads (it hands over; the CLI
// follows), and the cell goes on with two. Every acknowledged message is
// held by every member, once, as acknowledged; the send pause of each step
// is logged.
func TestCellReplaceDeadHost(t *testing.T) {
	t.Parallel()
	reg := startDaemon(t, "registry", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	members, peers := newCellMembers(t, 3, 3)
	startMembers(t, members, peers, reg.registry)
	group := cellGroupLine(t, members[0])
	gid := uuid.MustParse(group)
	ann := newUser(t, "ann", reg.registry)
	waitCellListed(t, ann, group)
	ann.join(t, "general")

	// The load: ann's key, a handle from the registry's listing.
	key, err := identity.LoadOrCreate(ann.home)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := cl.Registry(ctx, reg.registry, client.Fingerprint{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.Groups, func(e client.GroupEntry) bool { return e.Group == gid })
	if i < 0 {
		t.Fatalf("the registry does not list %s: %+v", group, list.Groups)
	}
	h, err := r.Group(list.Groups[i])
	if err != nil {
		t.Fatal(err)
	}
	load := startCellLoad(t, h)
	load.await(t, "the load", 50)

	byAddr := make(map[string]*cellMember)
	for _, m := range members {
		byAddr[m.addr] = m
	}
	leader := func() *cellMember {
		t.Helper()
		var st cellStatusJSON
		for _, m := range members {
			if m.p != nil && m.p.running() {
				if eventually(t, waitTimeout, func() bool { st = cellStatus(t, ann, m.addr); return st.Leader != nil }) {
					return byAddr[st.Leader.Addr]
				}
			}
		}
		t.Fatal("no member names a leader")
		return nil
	}

	// The leader's host dies for good.
	dead := leader()
	load.measure(t, "the leader's host dies (SIGKILL, its state deleted)", 50, func() {
		dead.p.stop(t, syscall.SIGKILL)
		if err := os.RemoveAll(dead.dir); err != nil {
			t.Fatal(err)
		}
	})

	// README, steps 1 and 4 on the new host.
	fresh := newCellHost(t, reg.registry, peers)
	asked := fresh.fp.String() + "@" + fresh.addr
	members = append(members, fresh)
	byAddr[fresh.addr] = fresh

	// The operator, on a live member's host, with its key.
	var live *cellMember
	for _, m := range members[:3] {
		if m != dead {
			live = m
			break
		}
	}
	op := &user{name: "operator", home: live.dir, dir: t.TempDir(), registry: reg.registry}
	load.measure(t, "huddle cell add of the new member (one member dead)", 50, func() {
		out := op.ok(t, "cell", "add", "--server", live.addr, asked)
		if !strings.Contains(out, "caught up and votes now") || !strings.Contains(out, asked) {
			t.Fatalf("huddle cell add printed:\n%s", out)
		}
	})
	load.measure(t, "huddle cell remove of the dead member", 50, func() {
		out := op.ok(t, "cell", "remove", "--server", live.addr, dead.fp.String())
		if strings.Contains(out, dead.fp.String()) || strings.Count(out, "@") != 3 {
			t.Fatalf("huddle cell remove printed:\n%s\nwant the three live members", out)
		}
	})

	// The registry lists the three live members, with their keys, one
	// leading; the new member serves the whole history.
	wantListed := func(ms ...*cellMember) {
		t.Helper()
		var got map[string]listedReplica
		if !eventually(t, waitTimeout, func() bool {
			got = listedCell(t, ann, group)
			if len(got) != len(ms) {
				return false
			}
			leaders := 0
			for _, m := range ms {
				r, ok := got[m.addr]
				if !ok || r.Fingerprint != m.fp.String() {
					return false
				}
				if r.Leader {
					leaders++
				}
			}
			return leaders == 1
		}) {
			t.Fatalf("huddle groups --json lists replicas %+v, want %d members, one leading", got, len(ms))
		}
	}
	var rest []*cellMember
	for _, m := range members {
		if m != dead {
			rest = append(rest, m)
		}
	}
	wantListed(rest...)
	load.await(t, "after the replacement", 50)
	bob := newUser(t, "bob", reg.registry)
	bob.join(t, "general")
	bob.ok(t, "send", "general", "bob, after the replacement")

	// The operator removes the member that leads now: it hands over, and
	// the CLI asks the new leader.
	gone := leader()
	load.measure(t, "huddle cell remove of the leader", 50, func() {
		out := op.ok(t, "cell", "remove", "--server", gone.addr, gone.fp.String())
		if strings.Contains(out, gone.fp.String()) || strings.Count(out, "@") != 2 {
			t.Fatalf("huddle cell remove of the leader printed:\n%s\nwant the two members left", out)
		}
	})
	var left []*cellMember
	for _, m := range rest {
		if m != gone {
			left = append(left, m)
		}
	}
	wantListed(left...)
	if next := leader(); next == gone {
		t.Fatal("the removed member still leads")
	}
	load.halt()
	if err := load.failed(); err != nil {
		t.Fatal(err)
	}
	bob.ok(t, "send", "general", "bob, after the leader's removal")

	// Every member left holds exactly what was acknowledged (ann's load,
	// bob's two), in order, once.
	load.mu.Lock()
	acks := slices.Clone(load.acks)
	load.mu.Unlock()
	for _, m := range left {
		var got []client.Message
		if !eventually(t, waitTimeout, func() bool {
			got = got[:0]
			rh, err := cl.Group(wire.GroupEntry{Group: gid, Name: "general", Addrs: []string{m.addr}, Fingerprint: m.fp})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rh.Fetch(ctx, client.Query{}, func(msg client.Message) bool { got = append(got, msg); return true }); err != nil {
				var we *wire.Error
				if !errors.As(err, &we) {
					t.Fatalf("fetch from %s: %v", m.addr, err)
				}
				return false
			}
			return len(got) >= len(acks)+2
		}) {
			t.Fatalf("%s holds %d messages, want %d", m.addr, len(got), len(acks)+2)
		}
		if len(got) != len(acks)+2 {
			t.Fatalf("%s holds %d messages, want %d", m.addr, len(got), len(acks)+2)
		}
		k := 0
		for i, msg := range got {
			if msg.Seq != uint64(i+1) || i > 0 && !msg.Time.After(got[i-1].Time) {
				t.Fatalf("%s: message %d: seq %d at %v after %v", m.addr, i, msg.Seq, msg.Time, got[max(i-1, 0)].Time)
			}
			if strings.HasPrefix(string(msg.Body), "bob, ") {
				continue
			}
			if a := acks[k]; msg.ID != a.ID || msg.Seq != a.Seq || !msg.Time.Equal(a.Time) {
				t.Fatalf("%s: message %d is %s seq %d; acknowledged %s seq %d", m.addr, i, msg.ID, msg.Seq, a.ID, a.Seq)
			}
			k++
		}
	}
	t.Logf("%d acknowledged messages checked on each of the %d members left (the new one among them): none lost, none duplicated", len(acks)+2, len(left))
}

// newCellHost starts a daemon on a new host that joins the cell of peers,
// as README's steps 1 and 4 say (its key from its state directory, then
// the cell's --cell-peer flags and its own), and checks it asks to be
// added (huddle cell add --server MEMBER FINGERPRINT@ADDR) under the key
// huddle id printed. It returns the member; that argument is its
// fingerprint, @, its address.
func newCellHost(t *testing.T, registry string, peers []string) *cellMember {
	t.Helper()
	fresh := &cellMember{dir: t.TempDir(), addr: testport.Cell(t)}
	newHost := &user{name: "new host", home: fresh.dir, dir: t.TempDir(), registry: registry}
	fp, err := wire.ParseFingerprint(strings.TrimSpace(newHost.ok(t, "id")))
	if err != nil {
		t.Fatalf("huddle id on the new host: %v", err)
	}
	fresh.fp = fp
	fresh.args = append([]string{"--no-mdns", "--listen", fresh.addr, "--registry", registry, "--state-dir", fresh.dir,
		"--group", "general", "--cell-heartbeat", "300ms", "--cell-join",
		"--cell-peer", fp.String() + "@" + fresh.addr}, peers...)
	fresh.start(t)
	addArg := regexp.MustCompile(`huddle cell add --server MEMBER (\S+)`)
	var asked string
	if !fresh.p.stdout.waitFor(waitTimeout, func(lines []string) bool {
		for _, l := range lines {
			if m := addArg.FindStringSubmatch(l); m != nil {
				asked = m[1]
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the new daemon did not say what to add\nstdout:\n%s\nstderr:\n%s", fresh.p.stdout, tail(fresh.p.stderr.Lines(), 40))
	}
	if want := fp.String() + "@" + fresh.addr; asked != want {
		t.Fatalf("the new daemon asks to be added as %s, want %s (the key huddle id printed)", asked, want)
	}
	return fresh
}

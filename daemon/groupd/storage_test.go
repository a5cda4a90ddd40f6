package groupd

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/internal/testport"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// TestWatchContinuesAcrossRestart: a watch and a fetch --after go on
// across a restart of a daemon keeping its log on disk, with no reset, gap
// or repeat; the restarted daemon is one whose socket went away unannounced.
func TestWatchContinuesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	// A reserved port, which the restart finds free (testport.Cell).
	cfg := Config{StateDir: dir, Listen: testport.Cell(t), Groups: []Spec{{Name: "general"}}, Logger: testLogger(t), HeartbeatInterval: time.Second}
	d1, err := New(cfg)
	must(t, err)
	must(t, d1.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d1.Serve(context.Background()) }()

	ctx := testCtx(t)
	key := newKey(t)
	cl, err := client.New(client.Config{Identity: key, Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(wire.GroupEntry{Group: gid(d1), Name: "general", Addrs: []string{cfg.Listen}, Fingerprint: d1.Fingerprint()})
	must(t, err)
	_, err = g.Join(ctx, "watcher", nil)
	must(t, err)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events := watchEvents(wctx, g, client.Query{Status: true}, 64)
	if ev := recv(t, events); ev.Kind != client.EventLive {
		t.Fatalf("first event %+v, want live", ev)
	}
	var acks []client.Ack
	for _, b := range []string{"one", "two", "three"} {
		a, err := g.Send(ctx, []byte(b))
		must(t, err)
		acks = append(acks, a)
	}
	next := func() client.Event {
		t.Helper()
		for {
			ev := recv(t, events)
			switch ev.Kind {
			case client.EventLive, client.EventInterrupted:
				continue
			case client.EventMessage:
				return ev
			}
			t.Fatalf("event %+v, want only messages across the restart (no reset, no gap)", ev)
		}
	}
	for i := range 3 {
		if ev := next(); ev.Message.Seq != uint64(i+1) {
			t.Fatalf("message %+v, want seq %d", ev.Message, i+1)
		}
	}

	d1.srv.Transport().Conn.Close() // gone without a word, as with SIGKILL
	d1.Close()
	must(t, <-errc)
	d2, _ := startGroupDaemon(t, cfg)
	for _, b := range []string{"four", "five"} {
		a, err := g.Send(ctx, []byte(b))
		must(t, err)
		acks = append(acks, a)
	}
	for i := 3; i < 5; i++ {
		ev := next()
		if ev.Message.Seq != uint64(i+1) || ev.Epoch != d2.groups[gid(d2)].epoch() {
			t.Fatalf("after the restart: %+v, want seq %d in the same epoch", ev, i+1)
		}
	}
	// A fetch after a cursor taken before the restart.
	p := dial(t, d2.Addr(), d2.Fingerprint(), key)
	msgs, end, err := p.fetch(wire.Fetch{Group: gid(d2), After: u64(2), Epoch: acks[0].Epoch})
	must(t, err)
	if len(msgs) != 3 || msgs[0].Seq != 3 || end.Epoch != acks[0].Epoch {
		t.Fatalf("fetch after 2: %d messages from %+v, end %+v, want 3..5 in epoch %d", len(msgs), msgs, end, acks[0].Epoch)
	}
	for i, m := range msgs {
		a := acks[i+2]
		if m.Seq != a.Seq || m.Time != a.Time.UnixNano() || wire.ID(m.ID) != a.ID {
			t.Fatalf("message %+v, acknowledged as %+v", m, a)
		}
	}
}

// TestRetriedSendAcrossRestart: a send retried with the same ID after a
// restart gets its original ack, and is stored once.
func TestRetriedSendAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir})
	alice := joined(t, d1, "alice")
	out := outgoing("once", "only")
	first, err := alice.send(gid(d1), out)
	must(t, err)
	stop1()
	d2, _ := startGroupDaemon(t, Config{StateDir: dir})
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	again, err := a2.send(gid(d2), out)
	must(t, err)
	if again.Epoch != first.Epoch || len(again.Acks) != 2 {
		t.Fatalf("retry: %+v, want the epoch of %+v", again, first)
	}
	for i := range first.Acks {
		if want := (wire.Ack{Seq: first.Acks[i].Seq, Time: first.Acks[i].Time, Duplicate: true}); again.Acks[i] != want {
			t.Fatalf("retry ack %d: %+v, want %+v", i, again.Acks[i], want)
		}
	}
	if in := a2.info(gid(d2)); in.Last != 2 {
		t.Fatalf("log holds up to %d, want 2: the retry stored nothing", in.Last)
	}
}

// TestStorageInfo: info says where the log is kept and what an ack
// survives; memory storage begins a new epoch at each start.
func TestStorageInfo(t *testing.T) {
	for _, tc := range []struct {
		storage StorageConfig
		want    wire.Info
	}{
		{StorageConfig{}, wire.Info{Storage: wire.StorageDisk, Fsync: wire.FsyncInterval, FsyncIntervalMS: 1000}},
		{StorageConfig{Fsync: store.FsyncPolicy{Interval: 250 * time.Millisecond}}, wire.Info{Storage: wire.StorageDisk, Fsync: wire.FsyncInterval, FsyncIntervalMS: 250}},
		{StorageConfig{Fsync: store.FsyncPolicy{Always: true}}, wire.Info{Storage: wire.StorageDisk, Fsync: wire.FsyncAlways}},
		{StorageConfig{Memory: true}, wire.Info{Storage: wire.StorageMemory}},
	} {
		dir := t.TempDir()
		d, stop := startGroupDaemon(t, Config{StateDir: dir, Storage: tc.storage})
		p := joined(t, d, "alice")
		_, err := p.send(gid(d), outgoing("hello"))
		must(t, err)
		in := p.info(gid(d))
		if in.Storage != tc.want.Storage || in.Fsync != tc.want.Fsync || in.FsyncIntervalMS != tc.want.FsyncIntervalMS {
			t.Fatalf("%+v: info says %q %q %d, want %q %q %d", tc.storage, in.Storage, in.Fsync, in.FsyncIntervalMS, tc.want.Storage, tc.want.Fsync, tc.want.FsyncIntervalMS)
		}
		stop()
		d2, _ := startGroupDaemon(t, Config{StateDir: dir, Storage: tc.storage})
		p2 := dial(t, d2.Addr(), d2.Fingerprint(), p.id)
		in2 := p2.info(gid(d2))
		if kept := in2.Epoch == in.Epoch && in2.Last == 1; kept == tc.storage.Memory {
			t.Fatalf("%+v: after a restart epoch %d last %d, before %d %d", tc.storage, in2.Epoch, in2.Last, in.Epoch, in.Last)
		}
	}
}

// TestCorruptGroupNotServed: a group whose log is damaged mid-file is not
// served (every operation gets unavailable), while the daemon's other
// groups are; a daemon none of whose groups can be served does not start.
func TestCorruptGroupNotServed(t *testing.T) {
	dir := t.TempDir()
	groups := []Spec{{Name: "general"}, {Name: "ops"}}
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir, Groups: groups})
	hosted := d1.Groups()
	alice := joined(t, d1, "alice")
	must(t, alice.call(wire.OpJoin, wire.Join{Group: hosted[1].ID, Name: "alice"}, nil))
	for range 3 {
		_, err := alice.send(hosted[0].ID, outgoing("a", "b"))
		must(t, err)
		_, err = alice.send(hosted[1].ID, outgoing("c"))
		must(t, err)
	}
	stop1()
	// A byte of general's first record, whole records after it.
	seg := filepath.Join(dir, "logs", hosted[0].ID.String(), "00000000000000000001.seg")
	data, err := os.ReadFile(seg)
	must(t, err)
	data[48+30] ^= 0x40
	must(t, os.WriteFile(seg, data, 0o600))

	d2, _ := startGroupDaemon(t, Config{StateDir: dir, Groups: groups})
	if got := d2.Groups(); len(got) != 1 || got[0].ID != hosted[1].ID {
		t.Fatalf("groups served %+v, want only ops", got)
	}
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	for _, op := range []wire.Op{wire.OpInfo, wire.OpFetch} {
		var args any = wire.GroupRef{Group: hosted[0].ID}
		if op == wire.OpFetch {
			args = wire.Fetch{Group: hosted[0].ID}
		}
		e := wantCode(t, a2.call(op, args, nil), wire.CodeUnavailable)
		if e.RetryAfterMS == 0 {
			t.Fatalf("%v of the damaged group: %+v, want a retry time", op, e)
		}
	}
	_, err = a2.send(hosted[0].ID, outgoing("x"))
	wantCode(t, err, wire.CodeUnavailable)
	msgs, _, err := a2.fetch(wire.Fetch{Group: hosted[1].ID})
	must(t, err)
	if len(msgs) != 3 {
		t.Fatalf("ops holds %d messages, want 3", len(msgs))
	}
	_, err = a2.send(hosted[1].ID, outgoing("d"))
	must(t, err)

}

// TestOnlyBrokenGroupsRefuse: a daemon whose every group's log is damaged
// does not start, and says which.
func TestOnlyBrokenGroupsRefuse(t *testing.T) {
	dir := t.TempDir()
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir})
	id := gid(d1)
	joined(t, d1, "alice") // Serve is running
	stop1()
	seg := filepath.Join(dir, "logs", id.String(), "00000000000000000001.seg")
	data, err := os.ReadFile(seg)
	must(t, err)
	data[10] = 9 // the format version, under the header's checksum
	must(t, os.WriteFile(seg, data, 0o600))
	d2, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)})
	must(t, err)
	defer d2.Close()
	if err := d2.Listen(); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Listen: %v, want the log's ErrCorrupt", err)
	}
}

// TestDataDirLocked: a second daemon on a data directory in use refuses to
// start, whatever its state directory.
func TestDataDirLocked(t *testing.T) {
	data := t.TempDir()
	d1, _ := startGroupDaemon(t, Config{Storage: StorageConfig{DataDir: data}})
	joined(t, d1, "alice") // Serve is running
	d2, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t),
		Storage: StorageConfig{DataDir: data}})
	must(t, err)
	defer d2.Close()
	var inUse *StateDirInUseError
	if err := d2.Listen(); !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second daemon on the data dir: %v, want it in use by this process", err)
	}
}

// TestClockBehindAcrossRestart: a daemon restarted with its clock two
// hours behind the group's last timestamp (a clock set back between runs:
// a VM restored, a battery-less board before NTP) goes on stamping after
// it, a nanosecond apart, in the same epoch and sequence, with the members
// it had; and it says so once as it starts, so that an operator learns why
// new messages are dated in the past (as a cell's leader does).
func TestClockBehindAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir, Now: clock.Now})
	alice, bob := joined(t, d1, "alice"), joined(t, d1, "bob")
	var last wire.Ack
	for range 3 {
		clock.advance(time.Second)
		sent, err := alice.send(gid(d1), outgoing("before"))
		must(t, err)
		last = sent.Acks[0]
	}
	must(t, bob.call(wire.OpLeave, wire.GroupRef{Group: gid(d1)}, nil))
	epoch := alice.info(gid(d1)).Epoch
	stop1()

	clock.advance(-2 * time.Hour)
	var logged lockedBuffer
	d2, _ := startGroupDaemon(t, Config{StateDir: dir, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(testlog.Output(t), &logged), nil))})
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	sent, err := a2.send(gid(d2), outgoing("after", "and after"))
	must(t, err)
	for i, a := range sent.Acks {
		if want := (wire.Ack{Seq: last.Seq + 1 + uint64(i), Time: last.Time + 1 + int64(i)}); sent.Epoch != epoch || a != want {
			t.Fatalf("send %d after the clock stepped back: %+v in epoch %d, want %+v in %d", i, a, sent.Epoch, want, epoch)
		}
	}
	if m := a2.members(gid(d2)); len(m) != 1 {
		t.Fatalf("members after the restart: %v, want alice alone (bob left)", m)
	}
	if !strings.Contains(logged.String(), "clock is behind the group's latest timestamp") {
		t.Errorf("the daemon started with its clock 2h behind its group's last message and did not say so:\n%s", logged.String())
	}
}

// TestStateTempFilesRemoved: a daemon killed while it replaced its member
// list or groups.json (between the temporary file's creation and its
// rename) left the temporary file for ever, one more at each such crash;
// the next start removes them, and nothing else.
func TestStateTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir})
	alice := joined(t, d1, "alice")
	g := gid(d1)
	stop1()
	left := []string{"." + membersFile(g) + "-1234567", "." + groupsFile + "-89"}
	kept := []string{".profile", "members-notes.txt"}
	for _, name := range append(append([]string(nil), left...), kept...) {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600))
	}
	d2, _ := startGroupDaemon(t, Config{StateDir: dir})
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	if m := a2.members(gid(d2)); gid(d2) != g || len(m) != 1 {
		t.Fatalf("after the restart: group %s, members %v; want %s, alice", gid(d2), m, g)
	}
	for _, name := range left {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the restart: %v, want it removed", name, err)
		}
	}
	for _, name := range kept {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s after the restart: %v, want it left alone", name, err)
		}
	}
}

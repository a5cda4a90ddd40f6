package groupd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// startGroupDaemon starts a daemon on 127.0.0.1 port 0 serving until the
// test ends (or until the returned stop is called). Zero fields get test
// values: a new StateDir, one public group "general".
func startGroupDaemon(t *testing.T, cfg Config) (*Daemon, func()) {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []Spec{{Name: "general"}}
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	d, err := New(cfg)
	must(t, err)
	must(t, d.Listen())
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(context.Background()) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			must(t, d.Close())
			if err := <-errc; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return d, stop
}

// gid returns the UUID of the daemon's first group.
func gid(d *Daemon) wire.UUID { return d.Groups()[0].ID }

// joined dials d with a new key and joins its first group as name.
func joined(t *testing.T, d *Daemon, name string) *peer {
	t.Helper()
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	must(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: name}, nil))
	return p
}

func outgoing(bodies ...string) []wire.Outgoing {
	out := make([]wire.Outgoing, len(bodies))
	for i, b := range bodies {
		out[i] = wire.Outgoing{ID: wire.NewID(), Body: []byte(b)}
	}
	return out
}

func (p *peer) send(g wire.UUID, msgs []wire.Outgoing) (wire.Sent, error) {
	p.t.Helper()
	var s wire.Sent
	err := p.call(wire.OpSend, wire.Send{Group: g, Messages: msgs}, &s)
	return s, err
}

// fetch runs a fetch and returns its messages and End, or its error.
func (p *peer) fetch(args wire.Fetch) ([]wire.Message, wire.End, error) {
	p.t.Helper()
	fs := p.do(wire.OpFetch, args)
	var msgs []wire.Message
	for i, f := range fs {
		switch f.kind {
		case wire.KindMessages:
			var m wire.Messages
			f.decode(p.t, &m)
			msgs = append(msgs, m.Messages...)
		case wire.KindEnd:
			if i != len(fs)-1 {
				p.t.Fatalf("End frame is not the last")
			}
			var e wire.End
			f.decode(p.t, &e)
			return msgs, e, nil
		case wire.KindError:
			return nil, wire.End{}, f.err
		default:
			p.t.Fatalf("fetch: unexpected frame kind %d", f.kind)
		}
	}
	p.t.Fatalf("fetch: no End frame (%d frames)", len(fs))
	return nil, wire.End{}, nil
}

func (p *peer) info(g wire.UUID) wire.Info {
	p.t.Helper()
	var in wire.Info
	must(p.t, p.call(wire.OpInfo, wire.GroupRef{Group: g}, &in))
	return in
}

func seqs(msgs []wire.Message) []uint64 {
	s := make([]uint64, len(msgs))
	for i, m := range msgs {
		s[i] = m.Seq
	}
	return s
}

func u64(v uint64) *uint64 { return &v }
func i64(v int64) *int64   { return &v }

func TestGroupStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	groups := []Spec{{Name: "general"}, {Name: "ops"}}
	d1, stop1 := startGroupDaemon(t, Config{StateDir: dir, Groups: groups})
	hosted1 := d1.Groups()
	alice := joined(t, d1, "alice")
	must(t, alice.call(wire.OpJoin, wire.Join{Group: hosted1[1].ID, Name: "alice-ops"}, nil))
	bob := joined(t, d1, "bob")
	must(t, bob.call(wire.OpLeave, wire.GroupRef{Group: gid(d1)}, nil))
	carol := joined(t, d1, "carol")
	sent, err := alice.send(gid(d1), outgoing("before restart"))
	must(t, err)
	fp1, epoch1 := d1.Fingerprint(), alice.info(gid(d1)).Epoch
	stop1()

	// The same state directory, a group added in front.
	d2, _ := startGroupDaemon(t, Config{StateDir: dir, Groups: []Spec{{Name: "new"}, groups[1], groups[0]}})
	hosted2 := d2.Groups()
	if hosted2[1] != hosted1[1] || hosted2[2] != hosted1[0] {
		t.Fatalf("groups after restart %+v, before %+v: want the same UUIDs", hosted2, hosted1)
	}
	if d2.Fingerprint() != fp1 {
		t.Fatalf("fingerprint changed across a restart")
	}
	a2 := dial(t, d2.Addr(), d2.Fingerprint(), alice.id)
	in := a2.info(hosted1[0].ID)
	if !in.Member || in.Epoch != epoch1 || in.Last != 1 || in.Members != 2 || in.Storage != wire.StorageDisk {
		t.Fatalf("info after restart %+v: want a member, the same epoch, the message, 2 members, on disk", in)
	}
	msgs, _, err := a2.fetch(wire.Fetch{Group: hosted1[0].ID})
	must(t, err)
	if len(msgs) != 1 || msgs[0].Seq != sent.Acks[0].Seq || msgs[0].Time != sent.Acks[0].Time || string(msgs[0].Body) != "before restart" || msgs[0].Name != "alice" {
		t.Fatalf("messages after restart %+v, want the one sent before, as acknowledged (%+v)", msgs, sent)
	}
	var ml wire.MemberList
	must(t, a2.call(wire.OpMembers, wire.GroupRef{Group: hosted1[0].ID}, &ml))
	if len(ml.Members) != 2 || ml.Members[0].Name != "alice" || ml.Members[0].Fingerprint != alice.id.Fingerprint() ||
		ml.Members[1].Name != "carol" || ml.Members[1].Fingerprint != carol.id.Fingerprint() {
		t.Fatalf("members after restart: %+v", ml.Members)
	}
	must(t, a2.call(wire.OpMembers, wire.GroupRef{Group: hosted1[1].ID}, &ml))
	if len(ml.Members) != 1 || ml.Members[0].Name != "alice-ops" {
		t.Fatalf("ops members after restart: %+v", ml.Members)
	}
	for _, name := range []string{groupsFile, membersFile(hosted1[0].ID), identity.KeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("state file: %v", err)
		}
	}
}

func TestGroupJoinLeaveIdempotent(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	g := gid(d)
	var j wire.Joined
	must(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "ann"}, &j))
	if j.Already || j.Epoch == 0 {
		t.Fatalf("first join %+v", j)
	}
	must(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "annie"}, &j))
	if !j.Already {
		t.Fatalf("second join %+v: want Already", j)
	}
	var ml wire.MemberList
	must(t, p.call(wire.OpMembers, wire.GroupRef{Group: g}, &ml))
	if len(ml.Members) != 1 || ml.Members[0].Name != "annie" {
		t.Fatalf("members %+v: want one, renamed", ml.Members)
	}
	var l wire.Left
	must(t, p.call(wire.OpLeave, wire.GroupRef{Group: g}, &l))
	if !l.WasMember {
		t.Fatal("leave: want WasMember")
	}
	l = wire.Left{}
	must(t, p.call(wire.OpLeave, wire.GroupRef{Group: g}, &l))
	if l.WasMember {
		t.Fatal("second leave: want not WasMember")
	}
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: uuid.New(), Name: "x"}, nil), wire.CodeNotFound)
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: ""}, nil), wire.CodeBadRequest)
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "bad\x00name"}, nil), wire.CodeBadRequest)
}

func TestGroupNameKeptPerMessage(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	p := joined(t, d, "old")
	_, err := p.send(gid(d), outgoing("one"))
	must(t, err)
	must(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: "new"}, nil))
	_, err = p.send(gid(d), outgoing("two"))
	must(t, err)
	msgs, _, err := p.fetch(wire.Fetch{Group: gid(d)})
	must(t, err)
	if len(msgs) != 2 || msgs[0].Name != "old" || msgs[1].Name != "new" ||
		msgs[0].From != p.id.Fingerprint() || msgs[1].From != p.id.Fingerprint() {
		t.Fatalf("messages %+v: want the sender's name at the time of sending", msgs)
	}
}

func TestGroupNonMember(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	g := gid(d)
	stranger := dial(t, d.Addr(), d.Fingerprint(), nil)
	if in := stranger.info(g); in.Member || in.Name != "general" || in.Fingerprint != d.Fingerprint() ||
		in.Limits.MaxMessageBytes != DefaultMaxMessageBytes || in.Limits.FetchPage != DefaultFetchPage {
		t.Fatalf("info %+v", in)
	}
	_, err := stranger.send(g, outgoing("hi"))
	wantCode(t, err, wire.CodeNotMember)
	_, _, err = stranger.fetch(wire.Fetch{Group: g})
	wantCode(t, err, wire.CodeNotMember)
	wantCode(t, stranger.call(wire.OpMembers, wire.GroupRef{Group: g}, nil), wire.CodeNotMember)
	fs := stranger.do(wire.OpWatch, wire.Watch{Group: g})
	if len(fs) != 1 || fs[0].kind != wire.KindError || fs[0].err.Code != wire.CodeNotMember {
		t.Fatalf("watch by a stranger: %+v", fs)
	}
	wantCode(t, stranger.call(wire.OpInfo, wire.GroupRef{Group: uuid.New()}, nil), wire.CodeNotFound)
}

func TestGroupPrivateSecret(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Groups: []Spec{{Name: "secret", Secret: []byte("open sesame")}}})
	g := gid(d)
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	if !p.info(g).Private {
		t.Fatal("info: want Private")
	}
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "x"}, nil), wire.CodeUnauthorized)
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "x", Secret: []byte("open")}, nil), wire.CodeUnauthorized)
	wantCode(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "x", Secret: []byte("open sesame!")}, nil), wire.CodeUnauthorized)
	must(t, p.call(wire.OpJoin, wire.Join{Group: g, Name: "x", Secret: []byte("open sesame")}, nil))
	if !d.Groups()[0].Private {
		t.Fatal("Groups: want Private")
	}
}

func TestGroupMaxMembers(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{MaxMembers: 2})
	a := joined(t, d, "a")
	joined(t, d, "b")
	p := dial(t, d.Addr(), d.Fingerprint(), nil)
	if we := wantCode(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: "c"}, nil), wire.CodeUnavailable); we != nil && !we.Unchanged {
		t.Errorf("a join to a full group: %v, not marked unchanged (it changed nothing)", we)
	}
	must(t, a.call(wire.OpJoin, wire.Join{Group: gid(d), Name: "a2"}, nil)) // a member may rejoin
	must(t, a.call(wire.OpLeave, wire.GroupRef{Group: gid(d)}, nil))
	must(t, p.call(wire.OpJoin, wire.Join{Group: gid(d), Name: "c"}, nil))
}

func TestGroupSendLimits(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{MaxMessageBytes: 10, MaxBatch: 3})
	p := joined(t, d, "p")
	g := gid(d)
	tests := []struct {
		name string
		msgs []wire.Outgoing
		want wire.Code
		says string // in the error's message: which message, counted as the sender would
	}{
		{"body too large", outgoing("ok", "0123456789a"), wire.CodeTooLarge, "message 2 of 2 has 11 bytes, at most 10"},
		{"the one body too large", outgoing("0123456789a"), wire.CodeTooLarge, "the message has 11 bytes, at most 10"},
		{"batch too large", outgoing("a", "b", "c", "d"), wire.CodeTooLarge, ""},
		{"over the protocol's batch", outgoing(make([]string, wire.MaxBatch+1)...), wire.CodeTooLarge, ""},
		{"empty", nil, wire.CodeBadRequest, ""},
		{"no id", []wire.Outgoing{{Body: []byte("x")}}, wire.CodeBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.send(g, tt.msgs)
			wantCode(t, err, tt.want)
			if err != nil && !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say %q", err, tt.says)
			}
		})
	}
	if in := p.info(g); in.Last != 0 {
		t.Fatalf("Last %d after rejected sends: want nothing appended", in.Last)
	}
	s, err := p.send(g, outgoing("0123456789", "b", ""))
	must(t, err)
	if len(s.Acks) != 3 || s.Acks[2].Seq != 3 {
		t.Fatalf("acks %+v", s.Acks)
	}
}

func TestGroupSendIdempotent(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{})
	p := joined(t, d, "p")
	g := gid(d)
	msgs := outgoing("one", "two")
	first, err := p.send(g, msgs)
	must(t, err)
	again, err := p.send(g, append(msgs, outgoing("three")...))
	must(t, err)
	for i := range 2 {
		a, b := first.Acks[i], again.Acks[i]
		if a.Duplicate || !b.Duplicate || a.Seq != b.Seq || a.Time != b.Time {
			t.Fatalf("ack %d: first %+v, retry %+v: want the original seq and time, marked duplicate", i, a, b)
		}
	}
	if a := again.Acks[2]; a.Duplicate || a.Seq != 3 {
		t.Fatalf("new message ack %+v", a)
	}
	if first.Epoch != again.Epoch || first.Epoch != p.info(g).Epoch {
		t.Fatal("Sent.Epoch is not the group's epoch")
	}
	all, _, err := p.fetch(wire.Fetch{Group: g})
	must(t, err)
	if len(all) != 3 {
		t.Fatalf("log holds %d messages, want 3", len(all))
	}
}

func TestGroupFetch(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{FetchPage: 4})
	p := joined(t, d, "p")
	g := gid(d)
	s, err := p.send(g, outgoing("1", "2", "3", "4", "5", "6"))
	must(t, err)
	epoch := s.Epoch
	ts := func(seq int) int64 { return s.Acks[seq-1].Time }

	tests := []struct {
		name     string
		fetch    wire.Fetch
		want     []uint64
		wantEnd  wire.End
		wantCode wire.Code
	}{
		{"neither: from the start, one page", wire.Fetch{}, []uint64{1, 2, 3, 4}, wire.End{Next: 4, More: true, First: 1, Last: 6}, 0},
		{"after", wire.Fetch{After: u64(4)}, []uint64{5, 6}, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"after the end", wire.Fetch{After: u64(6)}, nil, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"since", wire.Fetch{Since: i64(ts(3))}, []uint64{3, 4, 5, 6}, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"since between", wire.Fetch{Since: i64(ts(3) + 1)}, []uint64{4, 5, 6}, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"since the future", wire.Fetch{Since: i64(ts(6) + 1)}, nil, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"limit", wire.Fetch{After: u64(1), Limit: 2}, []uint64{2, 3}, wire.End{Next: 3, More: true, First: 1, Last: 6}, 0},
		{"limit over the page", wire.Fetch{Limit: 100}, []uint64{1, 2, 3, 4}, wire.End{Next: 4, More: true, First: 1, Last: 6}, 0},
		{"current epoch", wire.Fetch{After: u64(5), Epoch: epoch}, []uint64{6}, wire.End{Next: 6, First: 1, Last: 6}, 0},
		{"both", wire.Fetch{Since: i64(0), After: u64(0)}, nil, wire.End{}, wire.CodeBadRequest},
		{"other epoch", wire.Fetch{Epoch: epoch + 1}, nil, wire.End{}, wire.CodeEpochMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fetch.Group = g
			msgs, end, err := p.fetch(tt.fetch)
			if tt.wantCode != 0 {
				we := wantCode(t, err, tt.wantCode)
				if tt.wantCode == wire.CodeEpochMismatch && we.Epoch != epoch {
					t.Fatalf("epoch_mismatch carries %d, want %d", we.Epoch, epoch)
				}
				return
			}
			must(t, err)
			tt.wantEnd.Epoch = epoch
			if got := seqs(msgs); fmt.Sprint(got) != fmt.Sprint(tt.want) || end != tt.wantEnd {
				t.Fatalf("got %v %+v, want %v %+v", got, end, tt.want, tt.wantEnd)
			}
			for _, m := range msgs {
				if string(m.Body) != fmt.Sprint(m.Seq) || m.From != p.id.Fingerprint() || m.Name != "p" || m.Time != ts(int(m.Seq)) {
					t.Fatalf("message %+v", m)
				}
			}
		})
	}
	// Paging with End.Next reads everything once.
	var all []uint64
	next := uint64(0)
	for {
		msgs, end, err := p.fetch(wire.Fetch{Group: g, After: u64(next), Limit: 3, Epoch: epoch})
		must(t, err)
		all = append(all, seqs(msgs)...)
		next = end.Next
		if !end.More {
			break
		}
	}
	if fmt.Sprint(all) != "[1 2 3 4 5 6]" {
		t.Fatalf("paged %v", all)
	}
}

// TestGroupFetchFrames checks that a large fetch is cut into frames that fit
// the protocol's limits.
func TestGroupFetchFrames(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{MaxBatch: 100, SendRate: -1}) // 3015 messages from one member
	p := joined(t, d, "p")
	g := gid(d)
	body := bytes.Repeat([]byte("x"), 60<<10)
	for range 3 {
		msgs := make([]wire.Outgoing, 5)
		for i := range msgs {
			msgs[i] = wire.Outgoing{ID: wire.NewID(), Body: body}
		}
		_, err := p.send(g, msgs)
		must(t, err)
	}
	small := make([]string, 100)
	for range 30 {
		_, err := p.send(g, outgoing(small...))
		must(t, err)
	}
	fs := p.do(wire.OpFetch, wire.Fetch{Group: g})
	n := 0
	for _, f := range fs[:len(fs)-1] {
		var m wire.Messages
		f.decode(t, &m)
		if len(m.Messages) > frameMaxMessages {
			t.Fatalf("frame of %d messages", len(m.Messages))
		}
		n += len(m.Messages)
	}
	if n != 3015 || len(fs) < 5 {
		t.Fatalf("%d messages in %d frames", n, len(fs))
	}
}

func TestGroupConcurrentSenders(t *testing.T) {
	const clients, each = 20, 50
	d, _ := startGroupDaemon(t, Config{})
	g := gid(d)
	peers := make([]*peer, clients)
	for i := range peers {
		peers[i] = joined(t, d, fmt.Sprintf("c%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for _, p := range peers {
		wg.Go(func() {
			for j := range each {
				var s wire.Sent
				fs := p.frames(p.open(request(t, wire.OpSend, wire.Send{Group: g, Messages: outgoing(fmt.Sprint(j))})))
				if len(fs) != 1 || fs[0].kind != wire.KindResult {
					errs <- fmt.Errorf("send: %+v", fs)
					return
				}
				if err := fs[0].raw.Decode(&s); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	msgs, end, err := peers[0].fetch(wire.Fetch{Group: g})
	must(t, err)
	if len(msgs) != clients*each || end.Last != clients*each || end.More {
		t.Fatalf("%d messages, end %+v", len(msgs), end)
	}
	perSender := make(map[wire.Fingerprint]int)
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d: want gapless", i, m.Seq)
		}
		if i > 0 && m.Time <= msgs[i-1].Time {
			t.Fatalf("time %d after %d: want strictly increasing", m.Time, msgs[i-1].Time)
		}
		perSender[m.From]++
	}
	for _, p := range peers {
		if perSender[p.id.Fingerprint()] != each {
			t.Fatalf("sender %s has %d messages, want %d", p.id.Fingerprint().Short(), perSender[p.id.Fingerprint()], each)
		}
	}
}

// watcher reads a watch's frames one at a time.
type watcher struct {
	start wire.Start
	next  func() frame // the next frame; fails the test at the stream's end
}

func (p *peer) watch(args wire.Watch) (*watcher, error) {
	p.t.Helper()
	str := p.open(request(p.t, wire.OpWatch, args))
	f, err := readFrame(str)
	must(p.t, err)
	if f.kind == wire.KindError {
		return nil, f.err
	}
	if f.kind != wire.KindStart {
		p.t.Fatalf("watch: first frame of kind %d, want Start", f.kind)
	}
	w := &watcher{}
	f.decode(p.t, &w.start)
	p.t.Cleanup(func() { str.CancelRead(0x1); str.CancelWrite(0x1) })
	w.next = func() frame {
		p.t.Helper()
		f, err := readFrame(str)
		if err != nil {
			p.t.Fatalf("watch: %v", err)
		}
		return f
	}
	return w, nil
}

func TestGroupWatchHistoryThenLive(t *testing.T) {
	const senders, each = 5, 40
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	g := gid(d)
	p := joined(t, d, "watcher")
	_, err := p.send(g, outgoing("h1", "h2", "h3"))
	must(t, err)

	w, err := p.watch(wire.Watch{Group: g})
	must(t, err)
	if w.start.Last != 3 || w.start.First != 1 || w.start.Epoch == 0 {
		t.Fatalf("start %+v", w.start)
	}
	var wg sync.WaitGroup
	for i := range senders {
		s := joined(t, d, fmt.Sprintf("s%d", i))
		wg.Go(func() {
			for j := range each {
				fs := s.frames(s.open(request(t, wire.OpSend, wire.Send{Group: g, Messages: outgoing(fmt.Sprint(j))})))
				if len(fs) != 1 || fs[0].kind != wire.KindResult {
					t.Errorf("send: %+v", fs)
					return
				}
			}
		})
	}
	want := uint64(3 + senders*each)
	next := uint64(1)
	for next <= want {
		f := w.next()
		if f.kind != wire.KindMessages {
			t.Fatalf("frame of kind %d, want messages", f.kind)
		}
		var m wire.Messages
		f.decode(t, &m)
		for _, msg := range m.Messages {
			if msg.Seq != next {
				t.Fatalf("watch delivered seq %d, want %d: a gap or duplicate", msg.Seq, next)
			}
			next++
		}
	}
	wg.Wait()
}

// TestGroupWatchersShareFrames runs watchers that follow the log at the
// same cursor while members send one message at a time and in batches:
// most deliveries then take the frame another watcher published, and each
// watcher must still see every message once, in order, with its contents.
func TestGroupWatchersShareFrames(t *testing.T) {
	const watchers, sends = 8, 60
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	g := gid(d)
	ws := make([]*watcher, watchers)
	for i := range ws {
		p := joined(t, d, fmt.Sprintf("w%d", i))
		w, err := p.watch(wire.Watch{Group: g, After: u64(0)})
		must(t, err)
		ws[i] = w
	}
	s := joined(t, d, "sender")
	var bodies []string
	for j := range sends {
		batch := []string{fmt.Sprint("m", j)}
		if j%10 == 9 {
			batch = append(batch, fmt.Sprint("m", j, "b"), fmt.Sprint("m", j, "c"))
		}
		_, err := s.send(g, outgoing(batch...))
		must(t, err)
		bodies = append(bodies, batch...)
	}
	if d.groups[g].shared.Load() == nil {
		t.Fatal("no frame was shared between watchers")
	}
	for i, w := range ws {
		next := uint64(1)
		for next <= uint64(len(bodies)) {
			f := w.next()
			if f.kind != wire.KindMessages {
				t.Fatalf("watcher %d: frame of kind %d, want messages", i, f.kind)
			}
			var m wire.Messages
			f.decode(t, &m)
			for _, msg := range m.Messages {
				if msg.Seq != next || string(msg.Body) != bodies[next-1] || msg.Name != "sender" {
					t.Fatalf("watcher %d: got seq %d %q from %q, want seq %d %q from sender", i, msg.Seq, msg.Body, msg.Name, next, bodies[next-1])
				}
				next++
			}
		}
	}
}

func TestGroupWatchSelections(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	g := gid(d)
	p := joined(t, d, "p")
	s, err := p.send(g, outgoing("1", "2", "3", "4"))
	must(t, err)

	first := func(w *watcher) uint64 {
		var m wire.Messages
		w.next().decode(t, &m)
		return m.Messages[0].Seq
	}
	w, err := p.watch(wire.Watch{Group: g, After: u64(2)})
	must(t, err)
	if got := first(w); got != 3 {
		t.Fatalf("after 2: first seq %d", got)
	}
	w, err = p.watch(wire.Watch{Group: g, Since: i64(s.Acks[3].Time)})
	must(t, err)
	if got := first(w); got != 4 {
		t.Fatalf("since the 4th: first seq %d", got)
	}
	_, err = p.watch(wire.Watch{Group: g, Epoch: s.Epoch + 1})
	we := wantCode(t, err, wire.CodeEpochMismatch)
	if we.Epoch != s.Epoch {
		t.Fatalf("epoch_mismatch carries %d, want %d", we.Epoch, s.Epoch)
	}
	_, err = p.watch(wire.Watch{Group: g, Since: i64(0), After: u64(0)})
	wantCode(t, err, wire.CodeBadRequest)
}

func TestGroupWatchHeartbeat(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: 20 * time.Millisecond, Now: func() time.Time { return now }})
	p := joined(t, d, "p")
	_, err := p.send(gid(d), outgoing("x"))
	must(t, err)
	w, err := p.watch(wire.Watch{Group: gid(d), After: u64(1)})
	must(t, err)
	if w.start.HeartbeatMS != 20 {
		t.Fatalf("HeartbeatMS %d", w.start.HeartbeatMS)
	}
	for range 2 {
		f := w.next()
		if f.kind != wire.KindHeartbeat {
			t.Fatalf("frame of kind %d, want a heartbeat", f.kind)
		}
		var h wire.Heartbeat
		f.decode(t, &h)
		if h.Last != 1 || h.Now != now.UnixNano() {
			t.Fatalf("heartbeat %+v", h)
		}
	}
}

func TestGroupWatchGap(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Retention: store.Config{MaxMessages: 8}, HeartbeatInterval: time.Hour})
	p := joined(t, d, "p")
	g := gid(d)
	for range 4 {
		_, err := p.send(g, outgoing("a", "b", "c", "d", "e"))
		must(t, err)
	}
	in := p.info(g)
	if in.First <= 2 || in.Last != 20 {
		t.Fatalf("info %+v: want early messages evicted", in)
	}
	w, err := p.watch(wire.Watch{Group: g, After: u64(1)})
	must(t, err)
	f := w.next()
	if f.kind != wire.KindGap {
		t.Fatalf("frame of kind %d, want a gap", f.kind)
	}
	var gap wire.Gap
	f.decode(t, &gap)
	if gap.From != 2 || gap.To != in.First-1 {
		t.Fatalf("gap %+v, want 2..%d", gap, in.First-1)
	}
	var m wire.Messages
	w.next().decode(t, &m)
	if m.Messages[0].Seq != in.First {
		t.Fatalf("after the gap: seq %d, want %d", m.Messages[0].Seq, in.First)
	}

	// A Gap at the start of a watch is for a cursor only (PROTOCOL.md
	// §8.7): after = 0 names a position whose next messages are gone; no
	// selection, or a time, asks for what the log holds.
	for _, tc := range []struct {
		what    string
		args    wire.Watch
		gapFrom uint64 // 0: no gap
	}{
		{"after 0", wire.Watch{Group: g, After: u64(0)}, 1},
		{"no selection", wire.Watch{Group: g}, 0},
		{"since 0", wire.Watch{Group: g, Since: i64(0)}, 0},
		{"after first-1", wire.Watch{Group: g, After: u64(in.First - 1)}, 0},
	} {
		w, err := p.watch(tc.args)
		must(t, err)
		f := w.next()
		if tc.gapFrom != 0 {
			if f.kind != wire.KindGap {
				t.Fatalf("%s: frame of kind %d after Start, want a gap", tc.what, f.kind)
			}
			f.decode(t, &gap)
			if gap.From != tc.gapFrom || gap.To != in.First-1 {
				t.Fatalf("%s: gap %+v, want %d..%d", tc.what, gap, tc.gapFrom, in.First-1)
			}
			f = w.next()
		}
		if f.kind != wire.KindMessages {
			t.Fatalf("%s: frame of kind %d, want the messages held", tc.what, f.kind)
		}
		f.decode(t, &m)
		if m.Messages[0].Seq != in.First {
			t.Fatalf("%s: first message %d, want %d", tc.what, m.Messages[0].Seq, in.First)
		}
	}
}

func TestGroupLeaveEndsWatch(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	p := joined(t, d, "p")
	w, err := p.watch(wire.Watch{Group: gid(d)})
	must(t, err)
	must(t, p.call(wire.OpLeave, wire.GroupRef{Group: gid(d)}, nil))
	f := w.next()
	if f.kind != wire.KindError || f.err.Code != wire.CodeNotMember {
		t.Fatalf("after leave: frame %+v, want not_member", f)
	}
}

func TestGroupCloseEndsWatch(t *testing.T) {
	d, stop := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	p := joined(t, d, "p")
	w, err := p.watch(wire.Watch{Group: gid(d)})
	must(t, err)
	// Read while Close runs: a closed connection discards what it had
	// received but not yet handed to the reader.
	closed := make(chan struct{})
	go func() { stop(); close(closed) }()
	f := w.next()
	<-closed
	if f.kind != wire.KindError || f.err.Code != wire.CodeUnavailable {
		t.Fatalf("after Close: frame %+v, want unavailable", f)
	}
	if !errors.Is(f.err, wire.ErrUnavailable) {
		t.Fatal("not ErrUnavailable")
	}
}

func TestGroupConfigValidate(t *testing.T) {
	ok := Config{StateDir: "x", Groups: []Spec{{Name: "g"}}}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no state dir", func(c *Config) { c.StateDir = "" }},
		{"no groups", func(c *Config) { c.Groups = nil }},
		{"bad group name", func(c *Config) { c.Groups = []Spec{{Name: ""}} }},
		{"duplicate group", func(c *Config) { c.Groups = []Spec{{Name: "g"}, {Name: "g"}} }},
		{"long secret", func(c *Config) { c.Groups[0].Secret = make([]byte, wire.MaxSecretBytes+1) }},
		{"batch over the protocol's", func(c *Config) { c.MaxBatch = wire.MaxBatch + 1 }},
		{"message over a frame", func(c *Config) { c.MaxMessageBytes = wire.MaxFrameSize }},
		{"members over a frame", func(c *Config) { c.MaxMembers = wire.MaxArrayItems + 1 }},
		{"advertise without port", func(c *Config) { c.Advertise = []string{"10.0.0.1"} }},
		// Registries refuse these (wire.Dialable): the daemon ran, its
		// groups never listed (until session 23).
		{"advertise every address", func(c *Config) { c.Advertise = []string{"10.0.0.1:7374", "0.0.0.0:7374"} }},
		{"advertise multicast", func(c *Config) { c.Advertise = []string{"224.0.0.251:7374"} }},
		{"advertise port 0", func(c *Config) { c.Advertise = []string{"10.0.0.1:0"} }},
		{"negative retention", func(c *Config) { c.Retention.MaxMessages = -1 }},
		// huddle/1 promises a retry is stored once within a group's last
		// 65,536 messages at least: a Go embedder could set fewer (until
		// session 19).
		{"dedup window below the protocol's", func(c *Config) { c.Retention.DedupWindow = store.DefaultDedupWindow - 1 }},
		{"negative timeout", func(c *Config) { c.Server.WriteTimeout = -1 }},
		{"negative idle timeout", func(c *Config) { c.Server.IdleTimeout = -1 }},
		{"burst below a batch", func(c *Config) { c.SendRate, c.SendBurst, c.MaxBatch = 10, 5, 6 }},
		{"default burst below a batch", func(c *Config) { c.MaxBatch, c.SendBurst = wire.MaxBatch, 0 }},
		{"rate not a number", func(c *Config) { c.SendRate = math.NaN() }},
		{"infinite rate", func(c *Config) { c.SendRate = math.Inf(1) }},
		{"negative burst", func(c *Config) { c.SendBurst = -1 }},
		{"request frame too small", func(c *Config) { c.Server.MaxRequestBytes = server.MinMaxRequestBytes - 1 }},
		{"request frame over the protocol's", func(c *Config) { c.Server.MaxRequestBytes = wire.MaxFrameSize + 1 }},
		{"message over the request frame", func(c *Config) { c.Server.MaxRequestBytes = 64 << 10 }},
		{"negative connections per address", func(c *Config) { c.Server.MaxConnsPerAddr = -1 }},
		{"negative connections", func(c *Config) { c.Server.MaxConns = -1 }},
		{"cell in memory", func(c *Config) {
			c.Storage.Memory = true
			c.Cell = &CellConfig{Join: true}
		}},
	}
	must(t, ok.Validate())
	unlimited := ok
	unlimited.SendRate, unlimited.MaxBatch = -1, wire.MaxBatch // no bucket: any batch size
	must(t, unlimited.Validate())
	wider := ok
	wider.Retention.DedupWindow = 2 * store.DefaultDedupWindow
	must(t, wider.Validate())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.Groups = append([]Spec(nil), ok.Groups...)
			tt.edit(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate: %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestGroupWatchStalledReaderEnds checks that a watcher that stops reading
// loses its watch once a write has blocked for WriteTimeout, without
// slowing senders.
//
// The write timeout bounds every reply of the daemon's, the sender's too:
// at 100 ms, a send's one-frame Result, which nothing holds back but the
// daemon's own scheduling, was cut off with 0x2 at load ~20 under -race
// ("stream failed" op=send err="deadline exceeded", a second after the
// watch's). 2 s leaves the sender's replies room; the stalled watch still
// ends 2 s after its write blocks.
func TestGroupWatchStalledReaderEnds(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{Server: server.Config{WriteTimeout: 2 * time.Second}, HeartbeatInterval: time.Hour})
	g := gid(d)
	w := joined(t, d, "stalled")
	str := w.open(request(t, wire.OpWatch, wire.Watch{Group: g}))
	f, err := readFrame(str)
	must(t, err)
	if f.kind != wire.KindStart {
		t.Fatalf("first frame of kind %d", f.kind)
	}
	s := joined(t, d, "sender")
	body := bytes.Repeat([]byte("x"), 60<<10)
	for range 10 { // 3 MiB: far more than the stream's flow-control window
		msgs := make([]wire.Outgoing, 5)
		for i := range msgs {
			msgs[i] = wire.Outgoing{ID: wire.NewID(), Body: body}
		}
		_, err := s.send(g, msgs)
		must(t, err)
	}
	eventually(t, "the stalled watch to end", func() bool { return int64(d.srv.Stats().Streams) == 0 })
	for {
		_, err := readFrame(str)
		if err == nil {
			continue
		}
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != wire.StreamTimeout {
			t.Fatalf("got %v, want the stream reset with code 0x2", err)
		}
		break
	}
}

// TestGroupWatchCancelledByClient checks that a watch ends when its client
// cancels the stream.
func TestGroupWatchCancelledByClient(t *testing.T) {
	d, _ := startGroupDaemon(t, Config{HeartbeatInterval: time.Hour})
	p := joined(t, d, "p")
	str := p.open(request(t, wire.OpWatch, wire.Watch{Group: gid(d)}))
	_, err := readFrame(str)
	must(t, err)
	eventually(t, "only the watch running", func() bool { return int64(d.srv.Stats().Streams) == 1 })
	str.CancelRead(0x1)
	eventually(t, "the watch to end", func() bool { return int64(d.srv.Stats().Streams) == 0 })
}

func TestGroupBadState(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, groupsFile), []byte("{not json"), 0o600))
	d, err := New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "g"}}})
	must(t, err)
	if err := d.Listen(); !errors.Is(err, ErrBadState) {
		t.Fatalf("Listen with a corrupt groups.json: %v, want ErrBadState", err)
	}
	must(t, d.Close())

	dir = t.TempDir()
	ids, err := loadGroupIDs(dir, []string{"g"}, slog.New(slog.DiscardHandler))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, membersFile(ids["g"])), []byte(`{"group":"`+ids["g"].String()+`","members":[{"fingerprint":"nope","name":"x"}]}`), 0o600))
	d, err = New(Config{StateDir: dir, Listen: "127.0.0.1:0", Groups: []Spec{{Name: "g"}}})
	must(t, err)
	if err := d.Listen(); !errors.Is(err, ErrBadState) {
		t.Fatalf("Listen with a corrupt members file: %v, want ErrBadState", err)
	}
	must(t, d.Close())
}

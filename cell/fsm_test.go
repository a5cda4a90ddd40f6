package cell

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// fsmFixture is a state machine with one group, fed raft entries by hand.
type fsmFixture struct {
	t     testing.TB
	f     *fsm
	host  *testHost
	spec  GroupSpec
	index uint64
	enc   *encoder
}

func newFSMFixture(t testing.TB, host *testHost) *fsmFixture {
	x := &fsmFixture{t: t, host: host, enc: newEncoder(),
		spec: GroupSpec{ID: uuid.New(), Name: "lobby", Epoch: 42, DedupWindow: 1024}}
	x.f = newFSM(host, slog.New(slog.DiscardHandler), make(chan struct{}))
	if r := x.apply(1, encodeCreate(nil, x.spec)); r[0] != nil {
		t.Fatalf("create: %v", r[0])
	}
	return x
}

// apply applies commands as one batch of entries of term.
func (x *fsmFixture) apply(term uint64, cmds ...[]byte) []any {
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		x.index++
		logs[i] = &raft.Log{Index: x.index, Term: term, Type: raft.LogCommand, Data: c}
	}
	return x.f.ApplyBatch(logs)
}

// send encodes a send of n messages from seq, at times from t on.
func (x *fsmFixture) send(term, seq uint64, t int64, n int) []byte {
	entries := make([]store.Entry, n)
	for i := range entries {
		entries[i] = store.Entry{Seq: seq + uint64(i), Time: t + int64(i), ID: newID(int(seq) + i), From: alice, Body: []byte("m")}
	}
	return x.enc.encodeSend(nil, x.spec.ID, term, entries)
}

func (x *fsmFixture) tail() uint64 {
	seq, _ := x.host.replica(x.spec.ID).log.Tail()
	return seq
}

func TestFSMAppliesInOrder(t *testing.T) {
	x := newFSMFixture(t, newTestHost(""))
	// Three sends in one batch: merged into one append.
	r := x.apply(2, x.send(2, 1, 100, 2), x.send(2, 3, 200, 3), x.send(2, 6, 300, 1))
	for i, v := range r {
		if v != nil {
			t.Fatalf("send %d: %v", i, v)
		}
	}
	if got := x.tail(); got != 6 {
		t.Fatalf("tail %d, want 6", got)
	}
}

// TestFSMReplaySkips: entries raft replays after a restart (the log holds
// them already) are skipped, and what follows them is applied.
func TestFSMReplaySkips(t *testing.T) {
	x := newFSMFixture(t, newTestHost(""))
	a, b := x.send(2, 1, 100, 3), x.send(2, 4, 200, 2)
	x.apply(2, a, b)
	// Replayed: a and b again, then c.
	r := x.apply(2, a, b, x.send(2, 6, 300, 1))
	for i, v := range r {
		if v != nil {
			t.Fatalf("entry %d: %v", i, v)
		}
	}
	if got := x.tail(); got != 6 {
		t.Fatalf("tail %d, want 6", got)
	}
	if msgs := x.host.replica(x.spec.ID).log.(*store.Log).Stats().Messages; msgs != 6 {
		t.Fatalf("%d messages held, want 6 (nothing twice)", msgs)
	}
}

// TestFSMRefusesStaleAndGaps: a send stamped in another term than its
// entry's, or one that does not follow on from the log, is refused and
// changes nothing; what follows on is applied.
func TestFSMRefusesStaleAndGaps(t *testing.T) {
	x := newFSMFixture(t, newTestHost(""))
	x.apply(3, x.send(3, 1, 100, 2))
	cases := []struct {
		name string
		cmd  []byte
		term uint64
		want error
	}{
		{"stamped in an earlier term", x.send(2, 3, 200, 1), 3, errStale},
		{"a gap", x.send(3, 5, 200, 1), 3, errGap},
		{"time not after the tail", x.send(3, 3, 101, 1), 3, errGap},
	}
	for _, tc := range cases {
		r := x.apply(tc.term, tc.cmd)
		if err, _ := r[0].(error); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, r[0], tc.want)
		}
		if got := x.tail(); got != 2 {
			t.Fatalf("%s: tail %d, want 2 (unchanged)", tc.name, got)
		}
	}
	if r := x.apply(3, x.send(3, 3, 200, 1)); r[0] != nil {
		t.Fatalf("the send that follows on: %v", r[0])
	}
}

// TestFSMBatchesGroups: a batch whose sends go to two groups, interleaved,
// appends each group's once, and the next batches start afresh from each
// log's tail.
func TestFSMBatchesGroups(t *testing.T) {
	x := newFSMFixture(t, newTestHost(""))
	a := x.spec
	b := GroupSpec{ID: uuid.New(), Name: "annex", Epoch: 43, DedupWindow: 16}
	if r := x.apply(1, encodeCreate(nil, b)); r[0] != nil {
		t.Fatalf("create: %v", r[0])
	}
	sendTo := func(g GroupSpec, seq uint64, t int64, n int) []byte {
		x.spec = g
		defer func() { x.spec = a }()
		return x.send(2, seq, t, n)
	}
	tails := func() (uint64, uint64) {
		ta, _ := x.host.replica(a.ID).log.Tail()
		tb, _ := x.host.replica(b.ID).log.Tail()
		return ta, tb
	}
	for round := range uint64(3) {
		r := x.apply(2, sendTo(a, 1+5*round, 100+100*int64(round), 2), sendTo(b, 1+4*round, 100+100*int64(round), 4),
			sendTo(a, 3+5*round, 150+100*int64(round), 3))
		for i, v := range r {
			if v != nil {
				t.Fatalf("round %d, send %d: %v", round, i, v)
			}
		}
		if ta, tb := tails(); ta != 5*(round+1) || tb != 4*(round+1) {
			t.Fatalf("round %d: tails %d and %d, want %d and %d", round, ta, tb, 5*(round+1), 4*(round+1))
		}
	}
}

// failingLog is a log whose appends fail, as on a full disk.
type failingLog struct{ Log }

func (failingLog) Append([]store.Entry) error { return errors.New("no space left on device") }

// TestFSMClosingWhileAppendFails: a batch whose append keeps failing
// when the daemon stops answers ErrClosed for its sends, those to other
// groups of the batch included (never success for a send not applied).
func TestFSMClosingWhileAppendFails(t *testing.T) {
	closing := make(chan struct{})
	x := newFSMFixture(t, newTestHost(""))
	x.f.closing = closing
	a := x.spec
	b := GroupSpec{ID: uuid.New(), Name: "annex", Epoch: 43, DedupWindow: 16}
	if r := x.apply(1, encodeCreate(nil, b)); r[0] != nil {
		t.Fatalf("create: %v", r[0])
	}
	x.f.group(a.ID).log = failingLog{x.f.group(a.ID).log}
	close(closing)
	sa := x.send(2, 1, 100, 2)
	x.spec = b
	sb := x.send(2, 1, 100, 2)
	r := x.apply(2, sa, sb, x.send(2, 3, 200, 1))
	for i, v := range r {
		if err, _ := v.(error); !errors.Is(err, ErrClosed) {
			t.Errorf("send %d: %v, want ErrClosed", i, v)
		}
	}
}

// TestFSMSnapshotRestore: a snapshot records positions and members; a
// state machine restored from it on a replica whose log holds the
// messages already goes on from there.
func TestFSMSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	host := newTestHost(dir)
	x := newFSMFixture(t, host)
	x.apply(2, encodeJoin(nil, x.spec.ID, Member{Fingerprint: wire.Fingerprint{7}, Name: "bob", Joined: 5}, 10), x.send(2, 1, 100, 4))
	sink := x.snapshot()
	host.close()

	host2 := newTestHost(dir)
	t.Cleanup(host2.close)
	f2 := newFSM(host2, slog.New(slog.DiscardHandler), make(chan struct{}))
	if err := f2.Restore(sink.reader()); err != nil {
		t.Fatal(err)
	}
	r := host2.replica(x.spec.ID)
	if seq, _ := r.log.Tail(); seq != 4 || r.memberCount() != 1 || r.log.Epoch() != 42 {
		t.Fatalf("restored: tail %d, %d members, epoch %d", seq, r.memberCount(), r.log.Epoch())
	}
	// Restoring where the log is behind needs a peer to catch up from.
	empty := newTestHost("")
	f3 := newFSM(empty, slog.New(slog.DiscardHandler), make(chan struct{}))
	if err := f3.Restore(sink.reader()); err == nil {
		t.Fatal("restore into an empty log with no peer succeeded")
	}
}

// snapshot takes a snapshot of x's state machine, persisted to a memSink.
func (x *fsmFixture) snapshot() *memSink {
	x.t.Helper()
	snap, err := x.f.Snapshot()
	if err != nil {
		x.t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		x.t.Fatal(err)
	}
	return sink
}

type memSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *memSink) ID() string    { return "test" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) reader() *readCloser {
	return &readCloser{bytes.NewReader(bytes.Clone(s.Bytes()))}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

package cell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/internal/testlog"
	"github.com/huddle-chat/huddle/wire"
)

// openRefusingHost is a daemon whose OpenGroup refuses every group with
// err.
type openRefusingHost struct{ err error }

func (h openRefusingHost) OpenGroup(GroupSpec) (Replica, error) { return nil, h.err }

// TestFSMCreateWhileClosing: a group the cell created that the daemon
// does not open because it is closing (its OpenGroup's error wraps
// ErrClosed: raft applying on after a shutdown the daemon stopped waiting
// for) is logged as expected, at info, saying the member is closing; a
// log that cannot be opened is still an error. Until session 22 both were
// logged at error as "cannot open a group the cell created".
func TestFSMCreateWhileClosing(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want []string // in the one line logged
	}{
		{"closing", fmt.Errorf("group lobby: %w", ErrClosed), []string{"level=INFO", "this member is closing", "group=lobby"}},
		{"log unusable", errors.New("group lobby: its log cannot be read"), []string{"level=ERROR", "cannot open a group the cell created", "its log cannot be read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf testlog.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			x := &fsmFixture{t: t, enc: newEncoder(), f: newFSM(openRefusingHost{tc.err}, log, make(chan struct{}))}
			spec := GroupSpec{ID: uuid.New(), Name: "lobby", Epoch: 1, DedupWindow: 64}
			if err, _ := x.apply(1, encodeCreate(nil, spec))[0].(error); !errors.Is(err, tc.err) {
				t.Fatalf("create: %v, want the host's %v", err, tc.err)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("logged %q, want one line", lines)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("logged %q, want it to hold %q", lines[0], w)
				}
			}
		})
	}
}

// TestFSMRestoreWhileClosing: raft logs a snapshot its state machine did
// not restore at error level. One refused because the member is closing
// is expected, and said so at info (restoreRefusedClosing): at start
// (raft's own NewRaft, run here) and for a snapshot the leader sent
// (whose error raft formats with %v, dropping what it wraps), where the
// leader's line for the refusal it reads is info too (sentRefusedClosing).
// A restore that fails otherwise (a snapshot unreadable) is still an
// error, on both. Until session 23 the closing refusal was logged as an
// error, on both.
func TestFSMRestoreWhileClosing(t *testing.T) {
	// A snapshot of a cell holding one group of 4 messages.
	x := newFSMFixture(t, newTestHost(t.TempDir()))
	t.Cleanup(x.host.close)
	x.apply(2, x.send(2, 1, 100, 4))
	sink := x.snapshot()
	closed := make(chan struct{})
	close(closed)
	for _, tc := range []struct {
		name      string
		closing   bool // from the start, or (during) as the restore catches up
		during    bool
		snapshot  []byte
		sent      bool // by the leader, once started: raft logs the error through %v
		wantLevel slog.Level
		wantMsg   string
		leaderMsg string // the leader's line, for a snapshot sent
	}{
		{"at start, closing", true, false, sink.Bytes(), false, slog.LevelInfo, restoreRefusedClosing, ""},
		{"sent, closing", true, false, sink.Bytes(), true, slog.LevelInfo, restoreRefusedClosing, sentRefusedClosing},
		{"sent, closing during its catch-up", false, true, sink.Bytes(), true, slog.LevelInfo, restoreRefusedClosing, sentRefusedClosing},
		{"at start, unreadable", false, false, []byte("not a snapshot"), false, slog.LevelError, raftRestoreFailed, ""},
		{"sent, unreadable", false, false, []byte("not a snapshot"), true, slog.LevelError, raftRestoreFailed, raftInstallFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closing := make(chan struct{})
			if tc.closing {
				closing = closed
			}
			f := newFSM(newTestHost(""), slog.New(slog.DiscardHandler), closing)
			if tc.during {
				// The member closes while its log behind the snapshot
				// catches up, which fails for it otherwise than ErrClosed.
				f.catchUp = func(context.Context, *groupState, uint64, int64, bool, *catchUpRestore) error {
					close(closing)
					return errors.New("catch up: the stream was reset")
				}
			}
			recs := make(recordChan, 100)
			log := hclogFor(slog.New(recs), "raft")
			if tc.sent {
				// As raft's installSnapshot logs the restore's error, and
				// the leader the answer it reads (raftwire's rpcError).
				err := f.Restore(readCloser{bytes.NewReader(tc.snapshot)})
				if err == nil {
					t.Fatal("restored")
				}
				err = fmt.Errorf("failed to restore snapshot %v: %v", "2-10-1", err)
				log.Error("failed to restore snapshot", "error", err)
				leaderLog := hclogFor(slog.New(recs), "raft")
				leaderLog.Error("failed to install snapshot", "id", "2-10-1", "error", remoteError(err.Error()))
			} else {
				raftRestores(t, f, log, tc.snapshot)
			}
			close(recs)
			want := map[string]int{tc.wantMsg: 0}
			if tc.leaderMsg != "" {
				want[tc.leaderMsg] = 0
			}
			for r := range recs {
				_, wanted := want[r.Message]
				switch {
				case wanted:
					want[r.Message]++
					if r.Level != tc.wantLevel {
						t.Errorf("%q logged at %v, want %v", r.Message, r.Level, tc.wantLevel)
					}
				case r.Level >= slog.LevelWarn:
					t.Errorf("logged %q at %v", r.Message, r.Level)
				}
			}
			for msg, said := range want {
				if said != 1 {
					t.Errorf("%q logged %d times, want once", msg, said)
				}
			}
		})
	}
}

// raftRestores starts raft on f, logging to log, with snapshot its one
// snapshot: raft restores it as it starts, and its start fails if the
// restore does.
func raftRestores(t *testing.T, f *fsm, log hclog.Logger, snapshot []byte) {
	t.Helper()
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	id := raft.ServerID(wire.Fingerprint{1}.String())
	conf := raft.Configuration{Servers: []raft.Server{{ID: id, Address: trans.LocalAddr()}}}
	s, err := snaps.Create(raft.SnapshotVersionMax, 10, 1, conf, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	s.Write(snapshot)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = id
	rc.Logger = log
	f.starting.Store(true)
	r, err := raft.NewRaft(rc, f, store, store, snaps, trans)
	if err == nil {
		r.Shutdown().Error()
		t.Fatal("raft started: the snapshot was restored")
	}
}

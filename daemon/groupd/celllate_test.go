package groupd

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/store"
)

// closeWatchedLog is a group's log that says whether it was closed.
type closeWatchedLog struct {
	cellLog
	mu     sync.Mutex
	closed bool
}

func (l *closeWatchedLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.cellLog.Close()
}

func (l *closeWatchedLog) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// TestCellLateOpenClosed: a group the cell's state machine opens once the
// daemon has closed (raft's apply goroutine, which a Close stuck in the
// disk did not wait for: cell.ErrStuck, going on once the disk answers)
// leaves no log open and no file created after the daemon released its
// state directory: an open whose log was opening as the daemon closed is
// waited for and its log closed, one that had only checked the daemon
// was open creates nothing, and none is opened after. Until session 21
// the log was opened and kept, after the daemon had closed the others
// and released its state directory: nothing closed it; until session 22
// an open that had passed its check created the group's files after the
// release. Here the test calls OpenGroup as that goroutine would, the
// daemon's Close run from within the open (cellHost.checked, opened) or
// before it. The refusal is cell.ErrClosed too: the state machine logs it
// as expected (cell's TestFSMCreateWhileClosing).
func TestCellLateOpenClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// during sets a hook that closes the daemon within the open, and
		// returns what waits for that Close to return.
		during func(h *cellHost, stop func()) (closed func())
		opened int // group logs opened by the daemon
	}{
		// Between the open's first check and the log's creation: the
		// open checks again, and creates nothing.
		{"open checked", func(h *cellHost, stop func()) func() {
			h.checked = func(cell.GroupSpec) { stop() }
			return func() {}
		}, 1},
		// The log open: the daemon's Close waits for the open to end (in
		// a goroutine, or the open would wait for Close), and closes it.
		{"open under way", func(h *cellHost, stop func()) func() {
			closed := make(chan struct{})
			h.opened = func(cell.GroupSpec) {
				go func() { stop(); close(closed) }()
				eventually(t, "the daemon closing", func() bool {
					h.mu.Lock()
					defer h.mu.Unlock()
					return h.closed
				})
				select {
				case <-closed:
					t.Error("the daemon's Close returned (its state directory released) while a group's log was opening")
				default:
				}
			}
			return func() { <-closed }
		}, 2},
		{"open after", nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members := planTestCell(t, 3)
			var mu sync.Mutex
			var opened []*closeWatchedLog // by member 0's daemon
			startOpeningCell(t, members, nil, func(i int, _ *Daemon, l cellLog) Log {
				if i != 0 {
					return l
				}
				w := &closeWatchedLog{cellLog: l}
				mu.Lock()
				opened = append(opened, w)
				mu.Unlock()
				return w
			})
			d := members[0].d
			eventually(t, "the cell's group hosted", func() bool { return d.host.count() == 1 })
			stop := func() { must(t, d.Close()) } // Serve returns; startOpeningCell's cleanup reads it

			late := cell.GroupSpec{Name: "late", Epoch: 1, DedupWindow: 64}
			rand.Read(late.ID[:])
			closed := func() {}
			if tc.during != nil {
				closed = tc.during(d.host, stop)
			} else {
				stop()
			}
			_, err := d.host.OpenGroup(late)
			closed()
			if !errors.Is(err, ErrClosed) || !errors.Is(err, cell.ErrClosed) {
				t.Errorf("OpenGroup after the daemon closed: %v, want ErrClosed (and cell.ErrClosed)", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(opened) != tc.opened {
				t.Errorf("%d group logs opened, want %d (the cell's group's, and the late group's if its log was opening as the daemon closed)", len(opened), tc.opened)
			}
			for i, l := range opened {
				if !l.isClosed() {
					t.Errorf("group log %d of %d, opened by the daemon, is open after it closed", i+1, len(opened))
					l.Close() // not left to the package's other tests
				}
			}
		})
	}
}

// TestCellStuckReleaseRefusesLateOpen: once the daemon released what a
// start it went on without loaded (releaseLoaded, which lifecycle runs
// when that start returns) and the cell's raft did not stop (its state
// machine in an append whose disk does not answer: cell.ErrStuck), a
// group raft goes on to create or restore when the disk answers is not
// opened: ErrClosed, no log. Until session 22 that branch left the host
// open, and OpenGroup opened the group's log, which nothing closed, and
// hosted it in a stopped daemon. The test calls releaseLoaded as
// lifecycle would, on a leader whose state machine hangs in an append,
// and then OpenGroup as raft's goroutine would. A leader deposed before
// the send reached its state machine voids the try (hungAtLeader).
func TestCellStuckReleaseRefusesLateOpen(t *testing.T) {
	rerunOnNewCells(t, 3, "the leader was deposed before the send reached its state machine", cellStuckReleaseRefusesLateOpen)
}

func cellStuckReleaseRefusesLateOpen(t *testing.T) bool {
	members := planTestCell(t, 3)
	opens := make([]atomic.Int32, len(members))
	leader, g, term, h := startHungCell(t, members, nil, func(i int) { opens[i].Add(1) })
	at := slices.Index(members, leader)
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them
	sent := make(chan error, 1)
	go func() {
		_, err := leader.d.node.Send(context.Background(), g, []store.Entry{{ID: [16]byte{1}, From: store.Sender{Name: "ann"}, Body: []byte("on a hung disk")}}, nil)
		sent <- err
	}()
	t.Cleanup(func() { <-sent })
	if !hungAtLeader(t, members, leader, term, h, sent) {
		return false
	}

	d := leader.d
	d.releaseLoaded() // its raft's Close: cell.ErrStuck, after 3 s
	before := opens[at].Load()
	late := cell.GroupSpec{Name: "late", Epoch: 1, DedupWindow: 64}
	rand.Read(late.ID[:])
	if _, err := d.host.OpenGroup(late); !errors.Is(err, ErrClosed) {
		t.Errorf("OpenGroup after a release that left raft stuck: %v, want ErrClosed", err)
	}
	if n := opens[at].Load() - before; n != 0 {
		t.Errorf("%d group logs opened after a release that left raft stuck, want none", n)
	}
	return true
}

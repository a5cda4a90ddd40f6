package groupd

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/cell"
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
// leaves no log open: one whose open was under way as the daemon closed
// is closed, and none is opened after. Until session 21 the log was
// opened and kept, after the daemon had closed the others and released
// its state directory: nothing closed it. Here a cell of one stops, and
// the test calls OpenGroup as that goroutine would, the daemon's Close
// run from within the open (cellHost.opened) or before it.
func TestCellLateOpenClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		during bool // Close runs while the log's open is under way
	}{
		{"open under way", true},
		{"open after", false},
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
			if tc.during {
				d.host.opened = func(cell.GroupSpec) { stop() }
			} else {
				stop()
			}
			if _, err := d.host.OpenGroup(late); !errors.Is(err, ErrClosed) {
				t.Errorf("OpenGroup after the daemon closed: %v, want ErrClosed", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := map[bool]int{true: 2, false: 1}[tc.during]; len(opened) != want {
				t.Errorf("%d group logs opened, want %d (the cell's group's, and the late group's if its open was under way as the daemon closed)", len(opened), want)
			}
			// The late group's log (the cell's group's is the daemon's
			// Close's to close, at once or, were its loops held up on a
			// loaded machine, once they return: leaveLogsLocked).
			for _, l := range opened[min(1, len(opened)):] {
				if !l.isClosed() {
					t.Error("the late group's log, opened as the daemon closed, is open after it closed")
					l.Close() // not left to the package's other tests
				}
			}
		})
	}
}

package groupd

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/store"
)

// hungLog is a cell's group log on a disk that stops answering: while it
// hangs, an append waits (until the test lets it go) holding the log's
// write lock, and so does Close, which waits for that lock, as a disk
// log's does (store.DiskLog's wmu).
type hungLog struct {
	cellLog
	mu      sync.Mutex // the write lock
	hang    atomic.Pointer[chan struct{}]
	waiting atomic.Int32
}

func (l *hungLog) Append(batch []store.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hang.Load(); h != nil {
		l.waiting.Add(1)
		<-*h
	}
	return l.cellLog.Append(batch)
}

func (l *hungLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cellLog.Close()
}

// hangs makes l's appends wait until the function it returns is called.
func (l *hungLog) hangs() (release func()) {
	h := make(chan struct{})
	l.hang.Store(&h)
	var once sync.Once
	return func() {
		once.Do(func() {
			l.hang.Store(nil)
			close(h)
		})
	}
}

// TestCellCloseOnHungDisk: a leader whose group log's disk stops
// answering (an append that never returns) stops when closed, as SIGTERM
// does: its hand-over, raft's shutdown and the logs' Close each waited
// for that append, for ever, until session 19. The send in flight is not
// acknowledged (it was never stored here), and once the disk answers
// again the member restarts on the state left behind and holds the send,
// which the cell committed.
func TestCellCloseOnHungDisk(t *testing.T) {
	members := planTestCell(t, 3)
	logs := make([]atomic.Pointer[hungLog], len(members))
	startOpeningCell(t, members, nil, func(i int, _ *Daemon, l cellLog) Log {
		h := &hungLog{cellLog: l}
		logs[i].Store(h)
		return h
	})
	leader, g := cellLeader(t, members)
	at := slices.Index(members, leader)
	eventually(t, "the leader's group log open", func() bool { return logs[at].Load() != nil })
	h := logs[at].Load()
	release := h.hangs()
	t.Cleanup(release) // after the daemons' own: before them

	node := leader.d.node
	sent := make(chan error, 1)
	go func() {
		_, err := node.Send(context.Background(), g, []store.Entry{{ID: [16]byte{1}, From: store.Sender{Name: "ann"}, Body: []byte("on a hung disk")}}, nil)
		sent <- err
	}()
	eventually(t, "the leader's state machine hung in an append", func() bool { return h.waiting.Load() > 0 })
	closed := make(chan error, 1)
	go func() { closed <- leader.d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(time.Minute):
		release()
		t.Fatal("the daemon's Close still waits a minute on its hung disk")
	}
	if err := <-sent; !errors.Is(err, cell.ErrUnavailable) && !errors.Is(err, cell.ErrClosed) {
		t.Errorf("the send on the hung disk: %v, want ErrUnavailable or ErrClosed (not acknowledged)", err)
	}

	// The disk answers again: what the stopped daemon left is closed in
	// the background, and the member starts on it.
	release()
	var d *Daemon
	eventually(t, "the member restarted on what it left", func() bool {
		var err error
		d, err = New(leader.cfg)
		must(t, err)
		return d.Listen() == nil // its state directory stays locked until its logs are closed
	})
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		must(t, d.Close())
		must(t, <-errc)
	})
	eventually(t, "the restarted member holding the committed send", func() bool {
		hg := d.host.group(g)
		if hg == nil {
			return false
		}
		seq, _ := hg.cell.log.Tail()
		return seq >= 1
	})
}

package groupd

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/internal/testdisk"
)

// TestStartOnFrozenDisk is TestStartOnHungDisk on a real file system that
// stops answering: an ext4 frozen (fsfreeze) under a state directory a
// daemon had made, so that the start's first write (opening the
// directory's lock for writing) waits in the kernel, uninterruptible. The
// daemon told to stop (ctx, as SIGTERM) stops all the same; once the disk
// thaws, what the stuck start took is released (goleak checks its
// goroutine ended) and a daemon starts on the directory. Until session 20
// Serve waited in the disk, its context unwatched.
func TestStartOnFrozenDisk(t *testing.T) {
	disk := testdisk.NewExt4(t, "32M")
	cfg := Config{StateDir: filepath.Join(disk.Dir, "state"), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)}
	first, err := New(cfg)
	must(t, err)
	must(t, first.Listen())
	must(t, first.Close())

	thaw := disk.Freeze()
	d, err := New(cfg)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	eventually(t, "the start waiting in the frozen disk", testdisk.InDiskSleep)
	cancel() // SIGTERM
	if err := peertest.OnHungDisk(t, "a daemon starting on a frozen disk told to stop", func() error { return <-served }, thaw); err != nil {
		t.Errorf("Serve stopped while starting on a frozen disk: %v, want nil", err)
	}
	must(t, peertest.OnHungDisk(t, "Close after a start on a frozen disk", d.Close, thaw))

	thaw()
	restartsOnceClosed(t, cfg)
}

// TestCloseOnFrozenDiskAlone is TestCloseOnHungDiskAlone (the send
// subtest) on a real file system that stops answering: the ext4 under the
// daemon's state directory frozen while a send's append is to write. The
// daemon stops when closed, the send is never acknowledged (its
// connection closes with 0x2, in doubt), and once the disk thaws the
// daemon restarts on what it left, holding the send if the append stored
// it.
func TestCloseOnFrozenDiskAlone(t *testing.T) {
	disk := testdisk.NewExt4(t, "32M")
	cfg := Config{StateDir: filepath.Join(disk.Dir, "state"), Listen: "127.0.0.1:0", Groups: []Spec{{Name: "general"}}, Logger: testLogger(t)}
	cfg.Server.ShutdownTimeout = 200 * time.Millisecond
	d, err := New(cfg)
	must(t, err)
	must(t, d.Listen())
	served := make(chan error, 1)
	go func() { served <- d.Serve(context.Background()) }()
	p := joined(t, d, "ann")
	g := gid(d)

	thaw := disk.Freeze()
	answered := sendUnanswered(t, p, g, outgoing("on a frozen disk"))
	eventually(t, "the send waiting in the frozen disk", testdisk.InDiskSleep)
	if err := peertest.OnHungDisk(t, "the daemon's Close", d.Close, thaw); err != nil {
		t.Errorf("Close: %v", err)
	}
	must(t, <-served)
	inDoubt(t, "the send on the frozen disk", <-answered)
	stillLocked(t, cfg)

	thaw()
	restartsOnceClosed(t, cfg)
}

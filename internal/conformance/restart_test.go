//go:build linux

package conformance

import (
	"bytes"
	"context"
	"syscall"
	"testing"

	"github.com/huddle-chat/huddle/internal/testport"
)

// restartable is a `huddle up` that a test kills and starts again in place:
// the same key (HUDDLE_HOME), state directory and group daemon address.
type restartable struct {
	t        *testing.T
	home     string
	stateDir string
	addr     string // the group daemon's
	storage  string
	p        *proc
	daemon   server
	group    []byte // "general", from the registry's listing
}

func startRestartable(t *testing.T, storage string) *restartable {
	r := &restartable{t: t, home: t.TempDir(), stateDir: t.TempDir(), addr: testport.Cell(t), storage: storage}
	r.start()
	reg := serverFrom(t, r.p.waitLine(t, registryLine))
	s := &single{registry: reg, groups: make(map[string]groupEntry)}
	waitListed(t, s, "general")
	r.group = s.groups["general"].group
	return r
}

func (r *restartable) start() {
	r.p = startHuddle(r.t, "huddle up ("+r.storage+")", []string{"HUDDLE_HOME=" + r.home},
		"up", "--listen", "127.0.0.1:0", "--daemon-listen", r.addr, "--no-mdns", "--state-dir", r.stateDir,
		"--storage", r.storage, "--group", "general")
	r.daemon = serverFrom(r.t, r.p.waitLine(r.t, daemonLine))
	if r.daemon.addr != r.addr {
		r.t.Fatalf("the group daemon listens on %s, want %s", r.daemon.addr, r.addr)
	}
}

// restart kills the process (SIGKILL: it says nothing to its clients) and
// starts it again at its address.
func (r *restartable) restart() {
	if err := r.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	<-r.p.done
	key := r.daemon.fp
	r.start()
	if r.daemon.fp != key {
		r.t.Fatalf("restarted with key %s, want %s", r.daemon.fp, key)
	}
}

// TestRestartInPlace: a group daemon killed and started again at its
// address, with its key and state (§3 "Restarted in place", §8 "Epochs
// and cursors"). A call on a connection to the old process fails at
// once (a stateless reset the old connection recognises), and so does the
// watch waiting on it; a watch resumed from its cursor then goes on with
// no gap and no repeat from a daemon keeping its logs on disk, and gets
// epoch_mismatch, naming the new epoch, from one keeping them in memory.
func TestRestartInPlace(t *testing.T) {
	t.Parallel()
	for _, storage := range []string{"disk", "memory"} {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			testRestart(t, storage)
		})
	}
}

func testRestart(t *testing.T, storage string) {
	r := startRestartable(t, storage)
	g := r.group
	ctx := ctxT(t)
	p := newPeer(t)
	c := p.mustDial(t, r.daemon.addr, r.daemon.fp)
	j, err := c.join(ctx, g, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	msgs, acks := sendN(t, c, g, 3, "before")
	w, err := c.watch(ctx, query{group: g, hasAfter: true, epoch: j.epoch})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := w.messagesUntil(3); err != nil || len(got) != 3 {
		t.Fatalf("watch before the restart: %v, %v", got, err)
	}
	if in, err := c.info(ctx, g); err != nil || in.storage != storage {
		t.Fatalf("info: storage %q, %v; want %q", in.storage, err, storage)
	}

	r.restart()
	ctx = ctxT(t) // the restart took its own time: a fresh bound for what follows

	// The old connection: a request draws the new process's stateless
	// reset, which ends the connection, the watch on it included.
	if in, err := c.info(ctx, g); err == nil {
		t.Fatalf("info on a connection to the process killed: %+v; want the connection reset", in)
	} else if ctx.Err() != nil {
		t.Fatalf("info on a connection to the process killed: %v; want it reset at once, not the test's deadline", err)
	}
	select {
	case <-c.ended.Done():
	case <-ctx.Done():
		t.Fatal("the connection to the process killed did not end")
	}
	t.Logf("the old connection ended: %v", context.Cause(c.ended))
	if ev, err := w.next(); err == nil {
		t.Errorf("the watch on the reset connection: %+v; want it failed", ev)
	}

	c = p.mustDial(t, r.daemon.addr, r.daemon.fp)
	// Resume from the cursor, in the epoch the client knew.
	w, err = c.watch(ctx, query{group: g, after: 3, epoch: j.epoch})
	if storage == "memory" {
		pe := wantCode(t, "a watch resumed after a memory daemon's restart", err, codeEpochMismatch)
		if pe.epoch == 0 || pe.epoch == j.epoch {
			t.Fatalf("epoch_mismatch names epoch %d; want the new one, neither 0 nor the one asked (%d)", pe.epoch, j.epoch)
		}
		// The history is gone: restart from after = 0 in the new epoch
		// (joining again first: idempotent, whether or not the daemon kept
		// its member list).
		in, err := c.info(ctx, g)
		if err != nil || in.epoch != pe.epoch || in.first != 0 || in.last != 0 {
			t.Fatalf("info after the reset: %+v, %v; want epoch %d, an empty log", in, err, pe.epoch)
		}
		if _, err := c.join(ctx, g, "survivor"); err != nil {
			t.Fatal(err)
		}
		w, err = c.watch(ctx, query{group: g, hasAfter: true, epoch: pe.epoch})
		if err != nil || w.start != (start{epoch: pe.epoch, heartbeatMS: 5000}) {
			t.Fatalf("watch from 0 in the new epoch: %+v, %v", w, err)
		}
		sendN(t, c, g, 1, "after")
		if got, err := w.messagesUntil(1); err != nil || len(got) != 1 || got[0].seq != 1 || string(got[0].body) != "after 1" {
			t.Errorf("watch in the new epoch: %v, %v; want its message 1", got, err)
		}
		w.s.cancel()
		return
	}
	// On disk: the same epoch, its messages, and the membership.
	if err != nil {
		t.Fatalf("a watch resumed after a disk daemon's restart: %v", err)
	}
	if w.start != (start{epoch: j.epoch, first: 1, last: 3, heartbeatMS: 5000}) {
		t.Errorf("resumed start %+v; want epoch %d, 1..3", w.start, j.epoch)
	}
	got, _, err := c.fetch(ctx, query{group: g, hasAfter: true, epoch: j.epoch})
	if err != nil || len(got) != 3 {
		t.Fatalf("fetch after the restart: %v, %v", got, err)
	}
	for i, m := range got {
		if m.seq != uint64(i+1) || m.ts != acks[i].ts || !bytes.Equal(m.id, msgs[i].id) || m.from != p.fp || m.name != "survivor" {
			t.Errorf("message %d after the restart: %+v; want seq %d, ts %d, our ID, key and name", i+1, m, i+1, acks[i].ts)
		}
	}
	// A retry of a message stored before the restart is a duplicate.
	if s, err := c.send(ctx, g, msgs[2]); err != nil || s.acks[0] != (ack{seq: 3, ts: acks[2].ts, duplicate: true}) {
		t.Errorf("message 3 again after the restart: %+v, %v; want its first ack, duplicate", s, err)
	}
	_, live := sendN(t, c, g, 1, "after")
	got, err = w.messagesUntil(4)
	if err != nil || len(got) != 1 || got[0].seq != 4 || got[0].ts != live[0].ts || got[0].ts <= acks[2].ts {
		t.Errorf("the resumed watch: %v, %v; want message 4 alone, stamped after message 3", got, err)
	}
	w.s.cancel()
}

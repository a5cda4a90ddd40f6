//go:build linux

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/internal/testbin"
	"github.com/huddle-chat/huddle/internal/testdisk"
	"github.com/huddle-chat/huddle/wire"
)

// regexpCannotWrite matches the daemon's log line for a log it cannot
// write.
var regexpCannotWrite = regexp.MustCompile(`group log cannot be written`)

// privateDisk is a tmpfs mounted in a mount namespace of its own, held by
// a sleeping process: nothing is mounted on the machine's own namespace,
// and the mount goes with the holder, however the test ends.
type privateDisk struct {
	t      *testing.T
	dir    string
	holder *exec.Cmd
}

// newPrivateDisk mounts a tmpfs of size (as mount's size= says it) on a
// new directory, visible only to processes run through in.
func newPrivateDisk(t *testing.T, size string) *privateDisk {
	t.Helper()
	testdisk.RequireRoot(t)
	for _, prog := range []string{"unshare", "nsenter", "mount"} {
		if _, err := exec.LookPath(prog); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not on PATH (CI=true, so this is a failure, not a skip)", prog)
			}
			t.Skipf("this test needs %s", prog)
		}
	}
	d := &privateDisk{t: t, dir: t.TempDir()}
	d.holder = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount -t tmpfs -o size=%s,mode=0700 tmpfs %s && echo mounted && exec sleep 3600", size, d.dir))
	out, err := d.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.holder.Stderr = os.Stderr
	if err := testbin.Start(d.holder); err != nil { // gone with the test process
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { d.holder.Process.Kill(); d.holder.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "mounted\n" {
		t.Fatalf("mount a tmpfs in a mount namespace of its own: %q, %v", line, err)
	}
	return d
}

// in is the command prefix that runs a program in the disk's namespace.
func (d *privateDisk) in() []string {
	return []string{"nsenter", "--target", strconv.Itoa(d.holder.Process.Pid), "--mount", "--"}
}

// run runs a shell command in the disk's namespace and returns its output;
// failing is an error unless mayFail.
func (d *privateDisk) run(mayFail bool, script string) string {
	d.t.Helper()
	out, err := exec.Command(d.in()[0], append(d.in()[1:], "sh", "-c", script)...).CombinedOutput()
	if err != nil && !mayFail {
		d.t.Fatalf("%s: %v: %s", script, err, out)
	}
	return string(out)
}

// fill fills the disk; free removes what fill wrote.
func (d *privateDisk) fill() {
	d.t.Helper()
	out := d.run(true, "cat /dev/zero > "+d.dir+"/ballast")
	if !strings.Contains(out, "No space left") {
		d.t.Fatalf("filling the disk: %q", out)
	}
}

func (d *privateDisk) free() { d.t.Helper(); d.run(false, "rm "+d.dir+"/ballast") }

// storageRun is a group daemon on a private disk, and a user sending to
// it and checking what it holds against what was acknowledged.
type storageRun struct {
	t     *testing.T
	disk  *privateDisk
	args  []string
	p     *proc
	g     *client.Group
	ctx   context.Context
	acked []client.Ack
	sent  [][]byte
}

func (r *storageRun) start() {
	r.t.Helper()
	r.p = startWith(r.t, r.disk.in(), false, r.args...)
	r.p.line(r.t, listening)
}

// restart kills the daemon with SIGKILL and starts it again.
func (r *storageRun) restart() {
	r.t.Helper()
	r.p.kill(syscall.SIGKILL)
	r.start()
}

// send sends one message, which must be acknowledged.
func (r *storageRun) send(body string) {
	r.t.Helper()
	a, err := r.g.Send(r.ctx, []byte(body))
	if err != nil {
		r.t.Fatalf("send %q: %v", body, err)
	}
	r.acked, r.sent = append(r.acked, a), append(r.sent, []byte(body))
}

// refused checks that sends are refused at once with unavailable, their
// retry time given, and store nothing. A full disk may still take a few
// (the page a file ends in has room): sends are made until one is refused,
// and those acknowledged meanwhile must be held.
func (r *storageRun) refused(when string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, waitTimeout)
	defer cancel()
	body := strings.Repeat("x", 1000)
	var err error
	var start time.Time
	for taken := 0; ; taken++ {
		if taken == 100 {
			r.t.Fatalf("%s: %d sends stored, want them refused", when, taken)
		}
		start = time.Now()
		var a client.Ack
		if a, err = r.g.Send(ctx, []byte(body)); err != nil {
			break
		}
		r.acked, r.sent = append(r.acked, a), append(r.sent, []byte(body))
	}
	if !errors.Is(err, client.ErrUnavailable) {
		r.t.Fatalf("%s: send: %v, want unavailable", when, err)
	}
	if _, ok := client.RetryAfter(err); !ok {
		r.t.Errorf("%s: %v carries no retry time", when, err)
	}
	r.t.Logf("%s: a send refused in %v: %v", when, time.Since(start).Round(time.Millisecond), err)
	r.holds(when)
}

// holds checks that the group holds exactly what was acknowledged.
func (r *storageRun) holds(when string) {
	r.t.Helper()
	var got []client.Message
	if _, err := r.g.Fetch(r.ctx, client.Query{}, func(m client.Message) bool {
		got = append(got, m)
		return true
	}); err != nil {
		r.t.Fatalf("%s: fetch: %v", when, err)
	}
	if len(got) != len(r.acked) {
		r.t.Fatalf("%s: %d messages held, %d acknowledged", when, len(got), len(r.acked))
	}
	for i, m := range got {
		a := r.acked[i]
		if m.Seq != a.Seq || !m.Time.Equal(a.Time) || m.ID != a.ID || string(m.Body) != string(r.sent[i]) {
			r.t.Fatalf("%s: #%d held as %+v, acknowledged as %+v", when, m.Seq, m, a)
		}
	}
}

// newStorageRun starts a daemon with args (its state and data on the
// disk, or as args say), and a member of its group.
func newStorageRun(t *testing.T, disk *privateDisk, args ...string) *storageRun {
	t.Helper()
	regAddr, _, reg := startRegistry(t, "127.0.0.1:0", t.TempDir())
	t.Cleanup(func() { reg.kill(syscall.SIGTERM) })
	r := &storageRun{t: t, disk: disk}
	r.args = append([]string{"serve", "--no-mdns", "--registry", regAddr, "--listen", "127.0.0.1:0", "--group", "alpha"}, args...)
	r.start()
	// The next starts take the same address: the client's entry stays good.
	r.args[5] = r.p.line(t, listening)[1]
	u := newUser(t)
	var entry wire.GroupEntry
	eventually(t, "the group listed", func() bool { entry = u.listed(regAddr)["alpha"]; return entry.Fingerprint != wire.Fingerprint{} })
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	t.Cleanup(cancel)
	r.ctx = ctx
	g, err := u.cl.Group(entry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Join(ctx, "writer", nil); err != nil {
		t.Fatal(err)
	}
	r.g = g
	t.Cleanup(func() { r.p.kill(syscall.SIGTERM) })
	return r
}

// TestFullDiskLog runs a group daemon whose log is on a disk that fills
// up, under each fsync policy: sends are then refused at once as
// unavailable and store nothing, fetches go on, a SIGKILL and restart on
// the full disk finds exactly what was acknowledged, and once there is room
// again sends are stored, and survive another SIGKILL.
func TestFullDiskLog(t *testing.T) {
	for _, policy := range []string{"interval", "always"} {
		t.Run(policy, func(t *testing.T) {
			disk := newPrivateDisk(t, "2m")
			r := newStorageRun(t, disk, "--state-dir", disk.dir, "--fsync", policy)
			for i := range 20 {
				r.send(fmt.Sprint("before the disk filled ", i))
			}
			disk.fill()
			r.refused("the disk full")
			r.restart()
			r.refused("restarted on the full disk")
			disk.free()
			eventually(t, "a send stored once there is room", func() bool {
				a, err := r.g.Send(r.ctx, []byte("room again"))
				if err == nil {
					r.acked, r.sent = append(r.acked, a), append(r.sent, []byte("room again"))
				}
				return err == nil
			})
			r.send("and another")
			r.restart()
			r.holds("after a restart with room")
		})
	}
}

// TestReadOnlyLog starts a group daemon whose data directory is on a
// read-only file system (its state directory writable): it serves what it
// holds, refuses sends at once as unavailable, and once the file system is
// writable again stores sends, which survive a SIGKILL.
func TestReadOnlyLog(t *testing.T) {
	disk := newPrivateDisk(t, "4m")
	r := newStorageRun(t, disk, "--state-dir", t.TempDir(), "--data-dir", disk.dir)
	for i := range 10 {
		r.send(fmt.Sprint("before ", i))
	}
	r.p.kill(syscall.SIGKILL)
	disk.run(false, "mount -o remount,ro "+disk.dir)
	r.start()
	r.p.line(r.t, regexpCannotWrite)
	r.refused("the data directory read-only")
	disk.run(false, "mount -o remount,rw "+disk.dir)
	eventually(t, "a send stored once the disk is writable", func() bool {
		a, err := r.g.Send(r.ctx, []byte("writable again"))
		if err == nil {
			r.acked, r.sent = append(r.acked, a), append(r.sent, []byte("writable again"))
		}
		return err == nil
	})
	r.restart()
	r.holds("after a restart")
}

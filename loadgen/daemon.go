package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Daemon is a `huddle up` process started for a self-contained run: a
// registry and a group daemon on loopback, with mDNS off, in a state
// directory of its own. Its CPU and memory are the run's server figures.
type Daemon struct {
	// Registry is the registry's address, and Fingerprint its key.
	Registry    string
	Fingerprint wire.Fingerprint
	// PID is the process's ID.
	PID int
	// Pprof is where it serves net/http/pprof (HOST:PORT), when started
	// with pprof; empty otherwise.
	Pprof string

	exe   string
	args  []string // huddle up's arguments
	pprof bool
	logw  io.Writer
	cmd   *exec.Cmd
	dir   string
	done  chan struct{}
}

// daemonStartTimeout bounds how long a started daemon may take to listen.
const daemonStartTimeout = 20 * time.Second

// StartDaemon starts exe (the huddle binary) as
//
//	huddle up --no-mdns --listen 127.0.0.1:0 --state-dir DIR --group GROUP --log-level warn \
//	          --send-rate 0 --max-conns-per-addr 65536 [EXTRA...]
//
// with a fresh state directory, and returns once it listens. extra are
// more flags of huddle up (--storage, --fsync...). With pprof, it
// also serves net/http/pprof on a loopback port (--pprof 127.0.0.1:0),
// whose address is Daemon.Pprof, to profile it. Its log goes to logw.
// Every connection of a run comes from 127.0.0.1, and each member sends as
// fast as it can, so the per-address connection limit and the per-member
// send rate, which guard a daemon against abuse, are lifted; every other
// setting is the default: the environment's HUDDLE_* variables are not
// passed on. Stop stops it.
func StartDaemon(exe, group string, logw io.Writer, pprof bool, extra ...string) (*Daemon, error) {
	dir, err := os.MkdirTemp("", "huddle-bench-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{exe: exe, dir: dir, pprof: pprof, logw: logw,
		args: append([]string{"up", "--no-mdns", "--state-dir", dir, "--group", group, "--log-level", "warn",
			"--send-rate", "0", "--max-conns-per-addr", "65536"}, extra...)}
	if err := d.start("127.0.0.1:0", ""); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// start runs huddle up with its registry on listen and, if daemonListen is
// not empty, its group daemon there, and returns once it listens.
func (d *Daemon) start(listen, daemonListen string) error {
	args := append(slices.Clone(d.args), "--listen", listen)
	if daemonListen != "" {
		args = append(args, "--daemon-listen", daemonListen)
	}
	if d.pprof {
		args = append(args, "--pprof", "127.0.0.1:0")
	}
	cmd := exec.Command(d.exe, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUDDLE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stderr = d.logw
	cmd.SysProcAttr = daemonProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s up: %w", d.exe, err)
	}
	d.PID, d.cmd, d.done = cmd.Process.Pid, cmd, make(chan struct{})
	ready, done := make(chan error, 1), d.done
	go func() {
		ready <- d.readAnnouncement(out, d.pprof)
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(done)
	}()
	select {
	case err = <-ready:
	case <-time.After(daemonStartTimeout):
		err = fmt.Errorf("huddle up did not listen within %v", daemonStartTimeout)
	}
	if err != nil {
		d.kill()
		return err
	}
	return nil
}

// Kill kills the daemon with SIGKILL and waits for its process to end,
// as a crash would end it; Start starts it again.
func (d *Daemon) Kill() { d.kill() }

// Start starts a killed daemon again on the same state directory, its
// registry on registry and its group daemon on group (the addresses it
// had), as a service manager restarts a crashed daemon; it returns once
// the new one listens.
func (d *Daemon) Start(registry, group string) error {
	return d.start(registry, group)
}

// kill kills the process with SIGKILL and waits for it.
func (d *Daemon) kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// readAnnouncement reads what `huddle up` prints once listening: the
// registry's address and fingerprint, then the group daemon's lines, then
// a "try:" line, then with pprof a "pprof:" line with its URL.
func (d *Daemon) readAnnouncement(r io.Reader, pprof bool) error {
	sc := bufio.NewScanner(r)
	tried := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "huddle registry listening on "); ok {
			addr, fp, ok := strings.Cut(rest, ", fingerprint ")
			if !ok {
				return fmt.Errorf("huddle up said %q", line)
			}
			f, err := wire.ParseFingerprint(fp)
			if err != nil {
				return fmt.Errorf("huddle up said %q: %w", line, err)
			}
			d.Registry, d.Fingerprint = addr, f
		}
		if rest, ok := strings.CutPrefix(line, "pprof: "); ok {
			u, err := url.Parse(rest)
			if err != nil || u.Host == "" {
				return fmt.Errorf("huddle up said %q", line)
			}
			d.Pprof = u.Host
		}
		if strings.HasPrefix(line, "try:") {
			if d.Registry == "" {
				return errors.New("huddle up did not say where its registry listens")
			}
			tried = true
		}
		if tried && (!pprof || d.Pprof != "") {
			return nil
		}
	}
	return errors.New("huddle up exited before listening")
}

// Stop asks the daemon to shut down (SIGTERM), kills it if it has not
// within 10 s, and removes its state directory.
func (d *Daemon) Stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	os.RemoveAll(d.dir)
}

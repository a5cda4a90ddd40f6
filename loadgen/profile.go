package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// Profile files a Profiler writes into its Dir.
const (
	LoadCPUProfile    = "load.cpu.pprof"
	DaemonCPUProfile  = "daemon.cpu.pprof"
	DaemonHeapProfile = "daemon.heap.pprof"
)

// Profiler is a WindowObserver that profiles the measured window: the load
// generator's own CPU (runtime/pprof) into LoadCPUProfile and, when Daemon
// is set, the daemon's CPU over the window into DaemonCPUProfile and its
// heap at the window's end into DaemonHeapProfile, read from the daemon's
// net/http/pprof handlers (huddle's --pprof). A Profiler serves one run.
type Profiler struct {
	// Dir is the folder the profiles are written to. It must exist.
	Dir string
	// Daemon is the HOST:PORT where the daemon serves /debug/pprof/. Empty:
	// only the load is profiled.
	Daemon string

	http      *http.Client
	load      *os.File   // the load's CPU profile, while it is taken
	daemonCPU chan error // the outcome of fetching the daemon's CPU profile
	written   []string
	err       error
}

// daemonProfileGrace is how much longer than the window fetching the
// daemon's CPU profile may take.
const daemonProfileGrace = 30 * time.Second

// WindowOpened starts the load's CPU profile and asks the daemon for a CPU
// profile of d rounded up to whole seconds (the resolution of
// /debug/pprof/profile: give the run a whole number of seconds for the
// daemon's profile to end with the window). It returns once the request has
// been sent, so the daemon's profile starts within a round trip of the
// window.
func (p *Profiler) WindowOpened(ctx context.Context, d time.Duration) {
	// Closing the connection after each response leaves no idle connection,
	// and so no goroutine, behind.
	p.http = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if p.Daemon != "" {
		secs := max(int64((d+time.Second-1)/time.Second), 1)
		sent := make(chan struct{})
		var once sync.Once
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(sent) }) }}
		p.daemonCPU = make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+daemonProfileGrace)
			defer cancel()
			ctx = httptrace.WithClientTrace(ctx, trace)
			p.daemonCPU <- p.fetch(ctx, fmt.Sprintf("profile?seconds=%d", secs), DaemonCPUProfile)
		}()
		select {
		case <-sent:
		case err := <-p.daemonCPU:
			p.daemonCPU <- err // for WindowClosed
		}
	}
	f, err := os.Create(filepath.Join(p.Dir, LoadCPUProfile))
	if err != nil {
		p.fail(err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		p.fail(fmt.Errorf("profile the load: %w", err))
		return
	}
	p.load = f
}

// WindowClosed stops the load's CPU profile, waits for the daemon's, then
// takes the daemon's heap profile, while the load still runs.
func (p *Profiler) WindowClosed(ctx context.Context) {
	if p.load != nil {
		pprof.StopCPUProfile()
		p.note(LoadCPUProfile, p.load.Close())
		p.load = nil
	}
	if p.daemonCPU != nil {
		p.note(DaemonCPUProfile, <-p.daemonCPU)
		p.daemonCPU = nil
		ctx, cancel := context.WithTimeout(ctx, daemonProfileGrace)
		defer cancel()
		p.note(DaemonHeapProfile, p.fetch(ctx, "heap", DaemonHeapProfile))
	}
}

// Written returns the paths of the profiles written, in the order they
// were.
func (p *Profiler) Written() []string { return p.written }

// Err returns the first error met, or nil if every profile was written.
func (p *Profiler) Err() error { return p.err }

// note records the outcome of writing file.
func (p *Profiler) note(file string, err error) {
	if err != nil {
		p.fail(err)
		return
	}
	p.written = append(p.written, filepath.Join(p.Dir, file))
}

func (p *Profiler) fail(err error) {
	if err != nil && p.err == nil {
		p.err = err
	}
}

// fetch writes the daemon's /debug/pprof/NAME into file in Dir. It may run
// on a goroutine of its own: it reads only fields set before it starts, and
// writes none.
func (p *Profiler) fetch(ctx context.Context, name, file string) error {
	url := "http://" + p.Daemon + "/debug/pprof/" + name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("profile the daemon: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile the daemon: GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	path := filepath.Join(p.Dir, file)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err = errors.Join(err, f.Close()); err == nil && n == 0 {
		err = fmt.Errorf("GET %s: empty profile", url)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("profile the daemon: %w", err)
	}
	return nil
}

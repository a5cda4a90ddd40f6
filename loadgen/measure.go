package loadgen

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one run measured. Ops counts what the scenario calls an
// operation: a message sent (send, send-batched), a fetch of the last 1%
// (fetch), a message delivered to one watcher (fanout), a connection (idle).
type Result struct {
	Scenario string  `json:"scenario"`
	Conns    int     `json:"conns"`
	InFlight int     `json:"inflight"`
	Size     int     `json:"size"`
	Seconds  float64 `json:"duration_s"`

	Ops        int64   `json:"ops"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	MsgsPerSec float64 `json:"msgs_per_sec"` // messages sent or fetched per second
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`

	// Server figures are zero when the daemon's process is not known.
	ServerMeasured   bool    `json:"server_measured"`
	ServerCPUusPerOp float64 `json:"server_cpu_us_per_op"`
	ServerCPUCores   float64 `json:"server_cpu_cores"`
	ServerRSSBytes   int64   `json:"server_rss_bytes"`
	ClientCPUCores   float64 `json:"client_cpu_cores"`

	// ServerBytesPerConn is the idle scenario's daemon RSS growth per
	// connection.
	ServerBytesPerConn int64 `json:"server_bytes_per_conn,omitempty"`
	// Messages is the fetch scenario's messages per fetch, and fanout's
	// messages sent.
	Messages int64  `json:"messages,omitempty"`
	Note     string `json:"note,omitempty"`
}

// phase is the shared state of a run's workers: whether operations count
// now, whether to stop, and the errors seen; and whether an operation has
// ended (done or failed) at all, and inside the window: the warm-up lasts
// until one has, and the window until one has inside it, so that a run
// cannot measure nothing (a machine at load 31 stalled every send through
// a 0.3 s window).
type phase struct {
	measuring atomic.Bool
	stop      atomic.Bool
	errs      atomic.Int64
	mu        sync.Mutex
	firstErr  error

	flowing, counted    atomic.Bool
	flowOnce, countOnce sync.Once
	flowCh, countCh     chan struct{}
}

func newPhase() *phase {
	return &phase{flowCh: make(chan struct{}), countCh: make(chan struct{})}
}

// ended records that an operation ended; measuring is whether it was
// counted in the window (a worker reads ph.measuring once per operation
// and passes what it read).
func (p *phase) ended(measuring bool) {
	if !p.flowing.Load() {
		p.flowOnce.Do(func() { p.flowing.Store(true); close(p.flowCh) })
	}
	if measuring && !p.counted.Load() {
		p.countOnce.Do(func() { p.counted.Store(true); close(p.countCh) })
	}
}

func (p *phase) fail(err error) {
	if p.errs.Add(1) == 1 {
		p.mu.Lock()
		p.firstErr = err
		p.mu.Unlock()
	}
}

func (p *phase) first() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstErr == nil {
		return ""
	}
	return p.firstErr.Error()
}

// window is what happened while measuring.
type window struct {
	dur              time.Duration
	srvCPU, cliCPU   float64 // seconds used
	srvRSS           int64
	serverMeasured   bool
	srvCPU0, cliCPU0 float64
	t0               time.Time
}

// WindowObserver watches a run's measured window, e.g. to profile it
// (Profiler). Run calls WindowOpened as the window opens, after the warm-up
// (and for fetch, after the log is filled), and WindowClosed as it closes,
// both from one goroutine. The time they take is outside the window's
// figures, and the load keeps running, unmeasured, until WindowClosed
// returns. Errors are the observer's to keep.
type WindowObserver interface {
	// WindowOpened is called as the window opens; d is its length.
	WindowOpened(ctx context.Context, d time.Duration)
	// WindowClosed is called as the window closes.
	WindowClosed(ctx context.Context)
}

// start opens the measured window, after telling cfg.Window, so that
// what the observer does to start is not measured.
func (w *window) start(ctx context.Context, cfg Config) {
	if cfg.Window != nil {
		cfg.Window.WindowOpened(ctx, cfg.Duration)
	}
	w.t0 = time.Now()
	w.cliCPU0 = selfCPU()
	if pid := cfg.ServerPID; pid > 0 {
		if cpu, err := procCPU(pid); err == nil {
			w.srvCPU0, w.serverMeasured = cpu, true
		}
	}
}

// end closes the measured window, then tells cfg.Window.
func (w *window) end(ctx context.Context, cfg Config) {
	w.dur = time.Since(w.t0)
	w.cliCPU = selfCPU() - w.cliCPU0
	if pid := cfg.ServerPID; w.serverMeasured {
		cpu, err := procCPU(pid)
		rss, err2 := procRSS(pid)
		if err != nil || err2 != nil {
			w.serverMeasured = false
		} else {
			w.srvCPU, w.srvRSS = cpu-w.srvCPU0, rss
		}
	}
	if cfg.Window != nil {
		cfg.Window.WindowClosed(ctx)
	}
}

// measure runs the warm-up and the window while workers run, and stops
// them after it. The warm-up lasts cfg.Warmup and until an operation
// ended; the window cfg.Duration and until an operation ended inside it
// (see phase); either ends early if ctx does.
func measure(ctx context.Context, ph *phase, cfg Config) window {
	wait(ctx, time.After(cfg.Warmup))
	wait(ctx, ph.flowCh)
	var w window
	w.start(ctx, cfg)
	ph.measuring.Store(true)
	wait(ctx, time.After(cfg.Duration))
	wait(ctx, ph.countCh)
	ph.measuring.Store(false)
	w.end(ctx, cfg)
	ph.stop.Store(true)
	return w
}

// wait waits for ch, or until ctx ends.
func wait[T any](ctx context.Context, ch <-chan T) {
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// fill completes r from the latencies the workers recorded in the window.
func fill(r *Result, hists []*hist, w window, ph *phase) {
	var all hist
	for _, h := range hists {
		if h != nil {
			all.merge(h)
		}
	}
	r.Seconds = w.dur.Seconds()
	r.Ops = all.n
	r.OpsPerSec = float64(r.Ops) / r.Seconds
	r.P50us, r.P99us, r.P999us = all.quantile(0.50), all.quantile(0.99), all.quantile(0.999)
	r.Errors = ph.errs.Load()
	r.FirstError = ph.first()
	r.ClientCPUCores = w.cliCPU / r.Seconds
	if w.serverMeasured {
		r.ServerMeasured = true
		r.ServerCPUCores = w.srvCPU / r.Seconds
		if r.Ops > 0 {
			r.ServerCPUusPerOp = w.srvCPU * 1e6 / float64(r.Ops)
		}
		r.ServerRSSBytes = w.srvRSS
	}
}

// procCPU returns the user+system CPU seconds process pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return float64(ut+st) / 100, nil // USER_HZ is 100 on Linux
}

// procRSS returns process pid's resident set size in bytes.
func procRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS") }

// procStatus returns a size field of /proc/PID/status (VmRSS, RssAnon,
// RssFile...), in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

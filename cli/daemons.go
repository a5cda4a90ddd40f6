package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/groupd"
	"github.com/huddle-chat/huddle/daemon/registry"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// daemonFlags are the flags every daemon verb takes.
type daemonFlags struct {
	stateDir    string
	logFormat   choiceValue
	logLevel    choiceValue
	metricsAddr tcpAddr
	pprofAddr   tcpAddr

	// banner says where the daemon listens (see say); set by logger.
	banner func(text, msg string, args ...any)
}

func (f *daemonFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.stateDir, "state-dir", "", "where keys and group identities are kept (default $XDG_STATE_HOME/huddle)")
	f.logFormat = choiceValue{v: "text", choices: []string{"text", "json"}}
	f.logLevel = choiceValue{v: "info", choices: []string{"debug", "info", "warn", "error"}}
	fs.Var(&f.logFormat, "log-format", "log format: text or json (json: the start lines too)")
	fs.Var(&f.logLevel, "log-level", "least severe level logged: debug, info, warn, error")
	fs.Var(&f.metricsAddr, "metrics", "serve Prometheus /metrics, /healthz and /readyz over HTTP on this TCP address, e.g. 127.0.0.1:9373 (default: off)")
	fs.Var(&f.pprofAddr, "pprof", "serve Go's profiles (net/http/pprof, /debug/pprof/) over HTTP on this TCP address, for diagnosis only: bind it to loopback, e.g. 127.0.0.1:6060, as whoever reaches it can read the process's memory (default: off)")
}

// say prints one line of the daemon's start banner: text, for people, on
// stdout; or, under --log-format json, an info record msg with args, so
// that everything the daemon writes is JSON (systemd puts both streams in
// one journal).
func (f *daemonFlags) say(text, msg string, args ...any) { f.banner(text, msg, args...) }

// choiceValue is a flag taking one of a few words.
type choiceValue struct {
	v       string
	choices []string
}

func (c *choiceValue) Set(s string) error {
	for _, ch := range c.choices {
		if s == ch {
			c.v = s
			return nil
		}
	}
	return fmt.Errorf("want %s", strings.Join(c.choices, ", "))
}

func (c *choiceValue) String() string { return c.v }
func (c *choiceValue) Type() string   { return "string" }

// tcpAddr is a flag holding a TCP HOST:PORT to listen on; Set refuses
// anything else, so a mistake is a usage error from the command line or
// the environment alike.
type tcpAddr string

func (a *tcpAddr) Set(s string) error {
	if s != "" {
		_, port, err := net.SplitHostPort(s)
		if err != nil {
			return errors.New("want HOST:PORT, e.g. 127.0.0.1:6060")
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:6060: port %q is not a number from 0 to 65535", port)
		}
	}
	*a = tcpAddr(s)
	return nil
}

func (a *tcpAddr) String() string { return string(*a) }

// Type is what the help shows after the flag's name.
func (a *tcpAddr) Type() string { return "string" }

// metrics returns the daemon's collectors, or nil when --metrics is off.
func (f *daemonFlags) metrics() *metrics.Metrics {
	if f.metricsAddr == "" {
		return nil
	}
	return metrics.New(version())
}

// serveTelemetry starts the --metrics listener when m is not nil, and the
// --pprof listener when that flag is set. The function it returns stops
// them and waits for them.
func (f *daemonFlags) serveTelemetry(ctx context.Context, env Env, log *slog.Logger, m *metrics.Metrics, ready func() error) (func(), error) {
	stopMetrics, err := f.serveMetrics(ctx, env, log, m, ready)
	if err != nil {
		return nil, err
	}
	stopPprof, err := f.servePprof(ctx, env, log)
	if err != nil {
		stopMetrics()
		return nil, err
	}
	return func() { stopPprof(); stopMetrics() }, nil
}

// serveMetrics starts the --metrics listener when m is not nil. The
// function it returns stops the listener and waits for it.
func (f *daemonFlags) serveMetrics(ctx context.Context, env Env, log *slog.Logger, m *metrics.Metrics, ready func() error) (func(), error) {
	if m == nil {
		return func() {}, nil
	}
	srv, err := metrics.Listen(metrics.HTTPConfig{Addr: string(f.metricsAddr), Metrics: m, Ready: ready, Logger: log})
	if err != nil {
		return nil, err
	}
	f.say(fmt.Sprintf("  metrics: http://%s/metrics  health: /healthz  ready: /readyz", srv.Addr()),
		"metrics listening", "url", "http://"+srv.Addr().String()+"/metrics")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			log.Error("metrics listener failed", "err", err)
		}
	}, nil
}

// servePprof starts the --pprof listener when the flag is set: the
// handlers of net/http/pprof on a mux of their own, apart from --metrics,
// so exposing metrics never exposes profiles. The function it returns stops
// the listener and waits for it: a CPU profile or trace being taken ends
// early, and is sent as far as it got.
func (f *daemonFlags) servePprof(ctx context.Context, env Env, log *slog.Logger) (func(), error) {
	if f.pprofAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", string(f.pprofAddr))
	if err != nil {
		return nil, fmt.Errorf("pprof listener: %w", err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		log.Warn("the pprof listener is reachable beyond this machine: anyone who reaches it can read the process's memory and make it spend CPU", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and every named profile: heap, goroutine, allocs...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ctx, cancel := context.WithCancel(ctx)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// No WriteTimeout: a CPU profile or a trace takes the seconds the
		// request asks for. Requests end with ctx instead.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	f.say(fmt.Sprintf("  pprof: http://%s/debug/pprof/", ln.Addr()), "pprof listening", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() {
		cancel()
		sctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
		defer stop()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener failed", "err", err)
		}
	}, nil
}

// logger builds the daemon's logger on stderr, makes it the process's
// default logger, and sets where the start banner goes (see say).
func (f *daemonFlags) logger(env Env) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(f.logLevel.v)) // one of the choices
	opts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if f.logFormat.v == "json" {
		log = slog.New(slog.NewJSONHandler(env.Stderr, opts))
		f.banner = func(_, msg string, args ...any) { log.Info(msg, args...) }
	} else {
		log = slog.New(slog.NewTextHandler(env.Stderr, opts))
		f.banner = func(text, _ string, _ ...any) { fmt.Fprintln(env.Stdout, text) }
	}
	// quic-go writes its few messages (such as a UDP buffer it could not
	// enlarge) through the standard log package; as the process default,
	// this logger receives them in the daemon's format.
	slog.SetDefault(log.With("from", "go"))
	return log
}

// dir returns the state directory of one component.
func (f *daemonFlags) dir(env Env, component string) (string, error) {
	if f.stateDir != "" {
		return f.stateDir, nil
	}
	return stateDir(env, component)
}

// fromEnv fills every flag not given on the command line from the
// environment: --state-dir from HUDDLE_STATE_DIR, and so on. Repeatable
// flags take comma-separated lists.
func fromEnv(env Env, fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := "HUDDLE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := env.Getenv(name)
		if v == "" {
			return
		}
		values := []string{v}
		if strings.HasSuffix(f.Value.Type(), "Array") || strings.HasSuffix(f.Value.Type(), "Slice") {
			values = strings.Split(v, ",")
		}
		for _, one := range values {
			if e := fs.Set(f.Name, strings.TrimSpace(one)); e != nil {
				err = fmt.Errorf("%s=%q: %v", name, v, e)
				return
			}
		}
	})
	return err
}

// parseDaemon parses a daemon verb's flags, then the environment.
func parseDaemon(env Env, fs *pflag.FlagSet, args []string) (int, bool) {
	if code, ok := parse(fs, args); !ok {
		return code, false
	}
	if err := unknownSettings(env); err != nil {
		return usageErr(env, fs.Name(), "%v", err), false
	}
	if err := fromEnv(env, fs); err != nil {
		return usageErr(env, fs.Name(), "%v", err), false
	}
	if fs.NArg() > 0 {
		return usageErr(env, fs.Name(), "unexpected argument %q", fs.Arg(0)), false
	}
	return 0, true
}

func runRegistry(ctx context.Context, env Env, args []string) int {
	var df daemonFlags
	var cfg registry.Config
	fs := newFlags(env, "registry", "[--listen ADDR] [--lease DURATION] [--state-dir DIR] [--no-mdns] [--iface NAME]...",
		"Run a registry: the list of groups that group daemons register with and users list.\nEvery flag can also be set from the environment: --lease as HUDDLE_LEASE, and so on.",
		"  huddle registry --listen :7373 --state-dir /var/lib/huddle/registry")
	fs.Var(newUDPAddr(&cfg.Listen, registry.DefaultListen, true), "listen", "UDP address to listen on")
	fs.Var(newDuration(&cfg.LeaseTTL, registry.DefaultLeaseTTL, 3*time.Millisecond, false), "lease", "how long a group stays listed without a renewal")
	fs.Var(newCount(&cfg.MaxGroups, registry.DefaultMaxGroups, 1, math.MaxInt32), "max-groups", "most groups listed at once")
	fs.Var(newCount(&cfg.MaxGroupsPerKey, registry.DefaultMaxGroupsPerKey, 1, math.MaxInt32), "max-groups-per-key", "most groups one key (a group daemon) may have listed at once")
	fs.Var(newCount(&cfg.MaxGroupsPerAddr, registry.DefaultMaxGroupsPerAddr, 1, math.MaxInt32), "max-groups-per-addr", "most groups registered from one address (IPv4, or IPv6 /64) listed at once")
	var sf serverFlags
	sf.register(fs)
	mf := mdnsFlags{}
	mf.register(fs, "advertise the registry over mDNS")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	var err error
	if cfg.StateDir, err = df.dir(env, "registry"); err != nil {
		return fail(env, "registry", err)
	}
	cfg.MDNS, cfg.Interfaces, cfg.Version = !mf.off, mf.ifaces, version()
	sf.apply(&cfg.Server)
	if err := cfg.Validate(); err != nil {
		return usageErr(env, "registry", "%v", err)
	}
	cfg.Logger = df.logger(env)
	cfg.Metrics = df.metrics()
	r, err := registry.New(cfg)
	if err != nil {
		return fail(env, "registry", err)
	}
	if err := r.ListenContext(ctx); err != nil {
		r.Close()
		if stoppedStarting(ctx, err) {
			cfg.Logger.Info("registry stopped before it started")
			return ExitOK
		}
		return fail(env, "registry", listenErr(err, "--listen", cfg.Listen))
	}
	df.say(fmt.Sprintf("huddle registry listening on %s, fingerprint %s", r.Addr(), r.Fingerprint()),
		"registry listening", "addr", r.Addr().String(), "fingerprint", r.Fingerprint().String())
	tryLines(&df, "clients", r.Addr())
	limitMemory(cfg.Logger, cfg.Memory())
	stopTelemetry, err := df.serveTelemetry(ctx, env, cfg.Logger, cfg.Metrics, r.Readiness)
	if err != nil {
		r.Close()
		return fail(env, "registry", err)
	}
	defer stopTelemetry()
	return serveUntilDone(ctx, env, "registry", r.Serve)
}

// mdnsFlags select whether and where a daemon uses mDNS.
type mdnsFlags struct {
	off    bool
	ifaces []string
}

func (f *mdnsFlags) register(fs *pflag.FlagSet, what string) {
	fs.BoolVar(&f.off, "no-mdns", false, "do not "+what)
	fs.StringArrayVar(&f.ifaces, "iface", nil, "use only this interface for mDNS (repeatable; default: every up, multicast-capable one)")
}

// serverFlags are the connection and request limits of every daemon: they
// bound what one peer can make a daemon hold.
type serverFlags struct {
	maxStreams       int
	maxFrame         int64
	maxConnsPerAddr  int
	maxConns         int
	requestTimeout   time.Duration
	idleTimeout      time.Duration
	handshakeTimeout time.Duration
}

func (f *serverFlags) register(fs *pflag.FlagSet) {
	fs.Var(newCount(&f.maxStreams, server.DefaultMaxIncomingStreams, 1, math.MaxInt32), "max-streams", "operations one connection may have open at once")
	fs.Var(newSize(&f.maxFrame, wire.MaxFrameSize, server.MinMaxRequestBytes, wire.MaxFrameSize, false), "max-frame", "largest request frame read, e.g. 256KiB (at most 1MiB)")
	fs.Var(newCount(&f.maxConnsPerAddr, server.DefaultMaxConnsPerAddr, 1, math.MaxInt32), "max-conns-per-addr", "connections one source address (IPv4 address or IPv6 /64) may have open at once")
	fs.Var(newCount(&f.maxConns, server.DefaultMaxConns, 1, math.MaxInt32), "max-conns", "connections held at once in all")
	fs.Var(newDuration(&f.requestTimeout, server.DefaultRequestTimeout, time.Millisecond, false), "request-timeout", "time a client has to deliver a whole request")
	fs.Var(newDuration(&f.idleTimeout, server.DefaultIdleTimeout, time.Millisecond, false), "idle-timeout", "a connection silent this long is dropped")
	fs.Var(newDuration(&f.handshakeTimeout, server.DefaultHandshakeTimeout, time.Millisecond, false), "handshake-timeout", "time a connection's TLS handshake may take")
}

// apply fills a daemon config's server fields (each flag checked its value
// as it was parsed).
func (f *serverFlags) apply(c *server.Config) {
	c.MaxIncomingStreams, c.MaxRequestBytes, c.MaxConnsPerAddr, c.MaxConns = int64(f.maxStreams), int(f.maxFrame), f.maxConnsPerAddr, f.maxConns
	c.RequestTimeout, c.IdleTimeout, c.HandshakeTimeout = f.requestTimeout, f.idleTimeout, f.handshakeTimeout
}

// groupFlags are the flags of a group daemon, shared by serve and up.
type groupFlags struct {
	groups      []string
	secretFiles []string
	maxMsgs     int
	maxBytes    int64
	maxAge      time.Duration
	maxMessage  int64
	maxBatch    int
	maxMembers  int
	fetchPage   int
	sendRate    float64
	sendBurst   int
	newIdentity bool
	server      serverFlags
	storage     storageFlags
}

// storageFlags choose where a group daemon keeps its logs.
type storageFlags struct {
	kind     choiceValue // disk | memory
	dataDir  string
	fsync    choiceValue // interval | always
	interval time.Duration
}

func (f *storageFlags) register(fs *pflag.FlagSet) {
	f.kind = choiceValue{v: "disk", choices: []string{"disk", "memory"}}
	f.fsync = choiceValue{v: "interval", choices: []string{"interval", "always"}}
	fs.Var(&f.kind, "storage", "where messages are kept: disk (they survive restarts and crashes) or memory (a restart loses them)")
	fs.StringVar(&f.dataDir, "data-dir", "", "where messages are kept on disk (default: the --state-dir)")
	fs.Var(&f.fsync, "fsync", "when messages reach the disk: interval (acked once written to the OS: survives kill -9; synced every --fsync-interval) or always (acked once synced: survives power loss)")
	fs.Var(newDuration(&f.interval, store.DefaultFsyncInterval, time.Millisecond, false), "fsync-interval", "with --fsync interval: how often written messages are synced to the disk (an OS crash or power cut loses at most this much)")
}

// args returns the flags as huddle up takes them, for a daemon bench
// starts.
func (f *storageFlags) args() []string {
	return []string{"--storage", f.kind.v, "--fsync", f.fsync.v, "--fsync-interval", f.interval.String()}
}

func (f *storageFlags) apply(cfg *groupd.StorageConfig) {
	*cfg = groupd.StorageConfig{Memory: f.kind.v == "memory", DataDir: f.dataDir,
		Fsync: store.FsyncPolicy{Always: f.fsync.v == "always", Interval: f.interval}}
}

func (f *groupFlags) register(fs *pflag.FlagSet, defaultGroups []string) {
	fs.Var(newGroupNames(&f.groups, defaultGroups), "group", "host a group of this name (repeatable)")
	fs.StringArrayVar(&f.secretFiles, "secret-file", nil, "make a group private: NAME=FILE, or FILE when hosting one group (repeatable)")
	fs.Var(newCount(&f.maxMsgs, 0, 0, math.MaxInt), "max-msgs", "keep at most this many messages per group (default 1000000)")
	fs.Var(newSize(&f.maxBytes, 0, 1, 1<<50, true), "max-bytes", "keep at most this many bytes of messages per group, e.g. 64MiB (default 256MiB)")
	fs.Var(newDuration(&f.maxAge, 0, time.Millisecond, true), "max-age", "drop messages older than this (default: keep regardless of age)")
	fs.Var(newSize(&f.maxMessage, 0, 1, groupd.MaxMessageBytesLimit, true), "max-message", fmt.Sprintf("largest message accepted, e.g. 16KiB (default 64KiB, at most %s: a message and its envelope fit in one 1MiB frame)", sizeText(groupd.MaxMessageBytesLimit)))
	fs.Var(newCount(&f.maxBatch, groupd.DefaultMaxBatch, 1, wire.MaxBatch), "max-batch", fmt.Sprintf("most messages one send may carry (at most %d)", wire.MaxBatch))
	fs.Var(newCount(&f.maxMembers, groupd.DefaultMaxMembers, 1, groupd.DefaultMaxMembers), "max-members", fmt.Sprintf("most members a group may have (at most %d)", groupd.DefaultMaxMembers))
	fs.Var(newCount(&f.fetchPage, groupd.DefaultFetchPage, 1, math.MaxInt32), "fetch-page", "most messages one fetch returns")
	fs.Var(newRate(&f.sendRate, groupd.DefaultSendRate), "send-rate", "messages a second each member may send, sustained (0: unlimited)")
	fs.Var(newCount(&f.sendBurst, groupd.DefaultSendBurst, 1, math.MaxInt32), "send-burst", "messages each member may send at once after being idle (at least --max-batch)")
	fs.BoolVar(&f.newIdentity, "new-identity", false, "create a key in a --state-dir that holds members but lost its key.pem (the daemon's fingerprint changes)")
	f.storage.register(fs)
	f.server.register(fs)
}

// apply fills the group parts of cfg.
func (f *groupFlags) apply(env Env, cfg *groupd.Config) error {
	secrets := make(map[string][]byte)
	for _, sf := range f.secretFiles {
		name, file, ok := strings.Cut(sf, "=")
		if !ok {
			if len(f.groups) != 1 {
				return fmt.Errorf("--secret-file %q: with several groups, say which: NAME=FILE", sf)
			}
			name, file = f.groups[0], sf
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--secret-file %s: cannot read it (%v)", file, plainErr(err))
		}
		warnReadable(env, "--secret-file", file)
		if b = trimNewline(b); len(b) == 0 {
			return fmt.Errorf("--secret-file %s is empty", file)
		}
		secrets[name] = b
	}
	for _, g := range f.groups {
		cfg.Groups = append(cfg.Groups, groupd.Spec{Name: g, Secret: secrets[g]})
		delete(secrets, g)
	}
	for name := range secrets {
		return fmt.Errorf("--secret-file names group %q, which is not hosted (--group %s)", name, name)
	}
	// Each flag checked its own value as it was parsed; what is left are
	// the rules between flags.
	if f.sendRate > 0 && f.sendBurst < f.maxBatch {
		return fmt.Errorf("--send-burst %d is below --max-batch %d: a full batch could never be sent", f.sendBurst, f.maxBatch)
	}
	msg, overhead := f.maxMessage, int64(wire.MaxFrameSize-groupd.MaxMessageBytesLimit)
	if msg == 0 {
		msg = groupd.DefaultMaxMessageBytes
	}
	if msg > f.server.maxFrame-overhead {
		return fmt.Errorf("--max-message %s does not fit in a request of --max-frame %s with its envelope (%d bytes): raise --max-frame or lower --max-message",
			sizeText(msg), sizeText(f.server.maxFrame), overhead)
	}
	cfg.MaxBatch, cfg.MaxMembers, cfg.FetchPage, cfg.SendBurst = f.maxBatch, f.maxMembers, f.fetchPage, f.sendBurst
	cfg.NewIdentity = f.newIdentity
	cfg.SendRate = f.sendRate
	if f.sendRate == 0 {
		cfg.SendRate = -1 // the daemon's spelling of unlimited
	}
	f.server.apply(&cfg.Server)
	cfg.Retention.MaxMessages = f.maxMsgs
	cfg.Retention.MaxAge = f.maxAge
	cfg.Retention.MaxBytes = f.maxBytes
	cfg.MaxMessageBytes = int(f.maxMessage)
	f.storage.apply(&cfg.Storage)
	return nil
}

func runServe(ctx context.Context, env Env, args []string) int {
	var df daemonFlags
	var gf groupFlags
	var cfg groupd.Config
	var registries registryAddrsValue
	var registryPins []string
	var cf cellFlags
	fs := newFlags(env, "serve", "--group NAME [--group NAME]... [--listen ADDR] [--advertise ADDR] [--registry ADDR]...\n                    [--state-dir DIR] [--max-msgs N] [--max-bytes SIZE] [--max-age DURATION]",
		"Run a group daemon hosting the named groups and register them with every registry given (--registry)\nand every registry found over mDNS (unless --no-mdns), each on its own lease, so that no registry is\na single point of failure. A registry that moves or restarts is followed.\nEach group keeps its UUID, members and messages across restarts and crashes (in --state-dir, messages in\n--data-dir), unless --storage memory.\nEvery flag can also be set from the environment: --group as HUDDLE_GROUP (comma-separated), and so on.",
		"  huddle serve --group lobby --group builds --registry 192.168.1.20:7373,192.168.1.21:7373")
	fs.Var(newUDPAddr(&cfg.Listen, ":7374", true), "listen", "UDP address to listen on (port 0: any free port)")
	fs.StringArrayVar(&cfg.Advertise, "advertise", nil, "HOST:PORT to register, where users can reach this daemon (repeatable; default: the --listen address if it names one IP, else the address the registry sees the daemon come from)")
	fs.Var(&registries, "registry", "register with the registry at HOST[:PORT] (repeatable, or comma-separated; as well as those found over mDNS)")
	fs.StringSliceVar(&registryPins, "registry-fingerprint", nil, "trust only registries with this fingerprint (repeatable, or comma-separated; default: trust each given registry's first key and follow it if it changes, loudly)")
	gf.register(fs, nil)
	cf.register(fs)
	mf := mdnsFlags{}
	mf.register(fs, "look for registries over mDNS")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	if len(gf.groups) == 0 {
		return usageErr(env, "serve", "name at least one group with --group NAME")
	}
	cfg.Registries = registries
	if len(cfg.Registries) == 0 && mf.off {
		return usageErr(env, "serve", "with --no-mdns, give the registry's address with --registry HOST:PORT (or HUDDLE_REGISTRY)")
	}
	for _, a := range cfg.Advertise {
		if err := checkUDPAddr(a, false); err != nil {
			return usageErr(env, "serve", "--advertise %q: %v", a, err)
		}
		// What a registry checks of a registration's address
		// (wire.CheckAddr: its length, no blank in the host).
		if wire.CheckAddr(a) != nil {
			return usageErr(env, "serve", "--advertise %q: want HOST:PORT of at most %d bytes, like 192.168.1.20:7374", a, wire.MaxAddrBytes)
		}
	}
	cfg.Discover, cfg.Interfaces = !mf.off, mf.ifaces
	if err := gf.apply(env, &cfg); err != nil {
		return usageErr(env, "serve", "%v", err)
	}
	if err := cf.apply(&cfg); err != nil {
		return usageErr(env, "serve", "%v", err)
	}
	for _, pin := range registryPins {
		fp, err := wire.ParseFingerprint(strings.TrimSpace(pin))
		if err != nil {
			return usageErr(env, "serve", "--registry-fingerprint %q: want a fingerprint as 'huddle registry' prints it", pin)
		}
		cfg.RegistryFingerprints = append(cfg.RegistryFingerprints, fp)
	}
	var err error
	if cfg.StateDir, err = df.dir(env, "daemon"); err != nil {
		return fail(env, "serve", err)
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(env, "serve", "%v", err)
	}
	cfg.Logger = df.logger(env)
	cfg.Metrics = df.metrics()
	if testClock != nil {
		cfg.Now = testClock(cfg.StateDir)
	}
	d, err := groupd.New(cfg)
	if settingsErr(err) {
		return usageErr(env, "serve", "%v", err)
	}
	if err != nil {
		return fail(env, "serve", err)
	}
	if err := d.ListenContext(ctx); err != nil {
		d.Close()
		if stoppedStarting(ctx, err) {
			cfg.Logger.Info("group daemon stopped before it started")
			return ExitOK
		}
		if settingsErr(err) {
			return usageErr(env, "serve", "%v", err)
		}
		return fail(env, "serve", listenErr(err, "--listen", cfg.Listen))
	}
	if cfg.Cell == nil {
		announceGroups(&df, d)
	} else {
		joinAs := ""
		if cfg.Cell.Join {
			joinAs = d.Fingerprint().String() + "@ADDR"
			for _, p := range cfg.Cell.Peers {
				if p.Fingerprint == d.Fingerprint() {
					joinAs = p.String()
				}
			}
		}
		defer announceCell(ctx, &df, d, joinAs)()
	}
	limitMemory(cfg.Logger, cfg.Memory())
	stopTelemetry, err := df.serveTelemetry(ctx, env, cfg.Logger, cfg.Metrics, d.Readiness)
	if err != nil {
		d.Close()
		return fail(env, "serve", err)
	}
	defer stopTelemetry()
	return serveUntilDone(ctx, env, "serve", d.Serve)
}

func runUp(ctx context.Context, env Env, args []string) int {
	var df daemonFlags
	var gf groupFlags
	var rcfg registry.Config
	var gcfg groupd.Config
	fs := newFlags(env, "up", "[--listen ADDR] [--daemon-listen ADDR] [--group NAME]... [--state-dir DIR]",
		"Run a registry and a group daemon in one process: everything a LAN or a single machine needs.\nThe group daemon listens on the registry's port + 1 unless --daemon-listen says otherwise.\nFlags can also be set from the environment (HUDDLE_LISTEN...).",
		"  huddle up\n  huddle up --group lobby --group random --listen :7373")
	fs.Var(newUDPAddr(&rcfg.Listen, registry.DefaultListen, true), "listen", "UDP address of the registry")
	fs.Var(newUDPAddr(&gcfg.Listen, "", true), "daemon-listen", "UDP address of the group daemon (default: the registry's host and port + 1; port 0: any free port)")
	gf.register(fs, []string{"lobby"})
	mf := mdnsFlags{}
	mf.register(fs, "advertise the registry over mDNS, nor register the groups with other registries found there")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	if err := gf.apply(env, &gcfg); err != nil {
		return usageErr(env, "up", "%v", err)
	}
	root := df.stateDir
	if root == "" {
		var err error
		if root, err = stateDir(env, ""); err != nil {
			return fail(env, "up", err)
		}
	}
	rcfg.StateDir = filepath.Join(root, "registry")
	gcfg.StateDir = filepath.Join(root, "daemon")
	rcfg.MDNS, rcfg.Interfaces, rcfg.Version = !mf.off, mf.ifaces, version()
	// One process, one set of connection limits: the registry takes the
	// same ones as the group daemon beside it.
	gf.server.apply(&rcfg.Server)
	explicit := gcfg.Listen != ""
	if !explicit {
		host, port, _ := net.SplitHostPort(rcfg.Listen)
		gport := 0
		if p, _ := strconv.Atoi(port); p != 0 {
			if p == 65535 {
				return usageErr(env, "up", "--listen %s: the group daemon goes on the next port, and there is none; give --daemon-listen", rcfg.Listen)
			}
			gport = p + 1
		}
		gcfg.Listen = net.JoinHostPort(host, strconv.Itoa(gport))
	}
	gcfg.Registries = []string{"127.0.0.1:1"} // set once the registry listens; Validate needs one
	for _, err := range []error{rcfg.Validate(), gcfg.Validate()} {
		if err != nil {
			return usageErr(env, "up", "%v", err)
		}
	}
	log := df.logger(env)
	m := df.metrics()
	rcfg.Logger, rcfg.Metrics = log.With("component", "registry"), m
	gcfg.Logger, gcfg.Metrics = log.With("component", "groups"), m

	// Both bind their ports before either writes its state directory, and
	// both listen before either says so: a port in use fails the whole
	// command, not half of it, and leaves nothing behind.
	r, err := registry.New(rcfg)
	if err != nil {
		return fail(env, "up", err)
	}
	defer r.Close()
	if err := r.Bind(); err != nil {
		return fail(env, "up", listenErr(err, "--listen", rcfg.Listen))
	}
	// The group daemon registers with this registry, and with every other
	// one mDNS finds unless --no-mdns. Its own registry needs no pin: it
	// listens already, in this process.
	gcfg.Registries = []string{dialable(r.Addr())}
	gcfg.Discover, gcfg.Interfaces = !mf.off, mf.ifaces
	d, err := groupd.New(gcfg)
	if err != nil {
		return fail(env, "up", err)
	}
	defer d.Close()
	daemonListenErr := func(err error) int {
		if !explicit && errors.Is(err, syscall.EADDRINUSE) {
			return fail(env, "up", fmt.Errorf("the group daemon's port, the registry's + 1 (%s), is in use: stop what holds it, or give the group daemon another with --daemon-listen HOST:PORT (port 0: any free port)", gcfg.Listen))
		}
		return fail(env, "up", listenErr(err, "--daemon-listen", gcfg.Listen))
	}
	if err := d.Bind(); err != nil {
		return daemonListenErr(err)
	}
	if err := r.ListenContext(ctx); err != nil {
		if stoppedStarting(ctx, err) {
			log.Info("stopped before it started")
			return ExitOK
		}
		return fail(env, "up", listenErr(err, "--listen", rcfg.Listen))
	}
	if err := d.ListenContext(ctx); err != nil {
		if stoppedStarting(ctx, err) {
			log.Info("stopped before it started")
			return ExitOK
		}
		return daemonListenErr(err)
	}
	df.say(fmt.Sprintf("huddle registry listening on %s, fingerprint %s", r.Addr(), r.Fingerprint()),
		"registry listening", "addr", r.Addr().String(), "fingerprint", r.Fingerprint().String())
	announceGroups(&df, d)
	tryLines(&df, "try", r.Addr())
	rm, gm := rcfg.Memory(), gcfg.Memory()
	limitMemory(log, server.Memory{Base: gm.Base, Peers: rm.Peers + gm.Peers, PerAddr: rm.PerAddr + gm.PerAddr, Retained: gm.Retained})
	stopTelemetry, err := df.serveTelemetry(ctx, env, log, m, func() error {
		return errors.Join(r.Readiness(), d.Readiness())
	})
	if err != nil {
		return fail(env, "up", err)
	}
	defer stopTelemetry()

	// The group daemon stops first, so it can still deregister its groups
	// from the registry on the way out.
	rctx, stopRegistry := context.WithCancel(context.Background())
	defer stopRegistry()
	regDone := make(chan error, 1)
	go func() { regDone <- r.Serve(rctx) }()
	gerr := d.Serve(ctx)
	stopRegistry()
	if err := errors.Join(gerr, <-regDone); err != nil {
		return fail(env, "up", err)
	}
	return ExitOK
}

// limitMemory sets the process's soft memory limit (debug.SetMemoryLimit)
// to the most its daemons may use, so that the garbage a burst leaves is
// collected before the process grows past what SECURITY.md promises;
// GOMEMLIMIT, if set, wins.
func limitMemory(log *slog.Logger, m server.Memory) {
	if os.Getenv("GOMEMLIMIT") != "" {
		log.Info("memory limit from GOMEMLIMIT", "mib", debug.SetMemoryLimit(-1)>>20)
		return
	}
	debug.SetMemoryLimit(m.Total())
	log.Info("memory limit", "mib", m.Total()>>20, "peers_mib", m.Peers>>20, "per_address_mib", m.PerAddr>>20, "logs_mib", m.Retained>>20)
}

// announceGroups says, once listening, where a group daemon is and what it
// hosts, in lines a person can paste into a client.
func announceGroups(df *daemonFlags, d *groupd.Daemon) {
	df.say(fmt.Sprintf("huddle group daemon listening on %s, fingerprint %s", d.Addr(), d.Fingerprint()),
		"group daemon listening", "addr", d.Addr().String(), "fingerprint", d.Fingerprint().String())
	sayGroups(df, d)
}

// sayGroups prints the groups d hosts, one line each, for people.
// Under --log-format json it writes nothing: the daemon's own "hosting
// group" record (group, uuid, epoch, private, members) says each once, and
// a second record of the same name with other keys made two of each.
func sayGroups(df *daemonFlags, d *groupd.Daemon) {
	if df.logFormat.v == "json" {
		return
	}
	for _, g := range d.Groups() {
		private := ""
		if g.Private {
			private = "  (private)"
		}
		df.say(fmt.Sprintf("  group %s  %s%s", g.Name, g.ID, private), "hosting group")
	}
}

// stoppedStarting says whether err, a daemon's ListenContext's, is the
// daemon closed because ctx ended (SIGTERM) while it loaded its state
// directory: the daemon stopped as asked (exit 0), on a disk that does not
// answer within lifecycle's bound (3 s), where it waited for SIGKILL until
// session 20.
func stoppedStarting(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, server.ErrClosed)
}

// serveUntilDone runs serve until ctx ends (SIGINT or SIGTERM: main's
// context), which shuts the daemon down gracefully; exit code 0 then.
// A mistake in its settings that shows only as it starts (a --cell-peer
// naming another key than the daemon at its address presents) is a usage
// error, exit 2, as settingsErr says.
func serveUntilDone(ctx context.Context, env Env, verb string, serve func(context.Context) error) int {
	if err := serve(ctx); settingsErr(err) {
		return usageErr(env, verb, "%v", err)
	} else if err != nil {
		return fail(env, verb, err)
	}
	return ExitOK
}

// tryLines says how a client reaches the registry listening at a: from this
// machine, and, when it listens on every address, from the LAN too (the
// address of the first interface that is up and not loopback).
func tryLines(df *daemonFlags, label string, a net.Addr) {
	local := dialable(a)
	df.say(fmt.Sprintf("  %s: huddle groups --registry %s", label, local), "clients", "command", "huddle groups --registry "+local)
	if lan := lanAddr(a); lan != "" {
		df.say(fmt.Sprintf("  from the LAN: huddle groups --registry %s", lan), "clients from the LAN", "command", "huddle groups --registry "+lan)
	}
}

// lanAddr returns an address of this machine on its LAN with a's port, when
// a listens on every address (the unspecified address), or "".
func lanAddr(a net.Addr) string {
	ua, ok := a.(*net.UDPAddr)
	if !ok || ua.IP != nil && !ua.IP.IsUnspecified() {
		return ""
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return ""
	}
	var v6 string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			hp := net.JoinHostPort(ipn.IP.String(), strconv.Itoa(ua.Port))
			if ipn.IP.To4() != nil {
				return hp
			}
			if v6 == "" {
				v6 = hp
			}
		}
	}
	return v6
}

// dialable turns a listening address into one a client on this machine can
// dial: the unspecified address becomes loopback.
func dialable(a net.Addr) string {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return a.String()
	}
	ip := ua.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ua.Port))
}

// parseSize reads a byte count: 1048576, 64KiB, 256MiB, 1GiB (also KB, MB,
// GB as powers of 1000, and K, M, G as powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("cannot read size %q: give bytes, or a number with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// settingsErr reports whether err is a mistake in a daemon's settings
// that shows only once it starts (a --cell-peer list checked against the
// key in its state dir): a usage error, exit 2, which a restart does not
// fix (systemd's units do not restart on it).
func settingsErr(err error) bool {
	return errors.Is(err, groupd.ErrInvalidConfig) || errors.Is(err, cell.ErrInvalidConfig)
}

// listenErr says why a daemon (or huddle web) could not listen at addr
// (given by flag) in words, when the socket was the problem: a port in
// use is the usual case. Other errors (the state directory's) pass
// through.
func listenErr(err error, flag, addr string) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s %s: the address is in use (another huddle, or another program, listens there); stop it or choose another address", flag, addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s %s: no interface of this machine has that address", flag, addr)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: not allowed to listen there (ports below 1024 need privileges)", flag, addr)
	}
	return err
}

// warnReadable warns when a secret file can be read by other users: the
// secret is only as private as the file.
func warnReadable(env Env, flag, file string) {
	if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(env.Stderr, "huddle: warning: %s %s can be read by other users (mode %v); run chmod 600 %s\n",
			flag, file, st.Mode().Perm(), file)
	}
}

// unknownSettings refuses HUDDLE_* variables that no huddle command reads,
// such as HUDDLE_GROUPS for HUDDLE_GROUP: ignored, they would leave a daemon
// running with defaults its operator did not mean.
func unknownSettings(env Env) error {
	k, near := unknownSetting(env)
	if k == "" {
		return nil
	}
	msg := fmt.Sprintf("%s is not a huddle setting", k)
	if near != "" {
		msg += fmt.Sprintf(": did you mean %s?", near)
	}
	return errors.New(msg + " (HUDDLE_<FLAG> sets a daemon's --flag; see --help)")
}

// unknownSetting returns the first HUDDLE_* variable of env that no huddle
// command reads, and the known one nearest to it if one is close; "" if
// there is none.
func unknownSetting(env Env) (k, near string) {
	if env.Environ == nil {
		return "", ""
	}
	var known map[string]bool
	for _, kv := range env.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "HUDDLE_") || k == "HUDDLE_HOME" || k == "HUDDLE_REGISTRY" {
			continue
		}
		if known == nil {
			known = knownSettings() // each daemon verb's --help: only when needed
		}
		if !known[k] {
			return k, nearest(k, known)
		}
	}
	return "", ""
}

// knownSettings is every variable huddle reads: HUDDLE_HOME,
// HUDDLE_REGISTRY, and HUDDLE_<FLAG> for every flag of every daemon verb
// (an environment file may hold one verb's settings beside another's).
// The flags are read from each verb's --help, so the list cannot drift
// from the flags.
func knownSettings() map[string]bool {
	known := map[string]bool{"HUDDLE_HOME": true, "HUDDLE_REGISTRY": true}
	for _, run := range []func(context.Context, Env, []string) int{runUp, runRegistry, runServe} {
		var help strings.Builder
		run(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &help, Stderr: io.Discard, Getenv: func(string) string { return "" }}, []string{"--help"})
		for _, m := range flagNameRE.FindAllStringSubmatch(help.String(), -1) {
			known["HUDDLE_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
		}
	}
	return known
}

// flagNameRE finds the flags in a verb's usage text.
var flagNameRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)

// nearest returns the known name closest to k, if it is close (an edit or
// two away).
func nearest(k string, known map[string]bool) string {
	best, bestD := "", 3
	for name := range known {
		if d := editDistance(k, name); d < bestD || d == bestD && name < best {
			best, bestD = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in runes
// (group names are anyone's text; variable names are ASCII).
func editDistance(sa, sb string) int {
	a, b := []rune(sa), []rune(sb)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

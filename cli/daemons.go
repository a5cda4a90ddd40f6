package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/daemon"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/wire"
)

// daemonFlags are the flags every daemon verb takes.
type daemonFlags struct {
	stateDir    string
	logFormat   string
	logLevel    string
	metricsAddr string
	pprofAddr   tcpAddr
}

func (f *daemonFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.stateDir, "state-dir", "", "where keys and group identities are kept (default $XDG_STATE_HOME/huddle)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "least severe level logged: debug, info, warn, error")
	fs.StringVar(&f.metricsAddr, "metrics", "", "serve Prometheus /metrics, /healthz and /readyz over HTTP on this TCP address, e.g. 127.0.0.1:9373 (default: off)")
	fs.Var(&f.pprofAddr, "pprof", "serve Go's profiles (net/http/pprof, /debug/pprof/) over HTTP on this TCP address, for diagnosis only: bind it to loopback, e.g. 127.0.0.1:6060, as whoever reaches it can read the process's memory (default: off)")
}

// tcpAddr is a flag holding a TCP HOST:PORT to listen on; Set refuses
// anything else, so a mistake is a usage error from the command line or
// the environment alike.
type tcpAddr string

func (a *tcpAddr) Set(s string) error {
	if s != "" {
		_, port, err := net.SplitHostPort(s)
		if err != nil {
			return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:6060: %v", err)
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:6060: %v", err)
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
	srv, err := metrics.Listen(metrics.ServerConfig{Addr: f.metricsAddr, Metrics: m, Ready: ready, Logger: log})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(env.Stdout, "  metrics: http://%s/metrics  health: /healthz  ready: /readyz\n", srv.Addr())
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
	fmt.Fprintf(env.Stdout, "  pprof: http://%s/debug/pprof/\n", ln.Addr())
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

// logger builds the daemon's logger on stderr and makes it the process's
// default logger.
func (f *daemonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch f.logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		log = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
	}
	// quic-go writes its few messages (such as a UDP buffer it could not
	// enlarge) through the standard log package; as the process default,
	// this logger receives them in the daemon's format.
	slog.SetDefault(log.With("from", "go"))
	return log, nil
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
	var cfg daemon.RegistryConfig
	fs := newFlags(env, "registry", "[--listen ADDR] [--lease DURATION] [--state-dir DIR] [--no-mdns] [--iface NAME]...",
		"Run a registry: the list of groups that group daemons register with and users list.\nEvery flag can also be set from the environment: --lease as HUDDLE_LEASE, and so on.",
		"  huddle registry --listen :7373 --state-dir /var/lib/huddle/registry")
	fs.StringVar(&cfg.Listen, "listen", daemon.DefaultRegistryListen, "UDP address to listen on")
	fs.DurationVar(&cfg.LeaseTTL, "lease", daemon.DefaultLeaseTTL, "how long a group stays listed without a renewal")
	fs.IntVar(&cfg.MaxGroups, "max-groups", daemon.DefaultMaxGroups, "most groups listed at once")
	var sf serverFlags
	sf.register(fs)
	mf := mdnsFlags{}
	mf.register(fs, "advertise the registry over mDNS")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	log, err := df.logger(env.Stderr)
	if err != nil {
		return usageErr(env, "registry", "%v", err)
	}
	if cfg.StateDir, err = df.dir(env, "registry"); err != nil {
		return fail(env, "registry", err)
	}
	cfg.Logger = log
	cfg.Metrics = df.metrics()
	cfg.MDNS, cfg.Interfaces, cfg.Version = !mf.off, mf.ifaces, version()
	if err := sf.apply(&cfg.ServerConfig); err != nil {
		return usageErr(env, "registry", "%v", err)
	}
	r, err := daemon.NewRegistry(cfg)
	if err != nil {
		return fail(env, "registry", err)
	}
	if err := r.Listen(); err != nil {
		r.Close()
		return fail(env, "registry", err)
	}
	fmt.Fprintf(env.Stdout, "huddle registry listening on %s, fingerprint %s\n  clients: huddle groups --registry %s\n",
		r.Addr(), r.Fingerprint(), dialable(r.Addr()))
	stopTelemetry, err := df.serveTelemetry(ctx, env, log, cfg.Metrics, r.Readiness)
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
	maxStreams       int64
	maxFrame         string
	maxConnsPerAddr  int
	maxConns         int
	requestTimeout   time.Duration
	idleTimeout      time.Duration
	handshakeTimeout time.Duration
}

func (f *serverFlags) register(fs *pflag.FlagSet) {
	fs.Int64Var(&f.maxStreams, "max-streams", daemon.DefaultMaxIncomingStreams, "operations one connection may have open at once")
	fs.StringVar(&f.maxFrame, "max-frame", "1MiB", "largest request frame read, e.g. 256KiB (at most 1MiB)")
	fs.IntVar(&f.maxConnsPerAddr, "max-conns-per-addr", daemon.DefaultMaxConnsPerAddr, "connections one source address (IPv4 address or IPv6 /64) may have open at once")
	fs.IntVar(&f.maxConns, "max-conns", daemon.DefaultMaxConns, "connections held at once in all")
	fs.DurationVar(&f.requestTimeout, "request-timeout", daemon.DefaultRequestTimeout, "time a client has to deliver a whole request")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", daemon.DefaultIdleTimeout, "a connection silent this long is dropped")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", daemon.DefaultHandshakeTimeout, "time a connection's TLS handshake may take")
}

// apply fills a daemon config's server fields.
func (f *serverFlags) apply(c *daemon.ServerConfig) error {
	n, err := parseSize(f.maxFrame)
	if err != nil {
		return fmt.Errorf("--max-frame: %w", err)
	}
	if n < daemon.MinMaxRequestBytes || n > wire.MaxFrameSize {
		return fmt.Errorf("--max-frame %s: want %d bytes to 1MiB", f.maxFrame, daemon.MinMaxRequestBytes)
	}
	for _, v := range []struct {
		name string
		v    int64
	}{{"--max-streams", f.maxStreams}, {"--max-conns-per-addr", int64(f.maxConnsPerAddr)}, {"--max-conns", int64(f.maxConns)}} {
		if v.v < 1 {
			return fmt.Errorf("%s %d: want at least 1", v.name, v.v)
		}
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"--request-timeout", f.requestTimeout}, {"--idle-timeout", f.idleTimeout}, {"--handshake-timeout", f.handshakeTimeout}} {
		if v.d <= 0 {
			return fmt.Errorf("%s %v: want a positive duration", v.name, v.d)
		}
	}
	c.MaxIncomingStreams, c.MaxRequestBytes, c.MaxConnsPerAddr, c.MaxConns = f.maxStreams, int(n), f.maxConnsPerAddr, f.maxConns
	c.RequestTimeout, c.IdleTimeout, c.HandshakeTimeout = f.requestTimeout, f.idleTimeout, f.handshakeTimeout
	return nil
}

// groupFlags are the flags of a group daemon, shared by serve and up.
type groupFlags struct {
	groups      []string
	secretFiles []string
	maxMsgs     int
	maxBytes    string
	maxAge      time.Duration
	maxMessage  string
	maxBatch    int
	maxMembers  int
	fetchPage   int
	sendRate    float64
	sendBurst   int
	newIdentity bool
	server      serverFlags
}

func (f *groupFlags) register(fs *pflag.FlagSet, defaultGroups []string) {
	fs.StringArrayVar(&f.groups, "group", defaultGroups, "host a group of this name (repeatable)")
	fs.StringArrayVar(&f.secretFiles, "secret-file", nil, "make a group private: NAME=FILE, or FILE when hosting one group (repeatable)")
	fs.IntVar(&f.maxMsgs, "max-msgs", 0, "keep at most this many messages per group (default 1000000)")
	fs.StringVar(&f.maxBytes, "max-bytes", "", "keep at most this many bytes of messages per group, e.g. 64MiB (default 256MiB)")
	fs.DurationVar(&f.maxAge, "max-age", 0, "drop messages older than this (default: keep regardless of age)")
	fs.StringVar(&f.maxMessage, "max-message", "", "largest message accepted, e.g. 16KiB (default 64KiB)")
	fs.IntVar(&f.maxBatch, "max-batch", daemon.DefaultMaxBatch, fmt.Sprintf("most messages one send may carry (at most %d)", wire.MaxBatch))
	fs.IntVar(&f.maxMembers, "max-members", daemon.DefaultMaxMembers, fmt.Sprintf("most members a group may have (at most %d)", daemon.DefaultMaxMembers))
	fs.IntVar(&f.fetchPage, "fetch-page", daemon.DefaultFetchPage, "most messages one fetch returns")
	fs.Float64Var(&f.sendRate, "send-rate", daemon.DefaultSendRate, "messages a second each member may send, sustained (0: unlimited)")
	fs.IntVar(&f.sendBurst, "send-burst", daemon.DefaultSendBurst, "messages each member may send at once after being idle (at least --max-batch)")
	fs.BoolVar(&f.newIdentity, "new-identity", false, "create a key in a --state-dir that holds groups but lost its key.pem (the daemon's fingerprint changes)")
	f.server.register(fs)
}

// apply fills the group parts of cfg.
func (f *groupFlags) apply(cfg *daemon.GroupConfig) error {
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
			return fmt.Errorf("--secret-file: %w", err)
		}
		if b = trimNewline(b); len(b) == 0 {
			return fmt.Errorf("--secret-file %s is empty", file)
		}
		secrets[name] = b
	}
	for _, g := range f.groups {
		cfg.Groups = append(cfg.Groups, daemon.GroupSpec{Name: g, Secret: secrets[g]})
		delete(secrets, g)
	}
	for name := range secrets {
		return fmt.Errorf("--secret-file names group %q, which is not hosted (--group %s)", name, name)
	}
	for _, v := range []struct {
		name string
		v    int
	}{{"--max-batch", f.maxBatch}, {"--max-members", f.maxMembers}, {"--fetch-page", f.fetchPage}, {"--send-burst", f.sendBurst}} {
		if v.v < 1 {
			return fmt.Errorf("%s %d: want at least 1", v.name, v.v)
		}
	}
	if f.sendRate < 0 {
		return fmt.Errorf("--send-rate %g: want 0 (unlimited) or more", f.sendRate)
	}
	cfg.MaxBatch, cfg.MaxMembers, cfg.FetchPage, cfg.SendBurst = f.maxBatch, f.maxMembers, f.fetchPage, f.sendBurst
	cfg.NewIdentity = f.newIdentity
	cfg.SendRate = f.sendRate
	if f.sendRate == 0 {
		cfg.SendRate = -1 // the daemon's spelling of unlimited
	}
	if err := f.server.apply(&cfg.ServerConfig); err != nil {
		return err
	}
	cfg.Retention.MaxMessages = f.maxMsgs
	cfg.Retention.MaxAge = f.maxAge
	if f.maxBytes != "" {
		n, err := parseSize(f.maxBytes)
		if err != nil {
			return fmt.Errorf("--max-bytes: %w", err)
		}
		cfg.Retention.MaxBytes = n
	}
	if f.maxMessage != "" {
		n, err := parseSize(f.maxMessage)
		if err != nil {
			return fmt.Errorf("--max-message: %w", err)
		}
		cfg.MaxMessageBytes = int(min(n, int64(daemon.MaxMessageBytesLimit)+1))
	}
	return nil
}

func runServe(ctx context.Context, env Env, args []string) int {
	var df daemonFlags
	var gf groupFlags
	var cfg daemon.GroupConfig
	var registryPin string
	fs := newFlags(env, "serve", "--group NAME [--group NAME]... [--listen ADDR] [--advertise ADDR] [--registry ADDR]\n                    [--state-dir DIR] [--max-msgs N] [--max-bytes SIZE] [--max-age DURATION]",
		"Run a group daemon hosting the named groups and register them with the registry (found over mDNS,\nand followed when it moves, unless --registry names it).\nEach group keeps its UUID across restarts (in --state-dir); members persist, messages are kept in memory.\nEvery flag can also be set from the environment: --group as HUDDLE_GROUP (comma-separated), and so on.",
		"  huddle serve --group lobby --group builds --registry 192.168.1.20:7373")
	fs.StringVar(&cfg.Listen, "listen", ":7374", "UDP address to listen on (port 0: any free port)")
	fs.StringArrayVar(&cfg.Advertise, "advertise", nil, "HOST:PORT to register, where users can reach this daemon (repeatable; default: the address the registry sees)")
	fs.StringVar(&cfg.Registry, "registry", "", "registry address HOST[:PORT] (default: find it over mDNS)")
	fs.StringVar(&registryPin, "registry-fingerprint", "", "the registry's fingerprint, to pin it (default: trust the key it presents)")
	gf.register(fs, nil)
	mf := mdnsFlags{}
	mf.register(fs, "find the registry over mDNS when --registry is not given")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	if len(gf.groups) == 0 {
		return usageErr(env, "serve", "name at least one group with --group NAME")
	}
	if cfg.Registry == "" && mf.off {
		return usageErr(env, "serve", "with --no-mdns, give the registry's address with --registry HOST:PORT (or HUDDLE_REGISTRY)")
	}
	cfg.Discover, cfg.Interfaces = cfg.Registry == "", mf.ifaces
	if err := gf.apply(&cfg); err != nil {
		return usageErr(env, "serve", "%v", err)
	}
	if registryPin != "" {
		fp, err := wire.ParseFingerprint(registryPin)
		if err != nil {
			return usageErr(env, "serve", "--registry-fingerprint: %v", err)
		}
		cfg.RegistryFingerprint = fp
	}
	log, err := df.logger(env.Stderr)
	if err != nil {
		return usageErr(env, "serve", "%v", err)
	}
	if cfg.StateDir, err = df.dir(env, "daemon"); err != nil {
		return fail(env, "serve", err)
	}
	cfg.Logger = log
	cfg.Metrics = df.metrics()
	d, err := daemon.NewGroupDaemon(cfg)
	if err != nil {
		return fail(env, "serve", err)
	}
	if err := d.Listen(); err != nil {
		d.Close()
		return fail(env, "serve", err)
	}
	announceGroups(env, d)
	stopTelemetry, err := df.serveTelemetry(ctx, env, log, cfg.Metrics, d.Readiness)
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
	var rcfg daemon.RegistryConfig
	fs := newFlags(env, "up", "[--listen ADDR] [--group NAME]... [--state-dir DIR]",
		"Run a registry and a group daemon in one process: everything a LAN or a single machine needs.\nThe group daemon listens on the registry's port + 1. Flags can also be set from the environment (HUDDLE_LISTEN...).",
		"  huddle up\n  huddle up --group lobby --group random --listen :7373")
	fs.StringVar(&rcfg.Listen, "listen", daemon.DefaultRegistryListen, "UDP address of the registry")
	gf.register(fs, []string{"lobby"})
	mf := mdnsFlags{}
	mf.register(fs, "advertise the registry over mDNS")
	df.register(fs)
	if code, ok := parseDaemon(env, fs, args); !ok {
		return code
	}
	var gcfg daemon.GroupConfig
	if err := gf.apply(&gcfg); err != nil {
		return usageErr(env, "up", "%v", err)
	}
	log, err := df.logger(env.Stderr)
	if err != nil {
		return usageErr(env, "up", "%v", err)
	}
	root := df.stateDir
	if root == "" {
		if root, err = stateDir(env, ""); err != nil {
			return fail(env, "up", err)
		}
	}
	rcfg.StateDir = root + "/registry"
	m := df.metrics()
	rcfg.Logger, rcfg.Metrics = log.With("component", "registry"), m
	rcfg.MDNS, rcfg.Interfaces, rcfg.Version = !mf.off, mf.ifaces, version()
	// One process, one set of connection limits: the registry takes the
	// same ones as the group daemon beside it.
	if err := gf.server.apply(&rcfg.ServerConfig); err != nil {
		return usageErr(env, "up", "%v", err)
	}
	r, err := daemon.NewRegistry(rcfg)
	if err != nil {
		return fail(env, "up", err)
	}
	defer r.Close()
	if err := r.Listen(); err != nil {
		return fail(env, "up", err)
	}
	fmt.Fprintf(env.Stdout, "huddle registry listening on %s, fingerprint %s\n", r.Addr(), r.Fingerprint())

	ra := r.Addr().(*net.UDPAddr)
	gport := 0
	if ra.Port != 0 && ra.Port < 65535 {
		gport = ra.Port + 1
	}
	host, _, _ := net.SplitHostPort(rcfg.Listen)
	gcfg.Listen = net.JoinHostPort(host, strconv.Itoa(gport))
	if gport != 0 && !udpFree(gcfg.Listen) {
		// The port after the registry's is taken: any port will do, the
		// registry tells clients which.
		gcfg.Listen = net.JoinHostPort(host, "0")
	}
	gcfg.Registry = dialable(r.Addr())
	gcfg.RegistryFingerprint = r.Fingerprint()
	gcfg.StateDir = root + "/daemon"
	gcfg.Logger, gcfg.Metrics = log.With("component", "groups"), m
	d, err := daemon.NewGroupDaemon(gcfg)
	if err != nil {
		return fail(env, "up", err)
	}
	defer d.Close()
	if err := d.Listen(); err != nil {
		return fail(env, "up", err)
	}
	announceGroups(env, d)
	fmt.Fprintf(env.Stdout, "  try: huddle groups --registry %s\n", dialable(r.Addr()))
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

// udpFree reports whether a UDP socket can be bound at addr now.
func udpFree(addr string) bool {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return false
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// announceGroups prints, once listening, where a group daemon is and what it
// hosts, in lines a person can paste into a client.
func announceGroups(env Env, d *daemon.GroupDaemon) {
	fmt.Fprintf(env.Stdout, "huddle group daemon listening on %s, fingerprint %s\n", d.Addr(), d.Fingerprint())
	for _, g := range d.Groups() {
		private := ""
		if g.Private {
			private = "  (private)"
		}
		fmt.Fprintf(env.Stdout, "  group %s  %s%s\n", g.Name, g.ID, private)
	}
}

// serveUntilDone runs serve until ctx ends (SIGINT or SIGTERM: main's
// context), which shuts the daemon down gracefully; exit code 0 then.
func serveUntilDone(ctx context.Context, env Env, verb string, serve func(context.Context) error) int {
	if err := serve(ctx); err != nil {
		return fail(env, verb, err)
	}
	return ExitOK
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

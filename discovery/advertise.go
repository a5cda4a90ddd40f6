package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Service is the DNS-SD service type under which a huddle registry is
// advertised (in domain local.).
const Service = "_huddle._udp"

// Proto is the protocol named in the TXT record's proto= key.
const Proto = "huddle/1"

// DefaultRescanInterval is how often an Advertiser re-reads the interfaces
// when AdvertiserConfig.RescanInterval is zero.
const DefaultRescanInterval = 10 * time.Second

// AdvertiserConfig configures an Advertiser. Zero fields take the defaults
// documented on them.
type AdvertiserConfig struct {
	// Instance is the readable part of the instance name. Default:
	// "huddle registry on <hostname>". The name advertised adds the first
	// two groups of the fingerprint, "huddle registry on box (abcd-efgh)",
	// so two registries on hosts of one name never share an instance name;
	// if another advertiser still uses the name (a copy of the same key),
	// one of the two adds " #2" (see the package comment).
	Instance string

	// Host is the host name the address records are published under.
	// Default: "<short hostname>-<the fingerprint's first 8 letters>.local.",
	// unique for the same reason.
	Host string

	// Port is the registry's UDP (QUIC) port. Required.
	Port int

	// Listen is the address the registry's socket is bound to. Only
	// addresses it accepts are advertised: all of an interface's for the
	// unspecified IPv6 address "::" (a dual-stack socket) or the zero
	// Addr, IPv4 ones for 0.0.0.0, and only itself otherwise, so a registry
	// bound to 127.0.0.1 advertises nothing on the LAN.
	Listen netip.Addr

	// Fingerprint is the registry's key fingerprint, published as fp= in
	// the TXT record. Required.
	Fingerprint string

	// Version is the huddle version published as v=. Default: "dev".
	Version string

	// Interfaces names the interfaces to advertise on. Empty means every
	// interface that is up, multicast-capable, not loopback and has an IPv4
	// address, or loopback if there is no such interface and loopback can
	// multicast (see SelectInterfaces).
	Interfaces []string

	// RescanInterval is how often interfaces are re-read so responders
	// follow address changes. Default: DefaultRescanInterval.
	RescanInterval time.Duration

	// Logger receives the advertiser's logs. Default: discard.
	Logger *slog.Logger

	// Now is the clock answers are paced by (at most one multicast
	// answer a second, and the direct answers to each querier and in all
	// within their bounds: answerPace). Default: time.Now.
	Now func() time.Time
}

// Advertiser publishes the registry over mDNS. Create it with
// NewAdvertiser, run it with Serve, stop it with Close or by ending Serve's
// context.
type Advertiser struct {
	cfg AdvertiserConfig
	log *slog.Logger

	mu      sync.Mutex
	closed  bool
	serving bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup // Serve
}

// NewAdvertiser validates cfg and returns an Advertiser; it does no I/O.
// Errors wrap ErrInvalidConfig.
func NewAdvertiser(cfg AdvertiserConfig) (*Advertiser, error) {
	switch {
	case cfg.Port <= 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("%w: Port %d out of range 1-65535", ErrInvalidConfig, cfg.Port)
	case cfg.Fingerprint == "":
		return nil, fmt.Errorf("%w: Fingerprint is required", ErrInvalidConfig)
	case cfg.RescanInterval < 0:
		return nil, fmt.Errorf("%w: negative RescanInterval", ErrInvalidConfig)
	}
	for _, kv := range txtRecord(cfg.Version, cfg.Fingerprint) {
		if len(kv) > 255 {
			return nil, fmt.Errorf("%w: TXT entry %.20q... longer than 255 bytes", ErrInvalidConfig, kv)
		}
	}
	if len(cfg.Instance) > 50 {
		// The label holds 63 bytes; the fingerprint's tag and a rename's
		// suffix take the rest.
		return nil, fmt.Errorf("%w: Instance %.20q... longer than 50 bytes", ErrInvalidConfig, cfg.Instance)
	}
	if cfg.Instance != "" && !plainName(cfg.Instance) {
		// Browsers skip such an answer (toRegistry): said here, not
		// found nowhere.
		return nil, fmt.Errorf("%w: Instance %q is not one line of plain text (no control or format character, no filler such as U+3164, no blank at either end)", ErrInvalidConfig, cfg.Instance)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.RescanInterval == 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Host != "" && !strings.HasSuffix(cfg.Host, ".") {
		cfg.Host += "."
	}
	cfg.Interfaces = slices.Clone(cfg.Interfaces)
	return &Advertiser{cfg: cfg, log: orDiscard(cfg.Logger)}, nil
}

func txtRecord(version, fp string) []string {
	if version == "" {
		version = "dev"
	}
	return []string{"v=" + version, "proto=" + Proto, "fp=" + fp}
}

// fingerprintTag is the part of a fingerprint's text form that makes names
// unique: its first two groups ("abcd-efgh"), 40 bits.
func fingerprintTag(fp string) string {
	if len(fp) > 9 {
		return fp[:9]
	}
	return fp
}

// MaxRenames is how many times an Advertiser renames its instance after
// conflicts (RFC 6762 §9) before it keeps its name: a conflict needs only
// an answer claiming the name with the same fingerprint in TXT, which
// anyone can copy, and each rename lengthens the name (" #N").
const MaxRenames = 8

// names returns the instance and host names to advertise after renames
// conflicts forced.
func (a *Advertiser) names(renames int) (instance, host string) {
	hn, err := os.Hostname()
	if err != nil || hn == "" {
		hn = "unknown"
	}
	short, _, _ := strings.Cut(hn, ".")
	tag := fingerprintTag(a.cfg.Fingerprint)
	instance = a.cfg.Instance
	if instance == "" {
		instance = "huddle registry on " + short
	}
	instance += " (" + tag + ")"
	host = a.cfg.Host
	if host == "" {
		host = short + "-" + strings.ReplaceAll(tag, "-", "") + ".local."
	}
	if renames > 0 {
		instance += fmt.Sprintf(" #%d", renames+1)
		host = strings.TrimSuffix(host, ".local.") + fmt.Sprintf("-%d.local.", renames+1)
	}
	return instance, host
}

// accepts reports whether the registry's socket, bound to the configured
// Listen address, accepts packets sent to addr.
func (a *Advertiser) accepts(addr netip.Addr) bool {
	l := a.cfg.Listen.Unmap()
	switch {
	case !l.IsValid(), l == netip.IPv6Unspecified():
		return true
	case l == netip.IPv4Unspecified():
		return addr.Is4()
	}
	return addr.WithZone("") == l.WithZone("")
}

// Serve advertises until ctx ends or Close is called, then stops every
// responder and returns nil. It runs one responder per selected interface,
// each publishing only that interface's addresses that the registry's
// socket accepts, and every RescanInterval restarts those whose addresses
// changed (an interface coming up later is picked up then). A problem
// (no usable interface, a socket that cannot join the group) is logged at
// warn level once, and again only if it changes. It returns ErrClosed
// after Close, and an error if called while already serving.
func (a *Advertiser) Serve(ctx context.Context) error {
	a.mu.Lock()
	switch {
	case a.closed:
		a.mu.Unlock()
		return ErrClosed
	case a.serving:
		a.mu.Unlock()
		return errors.New("discovery: Advertiser.Serve called twice")
	}
	a.serving = true
	ctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	a.wg.Add(1)
	a.mu.Unlock()
	defer a.wg.Done()
	defer cancel()

	var (
		warn       = newWarnOnce(a.log)
		renames    int
		keptWarned bool // the name was kept once MaxRenames were made
		instance   string
		host       string
		running    = make(map[string]*responder) // by interface name
		conflicts  = make(chan *advert, 1)
		hostAddrs  []netip.Addr // every address of every interface, for telling ourselves apart
		addrsMu    sync.Mutex
	)
	instance, host = a.names(renames)
	txt := txtRecord(a.cfg.Version, a.cfg.Fingerprint)
	ours := func(addr netip.Addr) bool {
		addrsMu.Lock()
		defer addrsMu.Unlock()
		return slices.Contains(hostAddrs, addr)
	}
	lost := func(theirs *advert) {
		select {
		case conflicts <- theirs:
		default:
		}
	}
	stopAll := func() {
		for name, r := range running {
			r.stop()
			delete(running, name)
		}
	}
	defer stopAll()

	rescan := func() {
		cands, reports, err := selectInterfaces(a.cfg.Interfaces)
		if err != nil {
			warn.warn("select", "discovery: not advertising the registry over mDNS", "err", err)
		} else if warn.ok("select") {
			a.log.Info("discovery: an interface for mDNS is usable again")
		}
		addrsMu.Lock()
		hostAddrs = hostAddrs[:0]
		for _, r := range reports {
			for _, ad := range r.Addrs {
				hostAddrs = append(hostAddrs, ad.WithZone(""))
			}
		}
		addrsMu.Unlock()
		seen := make(map[string]bool)
		for _, c := range cands {
			name := c.iface.Name
			var addrs []netip.Addr
			for _, ad := range c.addrs() {
				if a.accepts(ad) {
					addrs = append(addrs, ad)
				}
			}
			if len(addrs) == 0 {
				warn.warn("accept "+name, "discovery: not advertising the registry on "+name+": it listens on "+a.cfg.Listen.String()+" only, not on an address of "+name+"; listen on 0.0.0.0 or on "+name+"'s address to be found there",
					"iface", name, "iface_addrs", c.addrs())
				continue
			}
			warn.ok("accept " + name)
			seen[name] = true
			z := &zone{instance: instance, host: host, port: uint16(a.cfg.Port), txt: txt, addrs: addrs}
			if r := running[name]; r != nil {
				if slices.Equal(r.zone.addrs, addrs) {
					continue
				}
				r.stop()
				delete(running, name)
			}
			r, err := startResponder(c.iface, c.prefixes, z, a.cfg.Fingerprint, ours, lost, a.log, warn, a.cfg.Now)
			if err != nil {
				var se *SocketError
				advice := ""
				if errors.As(err, &se) {
					advice = se.Advice()
				}
				warn.warn("responder "+name, "discovery: cannot advertise the registry on "+name, "iface", name, "err", err, "fix", advice)
				continue
			}
			warn.ok("responder " + name)
			running[name] = r
			a.log.Info("discovery: advertising registry", "iface", name, "addrs", addrs, "port", a.cfg.Port, "instance", instance)
		}
		for name, r := range running {
			if !seen[name] {
				r.stop()
				delete(running, name)
				a.log.Info("discovery: stopped advertising", "iface", name)
			}
		}
		if len(running) == 0 {
			warn.warn("nowhere", "discovery: the registry is advertised on no interface; clients must be given its address", "listen", a.cfg.Listen)
		} else {
			warn.ok("nowhere")
		}
	}

	rescan()
	t := time.NewTicker(a.cfg.RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			rescan()
		case theirs := <-conflicts:
			if !strings.EqualFold(theirs.instance, instance) {
				continue // about a name already given up
			}
			if renames >= MaxRenames {
				if !keptWarned {
					keptWarned = true
					a.log.Warn("discovery: keeping the registry's mDNS instance name despite a conflict",
						"instance", instance, "renames", renames, "max", MaxRenames, "their_fp", txtValue(theirs.txt, "fp"), "their_addrs", theirs.addrs,
						"why", "another advertiser claims every name this one takes, with its key's fingerprint; two daemons with a copy of one key, or a spoofer")
				}
				continue
			}
			renames++
			old := instance
			instance, host = a.names(renames)
			a.log.Warn("discovery: renamed the registry's mDNS instance after a conflict", "was", old, "now", instance, "their_fp", txtValue(theirs.txt, "fp"), "their_addrs", theirs.addrs)
			stopAll()
			rescan()
		}
	}
}

// Close stops Serve and waits for it and every goroutine it started to
// return. It is safe to call more than once and before Serve; it always
// returns nil.
func (a *Advertiser) Close() error {
	a.mu.Lock()
	a.closed = true
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

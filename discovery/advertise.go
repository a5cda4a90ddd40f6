package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
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
	// Instance is the readable instance name. Default: "huddle registry on
	// <hostname>". Dots are replaced by '-' (hashicorp/mdns would read them
	// as label separators).
	Instance string

	// Host is the host name the address records are published under; it
	// should end in ".local.". Default: "<short hostname>.local.". Two
	// registries must not share one (hashicorp/mdns's client would mix
	// their addresses).
	Host string

	// Port is the registry's UDP (QUIC) port. Required.
	Port int

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
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.RescanInterval == 0 {
		cfg.RescanInterval = DefaultRescanInterval
	}
	if cfg.Host != "" && !strings.HasSuffix(cfg.Host, ".") {
		cfg.Host += "."
	}
	cfg.Instance = strings.ReplaceAll(cfg.Instance, ".", "-")
	cfg.Interfaces = append([]string(nil), cfg.Interfaces...)
	return &Advertiser{cfg: cfg, log: orDiscard(cfg.Logger)}, nil
}

func txtRecord(version, fp string) []string {
	if version == "" {
		version = "dev"
	}
	return []string{"v=" + version, "proto=" + Proto, "fp=" + fp}
}

// Serve advertises until ctx ends or Close is called, then stops every
// responder and returns nil. It runs one responder per selected interface,
// each publishing only that interface's addresses, and every
// RescanInterval restarts those whose addresses changed (an interface
// coming up later is picked up then; while none is usable Serve logs and
// keeps waiting). It returns ErrClosed after Close, and an error if called
// while already serving.
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

	instance, host := a.cfg.Instance, a.cfg.Host
	if instance == "" || host == "" {
		hn, err := os.Hostname()
		if err != nil {
			hn = "unknown"
		}
		short, _, _ := strings.Cut(hn, ".")
		if instance == "" {
			instance = "huddle registry on " + short
		}
		if host == "" {
			host = short + ".local."
		}
	}
	txt := txtRecord(a.cfg.Version, a.cfg.Fingerprint)

	running := make(map[string]*responder)
	defer func() {
		for _, r := range running {
			r.stop()
		}
	}()
	lastErr := ""
	rescan := func() {
		cands, _, err := selectInterfaces(a.cfg.Interfaces)
		if err != nil && err.Error() != lastErr {
			a.log.Warn("discovery: not advertising", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		seen := make(map[string]bool)
		for _, c := range cands {
			seen[c.iface.Name] = true
			addrs := c.addrs()
			sig := fmt.Sprint(addrs)
			if r := running[c.iface.Name]; r != nil {
				if r.sig == sig {
					continue
				}
				r.stop()
				delete(running, c.iface.Name)
			}
			zone, err := mdns.NewMDNSService(instance, Service, "local.", host, a.cfg.Port, netIPs(addrs), txt)
			if err != nil {
				a.log.Warn("discovery: build mDNS records", "iface", c.iface.Name, "err", err)
				continue
			}
			r, err := startResponder(&c.iface, sig, zone, a.log)
			if err != nil {
				a.log.Warn("discovery: start mDNS responder", "iface", c.iface.Name, "err", err)
				continue
			}
			running[c.iface.Name] = r
			a.log.Info("discovery: advertising registry", "iface", c.iface.Name, "addrs", addrs, "port", a.cfg.Port, "instance", instance)
		}
		for name, r := range running {
			if !seen[name] {
				r.stop()
				delete(running, name)
				a.log.Info("discovery: stopped advertising", "iface", name)
			}
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

func netIPs(addrs []netip.Addr) []net.IP {
	out := make([]net.IP, len(addrs))
	for i, a := range addrs {
		out[i] = net.IP(a.AsSlice())
	}
	return out
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

func runDoctor(ctx context.Context, env Env, args []string) int {
	var cf clientFlags
	var wait time.Duration
	fs := newFlags(env, "doctor", "[--iface NAME]... [--registry ADDR] [--wait DURATION]",
		"Check that huddle can find and reach its registry and group daemons, and say what to fix when not:\nthe interfaces mDNS uses (and why others are skipped), every mDNS answer and how fast it came,\nwhether the registry and each group daemon answer over QUIC with the expected key.",
		"  huddle doctor\n  huddle doctor --iface eth0 --wait 5s")
	fs.DurationVar(&wait, "wait", 2*time.Second, "how long to listen for mDNS answers")
	cf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	dir, err := home(env)
	if err != nil {
		return fail(env, "doctor", err)
	}
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		return fail(env, "doctor", err)
	}
	kh := identity.OpenKnownHosts(filepath.Join(dir, identity.KnownHostsFile))
	c, err := client.New(client.Config{Identity: id, KnownHosts: kh, DialTimeout: 3 * time.Second})
	if err != nil {
		return fail(env, "doctor", err)
	}
	defer c.Close()
	d := &doctor{env: env, c: c, kh: kh}
	return d.run(ctx, &cf, wait)
}

type doctor struct {
	env    Env
	c      *client.Client
	kh     *identity.KnownHosts
	advice []string
}

func (d *doctor) say(format string, args ...any) { fmt.Fprintf(d.env.Stdout, format+"\n", args...) }

func (d *doctor) advise(format string, args ...any) {
	d.advice = append(d.advice, fmt.Sprintf(format, args...))
}

func (d *doctor) run(ctx context.Context, cf *clientFlags, wait time.Duration) int {
	d.say("you: %s", d.c.Fingerprint())

	// 1. Interfaces and mDNS.
	d.say("\ninterfaces for mDNS:")
	reports, ifErr := discovery.SelectInterfaces(cf.ifaces)
	for _, r := range reports {
		if r.Used {
			d.say("  %-12s used     %s", r.Name, addrList(r.Addrs))
		} else {
			d.say("  %-12s skipped  %s", r.Name, r.Reason)
		}
	}
	var answers []discovery.Answer
	if ifErr != nil {
		d.say("  none usable: %v", ifErr)
		d.advise("no multicast-capable interface is up, so the registry cannot be discovered: connect to the LAN, or give --registry HOST:PORT")
	} else {
		d.say("\nmDNS answers for %s (listening %v):", discovery.Service, wait)
		var err error
		_, answers, err = discovery.Diagnose(ctx, discovery.BrowseConfig{
			Interfaces: cf.ifaces,
			Verify: func(ctx context.Context, r discovery.Registry, addr netip.AddrPort) error {
				return verifyAdvertised(ctx, d.c, d.kh, r, addr)
			},
		}, wait)
		if err != nil {
			d.say("  browsing failed: %v", err)
		}
		for _, a := range answers {
			status := "verified"
			if a.Err != nil {
				status = "REJECTED: " + a.Err.Error()
			}
			d.say("  after %-8v %q at %s (fingerprint %s, via %s): %s",
				a.After.Round(time.Millisecond), a.Registry.Instance, a.Addr, shortText(a.Registry.Fingerprint), a.Registry.Iface, status)
			var ce *identity.ChangedError
			var mm *identity.MismatchError
			switch {
			case errors.As(a.Err, &ce):
				d.advise("the registry %q now has another key than the one pinned: if it was reinstalled, run huddle forget-registry mdns:%s", a.Registry.Instance, a.Registry.Instance)
			case errors.As(a.Err, &mm):
				d.advise("%s answered mDNS with a fingerprint its QUIC handshake does not show: a stale answer or a spoofer; it is ignored", a.Addr)
			case errors.Is(a.Err, client.ErrUnreachable), errors.Is(a.Err, context.DeadlineExceeded):
				d.advise("%s answered mDNS but not QUIC: a firewall may drop UDP port %d; allow it", a.Addr, a.Addr.Port())
			}
		}
		if len(answers) == 0 && err == nil {
			d.say("  nothing answered")
			d.advise("no registry answered mDNS: is one running on this LAN (huddle up / huddle registry)? multicast may be filtered (Wi-Fi client isolation, VPNs, container networks); give --registry HOST:PORT to skip discovery")
		}
	}

	// 2. The registry.
	d.say("\nregistry:")
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, cf.timeout)
	reg, err := locateRegistry(lctx, d.env, cf, d.c, d.kh)
	if err != nil {
		cancel()
		msg, _ := explain(err)
		d.say("  not reachable: %s", msg)
		return d.finish(ExitUnreachable)
	}
	list, err := reg.List(lctx)
	cancel()
	if err != nil {
		msg, _ := explain(err)
		d.say("  %s answered the handshake but not list: %s", reg.Addr(), msg)
		return d.finish(ExitUnreachable)
	}
	d.say("  %s  fingerprint %s  answered in %v, %d groups, epoch %d",
		reg.Addr(), reg.Fingerprint(), time.Since(start).Round(time.Millisecond), len(list.Groups), list.Epoch)

	// 3. Every group daemon.
	code := ExitOK
	if len(list.Groups) > 0 {
		d.say("\ngroup daemons:")
	}
	for _, e := range list.Groups {
		g, err := d.c.Group(e)
		if err == nil {
			gctx, cancel := context.WithTimeout(ctx, cf.timeout)
			start := time.Now()
			_, err = g.Info(gctx)
			cancel()
			if err == nil {
				d.say("  %-16s %s  ok in %v", e.Name, strings.Join(e.Addrs, ","), time.Since(start).Round(time.Millisecond))
				continue
			}
		}
		code = ExitUnreachable
		msg, _ := explain(err)
		d.say("  %-16s %s  FAILED: %s", e.Name, strings.Join(e.Addrs, ","), msg)
		var mm *identity.MismatchError
		if errors.As(err, &mm) {
			d.advise("group %q: the daemon at %s has another key than the registry lists: a stale listing (wait one lease) or an impostor", e.Name, strings.Join(e.Addrs, ","))
		} else {
			d.advise("group %q: its daemon registered %s but does not answer there: it may advertise an address unreachable from here (set --advertise on the daemon) or a firewall drops UDP", e.Name, strings.Join(e.Addrs, ","))
		}
	}
	return d.finish(code)
}

func (d *doctor) finish(code int) int {
	if len(d.advice) == 0 {
		d.say("\nall good")
		return code
	}
	d.say("\nadvice:")
	for _, a := range d.advice {
		d.say("  - %s", a)
	}
	return code
}

func addrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// shortText shortens a fingerprint's text form for display, leaving
// anything unparseable as it is.
func shortText(s string) string {
	if fp, err := wire.ParseFingerprint(s); err == nil {
		return fp.Short()
	}
	return s
}

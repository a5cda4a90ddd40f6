package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// discoverTimeout bounds how long a client verb browses mDNS for a registry
// before giving up.
const discoverTimeout = 3 * time.Second

// locateRegistry connects to the registry the user means: --registry, else
// $HUDDLE_REGISTRY, else whichever answers first of a registry on this
// machine (127.0.0.1:7373, as `huddle up` runs) and one found over mDNS.
func locateRegistry(ctx context.Context, env Env, f *clientFlags, c *client.Client, kh *identity.KnownHosts) (*client.Registry, error) {
	addr := f.registry
	if addr == "" {
		addr = env.Getenv("HUDDLE_REGISTRY")
	}
	if addr != "" {
		if err := checkRegistryAddr(addr); err != nil {
			return nil, &usageError{fmt.Sprintf("registry address %q: %v", addr, err)}
		}
		return c.Registry(ctx, addr, wire.Fingerprint{})
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		reg *client.Registry
		err error
	}
	local, found := make(chan result, 1), make(chan result, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(ctx, time.Second)
		defer lcancel()
		reg, err := c.Registry(lctx, defaultRegistry, wire.Fingerprint{})
		local <- result{reg, err}
	}()
	go func() {
		reg, err := discoverRegistry(ctx, f.ifaces, c, kh)
		found <- result{reg, err}
	}()

	var localErr, mdnsErr error
	for localErr == nil || mdnsErr == nil {
		select {
		case r := <-local:
			if r.err == nil {
				cancel()
				if found != nil {
					<-found
				}
				return r.reg, nil
			}
			localErr = r.err
			local = nil
		case r := <-found:
			if r.err == nil {
				cancel()
				if local != nil {
					<-local
				}
				return r.reg, nil
			}
			mdnsErr = r.err
			found = nil
		}
	}
	var ce *identity.ChangedError
	if errors.As(mdnsErr, &ce) {
		return nil, mdnsErr
	}
	return nil, fmt.Errorf("%w: no registry found: nothing answered at %s, and over mDNS: %v\n"+
		"  give the registry's address with --registry HOST:PORT (or HUDDLE_REGISTRY); 'huddle doctor' explains what discovery saw",
		client.ErrUnreachable, defaultRegistry, mdnsErr)
}

// discoverRegistry browses mDNS for a registry and returns the first whose
// advertised fingerprint the handshake confirms. Registries found this way
// are pinned by instance name, so a different key under a known name is
// refused like a changed key at a known address.
func discoverRegistry(ctx context.Context, ifaces []string, c *client.Client, kh *identity.KnownHosts) (*client.Registry, error) {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	var changed error
	r, ap, err := discovery.Find(ctx, discovery.BrowseConfig{
		Interfaces: ifaces,
		Verify: func(ctx context.Context, r discovery.Registry, addr netip.AddrPort) error {
			err := verifyAdvertised(ctx, c, kh, r, addr)
			var ce *identity.ChangedError
			if errors.As(err, &ce) {
				changed = err
			}
			return err
		},
	})
	if err != nil {
		if changed != nil {
			return nil, changed
		}
		return nil, err
	}
	// Verify dialled this address with this pin; opening it again reuses
	// the connection.
	fp, err := wire.ParseFingerprint(r.Fingerprint)
	if err != nil {
		return nil, err
	}
	return c.Registry(ctx, ap.String(), fp)
}

// verifyAdvertised checks an mDNS answer: the registry at addr must present
// the fingerprint its TXT record claims, and that must be the one pinned for
// its instance name, if any.
func verifyAdvertised(ctx context.Context, c *client.Client, kh *identity.KnownHosts, r discovery.Registry, addr netip.AddrPort) error {
	fp, err := wire.ParseFingerprint(r.Fingerprint)
	if err != nil {
		return err
	}
	if err := kh.Check("mdns:"+r.Instance, fp); err != nil {
		return err
	}
	_, err = c.Registry(ctx, addr.String(), fp)
	return err
}

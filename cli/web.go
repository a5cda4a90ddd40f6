package cli

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/discovery"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/web"
	"github.com/huddle-chat/huddle/wire"
)

func runWeb(ctx context.Context, env Env, args []string) int {
	var (
		listen      string
		openBrowser bool
		allowRemote bool
		hosts       []string
		registries  []string
		ifaces      []string
		noMDNS      bool
		logLevel    string
	)
	fs := newFlags(env, "web", "[--listen ADDR] [--open] [--registry ADDR]... [--allow-remote] [--host NAME]... [--no-mdns]",
		"Serve your groups to a browser: a chat page on this machine, acting with your key ($HUDDLE_HOME).\n"+
			"It prints a link with a secret; open it (or pass --open). The page lists the groups of every\n"+
			"registry it knows, live, and lets you join, read and send. Ctrl-C stops it.",
		"  huddle web --open\n  huddle web --listen 127.0.0.1:8080 --registry 192.168.1.20:7373")
	fs.StringVar(&listen, "listen", web.DefaultListen, "address to serve on (loopback unless --allow-remote)")
	fs.BoolVar(&openBrowser, "open", false, "open the page in your browser")
	fs.BoolVar(&allowRemote, "allow-remote", false, "allow a --listen address other machines can reach (plain HTTP: read the warning it prints)")
	fs.StringArrayVar(&hosts, "host", nil, "a host name the page may be opened under, besides IP addresses and localhost (repeatable)")
	fs.Var((*registryAddrsValue)(&registries), "registry", "registry to list groups from, HOST[:PORT] (repeatable, or comma-separated; default $HUDDLE_REGISTRY, else this machine's and those found over mDNS)")
	fs.StringArrayVar(&ifaces, "iface", nil, "look for registries over mDNS on this interface only (repeatable)")
	fs.BoolVar(&noMDNS, "no-mdns", false, "do not look for registries over mDNS")
	fs.StringVar(&logLevel, "log-level", "warn", "least severe level logged to stderr: debug, info, warn, error")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		return usageErr(env, "web", "unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return usageErr(env, "web", "--log-level %q: want debug, info, warn or error", logLevel)
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	if len(registries) == 0 {
		if r := env.Getenv("HUDDLE_REGISTRY"); r != "" {
			if err := (*registryAddrsValue)(&registries).Set(r); err != nil {
				return usageErr(env, "web", "HUDDLE_REGISTRY=%q: %v", r, err)
			}
		}
	}
	discover := len(registries) == 0 && !noMDNS
	if len(registries) == 0 {
		registries = []string{defaultRegistry}
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErr(env, "web", "--listen %q: want HOST:PORT (%v)", listen, err)
	}
	if !web.Loopback(host) && !allowRemote {
		return usageErr(env, "web", "--listen %s reaches beyond this machine, and the page acts as you: "+
			"add --allow-remote if you mean it (and read what it exposes)", listen)
	}

	dir, err := home(env)
	if err != nil {
		return fail(env, "web", err)
	}
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		return fail(env, "web", err)
	}
	kh := openKnownHosts(env, dir)
	c, err := client.New(client.Config{Identity: id, KnownHosts: kh, Logger: log})
	if err != nil {
		return fail(env, "web", err)
	}
	defer c.Close()
	// The join form offers the name huddle join takes by default.
	cfg := web.Config{Listen: listen, AllowRemote: allowRemote, Hosts: hosts, Client: c, Registries: registries, Logger: log,
		Joined: &joinedRecord{dir: dir, locker: env.locker(), log: log}, Name: loginName(env)}
	if discover {
		cfg.Discover = func(ctx context.Context, found func(*client.Registry), gone func(client.Fingerprint)) error {
			return discoverRegistries(ctx, ifaces, c, kh, log, found, gone)
		}
	}
	srv, err := web.New(cfg)
	if err != nil {
		return usageErr(env, "web", "%v", err)
	}
	if err := srv.Listen(); err != nil {
		srv.Close()
		// Said as the daemons say it, exit 1: a port in use was "web:
		// listen: listen tcp ...: bind: address already in use", exit 3
		// (unreachable), until session 21.
		return fail(env, "web", listenErr(err, "--listen", listen))
	}
	url := srv.URL()
	fmt.Fprintf(env.Stdout, "huddle web: %s\n", url)
	from := strings.Join(registries, ", ")
	if discover {
		from += " and registries found over mDNS"
	}
	fmt.Fprintf(env.Stdout, "  acting as %s (%s); groups from %s\n", id.Fingerprint().Short(), dir, from)
	fmt.Fprintf(env.Stdout, "  the link carries this run's secret: whoever has it can read and send as you; Ctrl-C stops\n")
	if !web.Loopback(host) {
		port := strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
		fmt.Fprintf(env.Stderr, "huddle web: WARNING: listening on %s, beyond this machine. Anyone who can reach it and has the\n"+
			"  link can read every group you joined and send, join and leave as you (key %s). It is plain\n"+
			"  HTTP: the link's secret, the cookie and every message cross the network unencrypted. Prefer\n"+
			"  127.0.0.1 with an SSH tunnel (ssh -L %s:127.0.0.1:%s HOST).\n",
			net.JoinHostPort(host, port), id.Fingerprint().Short(), port, port)
	}
	var launcher string
	var launched <-chan error
	if openBrowser {
		if launcher, launched, err = openPage(url); err != nil {
			fmt.Fprintf(env.Stderr, "huddle web: could not open a browser (%v); open the link yourself\n", err)
		}
	}
	// A launcher that ran and failed (xdg-open on a machine without a
	// browser) is said while serving; one still running when the server
	// stops (a browser in the terminal) is not waited for.
	served := make(chan struct{})
	var reporter sync.WaitGroup
	if launched != nil {
		reporter.Go(func() {
			select {
			case err := <-launched:
				if err != nil {
					fmt.Fprintf(env.Stderr, "huddle web: the browser did not open (%v); open the link yourself\n", err)
				}
			case <-served:
			}
		})
	}
	err = srv.Serve(ctx)
	close(served)
	reporter.Wait()
	if launcher != "" {
		os.RemoveAll(filepath.Dir(launcher))
	}
	if err != nil {
		return fail(env, "web", err)
	}
	return ExitOK
}

// discoverRegistries reports every registry mDNS finds and verifies to
// found (which owns the handle: it closes it), and each of them gone to
// gone, until ctx ends. With known_registries full, a registry new to it
// is used unpinned, said once on log (pinFound); one whose key cannot be
// pinned (its lock held by another process: identity.ErrPinsLocked) is
// not used, said once on log too.
func discoverRegistries(ctx context.Context, ifaces []string, c *client.Client, kh *identity.KnownHosts, log *slog.Logger, found func(*client.Registry), gone func(client.Fingerprint)) error {
	var warned, failed atomic.Bool
	return discovery.Browse(ctx, discovery.BrowseConfig{
		Interfaces: ifaces,
		Gone: func(r discovery.Advertised) {
			if fp, err := wire.ParseFingerprint(r.Fingerprint); err == nil {
				gone(fp)
			}
		},
		Verify: func(ctx context.Context, r discovery.Advertised, addr netip.AddrPort) error {
			reg, err := checkAdvertised(ctx, c, kh, r, addr)
			if err == nil {
				// Browse verifies each registry again every 30 s, and any
				// number of answers on the way: a handle kept would keep a
				// connection to each address verified, for as long as huddle
				// web runs. The one found gets is its own (the directory's).
				reg.Close()
			}
			return err
		},
	}, func(r discovery.Advertised, ap netip.AddrPort) {
		// Pinned once Browse reports it, not as each answer verifies:
		// Browse reports a bounded number of keys, each under one name,
		// where answers may name a verified key under any number of names.
		fp, err := wire.ParseFingerprint(r.Fingerprint)
		if err != nil {
			return
		}
		name := mdnsPinPrefix + r.Instance
		pinned, err := pinFound(ctx, kh, name, fp)
		if err != nil {
			// Not used (Browse reports it again only if it moves, or goes
			// and comes back): said once, with why.
			if failed.CompareAndSwap(false, true) {
				log.Warn(notPinned{[]string{name}, err}.warning() + " (said once; others found may not be used either; restart huddle web to find them again)")
			}
			return
		}
		if !pinned && warned.CompareAndSwap(false, true) {
			log.Warn(pinsFullWarning(kh.Path(), []string{name}) + " (said once; others found may be used unpinned too)")
		}
		reg, err := c.Registry(ctx, ap.String(), fp)
		if err == nil {
			found(reg)
		}
	})
}

// openPage opens url in the user's browser through a file only this user
// can read, which redirects to it: a browser started with the URL itself on
// its command line would show the secret to every local user (ps, /proc).
// It returns the file's path (the caller removes its directory), and a
// channel that gets the launcher's failure (its exit and the last line it
// wrote on stderr), or nil, once it exits.
func openPage(url string) (string, <-chan error, error) {
	dir, err := os.MkdirTemp("", "huddle-web-")
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "open.html")
	page := fmt.Sprintf("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=%s\"><title>huddle</title>"+
		"<p>Opening <a href=\"%s\">huddle web</a>…</p>\n", html.EscapeString(url), html.EscapeString(url))
	if err := os.WriteFile(path, []byte(page), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", path)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", path)
	default:
		cmd = exec.Command("xdg-open", path)
	}
	var said lastLine
	cmd.Stderr = &said
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, errors.New(cmd.Path + ": " + err.Error())
	}
	done := make(chan error, 1)
	go func() { // reaps it; xdg-open returns at once, having started the browser
		err := cmd.Wait()
		if err != nil {
			if line := said.String(); line != "" {
				err = fmt.Errorf("%s: %v: %s", filepath.Base(cmd.Path), err, line)
			} else {
				err = fmt.Errorf("%s: %v", filepath.Base(cmd.Path), err)
			}
		}
		done <- err
	}()
	return path, done, nil
}

// lastLine keeps the last non-blank line written to it (at most 200
// bytes of it): what a launcher said last on stderr.
type lastLine struct {
	mu   sync.Mutex
	line string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range strings.Split(string(p), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			l.line = s[:min(len(s), 200)]
		}
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

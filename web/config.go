package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// Defaults for Config's zero fields.
const (
	DefaultListen       = "127.0.0.1:7380"
	DefaultPollInterval = 2 * time.Second
	// DefaultMaxStreams bounds the event streams open at once: a page
	// holds one.
	DefaultMaxStreams = 64
	// DefaultMaxConns bounds the connections held at once: a browser
	// opens six or so per page.
	DefaultMaxConns = 512
	// DefaultMaxListingBytes bounds the registries' listings held, in
	// all: one registry's, as the client bounds it, and 65,536 groups of
	// an honest one take 10-30 MiB.
	DefaultMaxListingBytes = 64 << 20
)

// ErrInvalidConfig: a Config field is unusable. Validate's errors wrap it.
var ErrInvalidConfig = errors.New("web: invalid config")

// ErrClosed: the Server was closed.
var ErrClosed = errors.New("web server closed")

// Config configures a Server. The zero value of each field but Client and
// the registry sources means its default.
type Config struct {
	// Listen is the TCP address to serve on. Default DefaultListen
	// (127.0.0.1:7380); port 0 picks a free port.
	Listen string
	// AllowRemote permits a Listen address that is not a loopback one.
	// Without it, Validate refuses such an address: the server acts as the
	// user, over plain HTTP.
	AllowRemote bool
	// Hosts are host names, besides IP addresses and "localhost", that
	// requests may name in their Host header (the machine's name, for
	// AllowRemote). Any other name is refused, against DNS rebinding.
	Hosts []string

	// Client is the user's huddle client: the key the server acts with.
	// Required; the Server does not close it.
	Client *client.Client
	// Registries are registry addresses to list groups from, opened (and
	// pinned) through Client.
	Registries []string
	// Discover, if set, finds further registries until ctx ends (mDNS),
	// calling found for each one it has verified, and gone with the key of
	// one found that is no longer there (its poller stops, its groups
	// leave the list). Its error ends only discovery, and is logged.
	Discover func(ctx context.Context, found func(*client.Registry), gone func(client.Fingerprint)) error

	// Secret is the per-launch secret requests must carry. Default: 32
	// random bytes, base64url. Tests set it.
	Secret string
	// PollInterval is how often registries are asked for their groups
	// while a page is open. Default DefaultPollInterval (2 s).
	PollInterval time.Duration
	// MaxStreams bounds the event streams open at once; one more gets 503.
	// Default DefaultMaxStreams (64).
	MaxStreams int
	// MaxListingBytes bounds the registries' listings the Server holds,
	// in all (as client.Registry.ListWithin counts them): the registries
	// share it, each at most an equal part (MaxListingBytes divided by
	// the registries known), and a listing larger than its part, or than
	// what the others leave, is not kept: the registry is listed with
	// code too_large and its groups are not shown. A registry's previous
	// listing stands while the next is read, so for that moment up to
	// twice this is held. Default DefaultMaxListingBytes (64 MiB).
	MaxListingBytes int
	// MaxConns bounds the connections held at once. Past it, the oldest
	// connection that has not carried the secret is closed for the new
	// one; one that has (the page's, a script's) is never closed for
	// another. Default DefaultMaxConns (512).
	MaxConns int
	// Joined, if set, is the record of the groups the user joined, by
	// UUID and daemon key (huddle's joined file, which the CLI keeps too).
	// Where registries list one UUID under different daemon keys (a
	// rogue registry's impostor, or a daemon moved to a new key), the
	// Server uses the key the user joined under, whichever registry lists
	// it; joins and leaves through the Server are recorded in it. Without
	// it, or for a group joined under none of the keys, the first
	// registry's key is shown (Registries in order, then those Discover
	// found, in the order found), and a join is refused (409 clash): which
	// key is the owner's cannot be told. A group joined is shown under the
	// name it was joined under, whatever the registries list it as, and
	// shown (unlisted, as a member) while no registry lists it at a key it
	// was joined under: listed only under other keys (its daemon down and
	// an impostor listed in its place, or its daemon moved to a new key),
	// it is shown unlisted with Clash and those keys, and never reached at
	// them until the user joins it at one (huddle join --daemon).
	Joined Joined
	// Name is the name the page's join form offers for a group the user
	// has not joined, until they join one from that browser: the name a
	// join from the CLI takes by default (huddle join's, $USER). Empty:
	// none offered.
	Name string
	// Logger receives the server's notable events (start, refused
	// requests at debug level). Default: discard.
	Logger *slog.Logger
}

// Joined records the groups a user joined (Config.Joined). Its methods
// may be called from several goroutines at once; Has is called while the
// Server's list is being built, so it should not wait on the network.
type Joined interface {
	// Has reports whether the user joined group at the daemon whose key
	// is daemon.
	Has(group client.UUID, daemon client.Fingerprint) bool
	// Groups returns the groups the user joined: each one's UUID, its
	// daemon's key (Fingerprint) and the name it was joined under (Name,
	// empty if none is recorded). It is called at each poll of the
	// registries.
	Groups() []client.GroupEntry
	// Add records that the user joined e's group at e's daemon. Its
	// error says the record could not be made (the join itself is done):
	// the Server says it to the page (the join's answer, unrecorded).
	Add(e client.GroupEntry) error
	// Remove records that the user left e's group at e's daemon; its
	// error as Add's.
	Remove(e client.GroupEntry) error
}

// JoinedCells is implemented by a Joined that records the replica set of
// each cell's group the user joined (huddle's joined file does). The
// Server then takes, of a joined cell's group, only the listings that
// name a member of that set, and dials only those members
// (client.TrustedCell): never a key a registry lists beside them. When the
// registries list another set, it asks the members of the set recorded
// for the cell's (client.CellMembers: cell_status, each member's key
// pinned) and records the set a majority of them answer alike (Follow): a
// member the cell's operator added since the join is so taken, from the
// cell's own word, never a registry's, and a member removed from the cell
// alone never moves it.
type JoinedCells interface {
	// Cell returns the keys of the replica set recorded for group, a
	// cell's group the user joined; nil if none is recorded.
	Cell(group client.UUID) []client.Fingerprint
	// Follow records members as group's replica set: the word of a
	// majority of the recorded set, member one of them, a key Has takes
	// for group, which presented it on the connection it answered on. It
	// changes nothing if Has does not take member.
	Follow(group client.UUID, member client.Fingerprint, members []client.Fingerprint)
}

// Validate reports whether c can be used. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Client == nil {
		return bad("Client is required")
	}
	if len(c.Registries) == 0 && c.Discover == nil {
		return bad("no registry: give Registries or Discover")
	}
	if c.PollInterval < 0 || c.MaxStreams < 0 || c.MaxConns < 0 || c.MaxListingBytes < 0 {
		return bad("negative PollInterval, MaxStreams, MaxConns or MaxListingBytes")
	}
	if c.Name != "" && wire.CheckName(c.Name) != nil {
		return bad("Name %q: %v", c.Name, wire.CheckName(c.Name))
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		return bad("Secret of %d bytes: want at least 16", len(c.Secret))
	}
	listen := c.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return bad("listen address %q: %v", listen, err)
	}
	if !c.AllowRemote && !Loopback(host) {
		return bad("listen address %q is not loopback: the page acts as you, so listening beyond this machine needs AllowRemote (huddle web --allow-remote)", listen)
	}
	return nil
}

// Loopback reports whether host (an IP address or "localhost") names this
// machine only.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxListingBytes == 0 {
		c.MaxListingBytes = DefaultMaxListingBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

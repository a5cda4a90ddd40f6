package groupd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-chat/huddle/cell"
	"github.com/huddle-chat/huddle/daemon/internal/lifecycle"
	"github.com/huddle-chat/huddle/daemon/internal/sparse"
	"github.com/huddle-chat/huddle/daemon/internal/statedir"
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/metrics"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Group daemon defaults.
const (
	DefaultListen            = ":0"
	DefaultMaxMessageBytes   = 64 << 10
	DefaultMaxBatch          = 256
	DefaultFetchPage         = 10000
	DefaultHeartbeatInterval = 5 * time.Second
	// DefaultMaxMembers is the most members a group may have, and also
	// the most it can have: a members reply is one frame, an array of at
	// most wire.MaxArrayItems entries.
	DefaultMaxMembers = wire.MaxArrayItems
	// DefaultSendRate is each member's sustained send rate, messages per
	// second: far above what people type, low enough that one member
	// cannot flush a group's history in minutes.
	DefaultSendRate = 100
	// DefaultSendBurst is each member's token bucket: what it may send at
	// once after being idle.
	DefaultSendBurst = 1000
)

// minSendRate is the least nonzero send rate: one message per 1000 s,
// send_rate_milli 1 in info (PROTOCOL.md §8.1).
const minSendRate = 0.001

// maxRateWait bounds the retry_after_ms of a rate_limited send.
const maxRateWait = 24 * time.Hour

// MaxMessageBytesLimit is the largest MaxMessageBytes a daemon accepts: a
// message must fit in one frame with room for its envelope.
const MaxMessageBytesLimit = wire.MaxFrameSize - 4096

// Spec is one group a daemon hosts.
type Spec struct {
	// Name is the group's display name (wire.CheckName's rules). The daemon
	// keeps one UUID per name in its state directory.
	Name string
	// Secret, if not empty, makes the group private: join must present it.
	// It is compared in constant time and never logged.
	Secret []byte
}

// Config configures a Daemon. The zero value of each field but
// StateDir and Groups means its default.
type Config struct {
	// Listen is the UDP address to listen on. Default ":0" (any free port;
	// the registry is told the port bound).
	Listen string
	// Advertise are the "host:port" addresses to register for each group,
	// each one clients can dial (wire.CheckAddr: not 0.0.0.0, ::, a
	// multicast or the broadcast address, which registries refuse).
	// If empty, only the bound port is registered and the registry lists
	// the address our packets come from.
	Advertise []string
	// Groups are the groups hosted. At least one is required.
	Groups []Spec
	// StateDir holds the daemon's key, groups.json and the members files.
	// Required. A state directory that holds members but no key is
	// refused (ErrBadState) unless NewIdentity is set: a key created there
	// would silently give the daemon a new identity. (One that holds only a
	// groups.json, which an operator may write to choose UUIDs, gets a new
	// key and a warning.)
	StateDir string
	// NewIdentity allows the daemon to create a key in a state directory
	// that already holds members (its key was lost): the groups keep their
	// UUIDs and members, under the new key. Off by default.
	NewIdentity bool
	// Registries are the addresses ("host:port", or "host" for port 7373)
	// of the registries to register the groups with. The daemon registers
	// with each of them, and with each Discover finds, independently: each
	// has its own leases, renewals and retries, so none is a single point
	// of failure.
	Registries []string
	// Discover also registers the groups with every registry found over
	// mDNS, and keeps browsing, so a registry that appears later, moves or
	// restarts with another key is found again. Off by default in this
	// package; huddle serve turns it on unless --no-mdns.
	Discover bool
	// Interfaces are the interfaces to browse on. Default: every up,
	// multicast-capable interface.
	Interfaces []string
	// RegistryFingerprints, if not empty, are the only registry keys
	// trusted: a registry of Registries presenting another key is refused
	// (and warned about every minute while it does), and a registry found
	// over mDNS with another key is skipped. If empty, each registry of
	// Registries is trusted on first use: pinned to the key it first
	// presents, and if it later presents another (reinstalled), the daemon
	// logs that at error level and follows the new key.
	RegistryFingerprints []wire.Fingerprint
	// Retention bounds each group's log (MaxMessages, MaxBytes, MaxAge;
	// store's defaults for zero fields: 1,000,000 messages, 256 MiB, no age
	// limit). Age is measured on the daemon's Now. DedupWindow may be
	// raised, not lowered below its default (65,536): huddle/1 promises
	// clients that many at least, and New refuses less.
	Retention store.Config
	// Storage is where the logs are kept: by default on disk, under
	// StateDir, written to the OS before each ack and fsynced every
	// second (see StorageConfig).
	Storage StorageConfig
	// MaxMessageBytes is the largest body a message may have. Default
	// 65536; at most MaxMessageBytesLimit.
	MaxMessageBytes int
	// MaxBatch is the most messages one send may carry. Default 256; at
	// most wire.MaxBatch.
	MaxBatch int
	// FetchPage is the most messages one fetch returns. Default 10000.
	FetchPage int
	// MaxMembers is the most members a group may have. Default and most
	// DefaultMaxMembers (8192).
	MaxMembers int
	// SendRate is each member's sustained send rate in messages per second:
	// its token bucket refills at this rate, and a send that finds too few
	// tokens gets CodeRateLimited with the time to wait. Default 100;
	// negative: unlimited.
	SendRate float64
	// SendBurst is the size of each member's token bucket: how many
	// messages it may send at once after being idle. Default 1000; at least
	// MaxBatch, so that every batch allowed can eventually be sent.
	SendBurst int
	// HeartbeatInterval is how long a watch may be idle before a Heartbeat
	// frame. Default 5 s.
	HeartbeatInterval time.Duration
	// Cell, if set, makes the daemon a member of a cell that replicates
	// its groups (see CellConfig). Listen must then name a fixed port.
	Cell *CellConfig
	// Server holds the QUIC server's limits and deadlines.
	Server server.Config
	// Metrics, if not nil, receives the daemon's operation timings and is
	// given collectors for its connections and groups.
	Metrics *metrics.Metrics
	// Logger receives joins, leaves, registration changes and errors,
	// never message bodies or secrets. Default: discard.
	Logger *slog.Logger
	// Now is the clock of message timestamps, join times and members'
	// presence (when each was last seen). Default time.Now.
	Now func() time.Time

	// wrap, if set, wraps the daemon's handler: tests inject faults
	// between the network and the operations with it.
	wrap func(server.Handler) server.Handler
	// slowRegistryDial, if set, is called before each dial of a
	// registry: tests make a registry slow to reach with it.
	slowRegistryDial func()
}

// Validate reports whether c is usable. Its errors wrap ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.StateDir == "":
		return invalid("group daemon StateDir is required")
	case len(c.Groups) == 0:
		return invalid("no groups to host")
	case len(c.Advertise) > wire.MaxAddrs:
		return invalid("%d advertised addresses, at most %d", len(c.Advertise), wire.MaxAddrs)
	case c.MaxMessageBytes < 0 || c.MaxMessageBytes > MaxMessageBytesLimit:
		return invalid("MaxMessageBytes %d: want 0..%d", c.MaxMessageBytes, MaxMessageBytesLimit)
	case c.MaxBatch < 0 || c.MaxBatch > wire.MaxBatch:
		return invalid("MaxBatch %d: want 0..%d", c.MaxBatch, wire.MaxBatch)
	case c.FetchPage < 0:
		return invalid("FetchPage %d is negative", c.FetchPage)
	case c.MaxMembers < 0 || c.MaxMembers > DefaultMaxMembers:
		return invalid("MaxMembers %d: want 0..%d", c.MaxMembers, DefaultMaxMembers)
	case c.SendBurst < 0:
		return invalid("SendBurst %d is negative", c.SendBurst)
	case math.IsNaN(c.SendRate) || math.IsInf(c.SendRate, 0):
		return invalid("SendRate %v is not a number of messages per second", c.SendRate)
	case c.SendRate > 0 && c.SendRate < minSendRate:
		// info reports the rate in messages per 1000 s (send_rate_milli),
		// where a smaller one rounded to 0, which says unlimited.
		return invalid("SendRate %v: want at least %v a second (the least info can report), 0 for the default %v, or negative for unlimited", c.SendRate, minSendRate, DefaultSendRate)
	case c.SendRate >= 0 && orDefault(c.SendBurst, DefaultSendBurst) < orDefault(c.MaxBatch, DefaultMaxBatch):
		return invalid("SendBurst %d is below MaxBatch %d: a full batch could never be sent", orDefault(c.SendBurst, DefaultSendBurst), orDefault(c.MaxBatch, DefaultMaxBatch))
	case c.Server.MaxRequestBytes != 0 && orDefault(c.MaxMessageBytes, DefaultMaxMessageBytes) > c.Server.MaxRequestBytes-(wire.MaxFrameSize-MaxMessageBytesLimit):
		return invalid("MaxMessageBytes %d does not fit in a request of MaxRequestBytes %d with its envelope (%d bytes)",
			orDefault(c.MaxMessageBytes, DefaultMaxMessageBytes), c.Server.MaxRequestBytes, wire.MaxFrameSize-MaxMessageBytesLimit)
	case c.HeartbeatInterval < 0:
		return invalid("negative interval or timeout")
	}
	if err := c.Server.Validate(); err != nil {
		return err
	}
	for _, a := range c.Registries {
		if strings.TrimSpace(a) == "" {
			return invalid("empty registry address")
		}
	}
	for _, a := range c.Advertise {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" || len(a) > wire.MaxAddrBytes {
			return invalid("advertised address %q: want host:port, at most %d bytes", a, wire.MaxAddrBytes)
		}
		// What registries check of a registration (wire.CheckAddr): an
		// address no one host has (0.0.0.0, multicast, broadcast) is
		// refused there since session 22, so such a daemon ran with its
		// groups never listed (until session 23).
		if err := wire.CheckAddr(a); err != nil {
			return invalid("advertised address %q: not one clients can dial (%v)", a, err)
		}
	}
	seen := make(map[string]bool)
	for _, g := range c.Groups {
		if err := wire.CheckName(g.Name); err != nil {
			return invalid("group name %q: %v", g.Name, err)
		}
		if seen[g.Name] {
			return invalid("group %q listed twice", g.Name)
		}
		seen[g.Name] = true
		if len(g.Secret) > wire.MaxSecretBytes {
			return invalid("group %q: secret of %d bytes, at most %d", g.Name, len(g.Secret), wire.MaxSecretBytes)
		}
	}
	if err := c.Storage.validate(); err != nil {
		return err
	}
	if c.Cell != nil {
		if err := c.Cell.validate(); err != nil {
			return err
		}
		if c.Storage.Memory {
			// Raft counts a member's vote and its copy of an entry on the
			// member remembering both: one that restarted empty could
			// vote twice in a term, or elect a leader that lacks an
			// acknowledged message.
			return invalid("a cell's members keep their groups on disk (--storage disk): a member that restarted empty could elect a leader without acknowledged messages")
		}
	}
	if w := c.Retention.DedupWindow; w != 0 && w < store.DefaultDedupWindow {
		// The protocol and README promise a retry under the same ID is
		// stored once within a group's last 65,536 messages at least
		// (PROTOCOL.md §3): a smaller window would make that false for
		// every client of this daemon, which cannot see it. Until session
		// 19 (K) a Go embedder could set one silently.
		return invalid("retention: dedup window %d: want 0 (the default, %d) or %d..%d: huddle/1 promises clients a group's last %d message IDs at least", w, store.DefaultDedupWindow, store.DefaultDedupWindow, store.MaxDedupWindow, store.DefaultDedupWindow)
	}
	if err := c.Retention.Validate(); err != nil {
		// Both sentinels match: the daemon's, and the store's that says why.
		return fmt.Errorf("%w: retention: %w", ErrInvalidConfig, err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.Listen = orDefault(c.Listen, DefaultListen)
	c.MaxMessageBytes = orDefault(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MaxBatch = orDefault(c.MaxBatch, DefaultMaxBatch)
	c.FetchPage = orDefault(c.FetchPage, DefaultFetchPage)
	c.MaxMembers = orDefault(c.MaxMembers, DefaultMaxMembers)
	c.HeartbeatInterval = orDefault(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.SendRate = orDefault(c.SendRate, DefaultSendRate)
	c.SendBurst = orDefault(c.SendBurst, DefaultSendBurst)
	c.Server = c.Server.WithDefaults()
	c.Logger = logger(c.Logger)
	c.Now = clock(c.Now)
	c.Storage.DataDir = orDefault(c.Storage.DataDir, c.StateDir)
	return c
}

// HostedGroup names one group a daemon hosts.
type HostedGroup struct {
	ID      wire.UUID
	Name    string
	Private bool
}

// Daemon hosts groups: their members (kept in the state directory)
// and their message logs (on disk by default, see StorageConfig). It
// registers its groups with a registry when one is configured.
type Daemon struct {
	cfg  Config
	srv  *server.Server
	life *lifecycle.Lifecycle

	mu     sync.Mutex
	id     *identity.Identity   // set by Listen
	groups map[wire.UUID]*group // set by Listen, read-only after
	order  []*group             // the groups served, in configuration order (not those whose log is broken)

	// openLog opens a group's log as the storage configuration says
	// (openStorageLog); replicated for a cell's group.
	openLog func(group wire.UUID, name string, retention store.Config, replicated bool) (Log, error)

	// deregisterWait bounds the deregistration from every registry on
	// Close (deregisterTimeout; tests lengthen it).
	deregisterWait time.Duration
	registered     atomic.Bool                   // some registry lists every group now (see Readiness)
	regs           atomic.Pointer[registrations] // set once registration runs
	// stateLog paces the log of state files that cannot be written, per
	// group: a flood of joins on a full disk must not flood the log too.
	stateLog sparse.Sampler[wire.UUID]
	// logLog does the same for logs that cannot store a send.
	logLog sparse.Sampler[wire.UUID]
	lock   *statedir.Held // the state directory's, held from Listen to Close
	// dataLock is the data directory's, when it is not the state
	// directory.
	dataLock *statedir.Held

	// A member of a cell (cfg.Cell): its node, set by Listen, and the
	// groups the cell created (cell.go); cellReady is closed once the
	// configured groups are among them. cellStarted is closed once Serve
	// has started the node, and cellWaiting once the started node has found
	// the groups missing (it waits for a leader then).
	node        *cell.Node
	host        *cellHost
	cellReady   chan struct{}
	cellStarted chan struct{}
	cellWaiting chan struct{}
	// cellChanged is closed, and replaced, each time the cell's
	// configuration changes (membersChanged): a watch of the cell's group
	// on a daemon removed from the cell ends then.
	cellMu      sync.Mutex
	cellChanged chan struct{}
	// startingNode is node while Serve starts it: Close aborts its start
	// (cell.Node.Abort) without d.mu or the node's lock.
	startingNode atomic.Pointer[cell.Node]
	// logsLeft says Close left the groups' logs to close in the background
	// (leaveLogsLocked): the cell's raft did not stop.
	logsLeft bool
	// expiring is the age-limit pass the expire loop stopped waiting for
	// when the daemon closed (it waits for a log's write lock, held by an
	// append on a disk that does not answer): closed when it returns. Set
	// before the loop returns, read by Close after it, which closes the
	// logs after it (or leaves them to, leaveLogsLocked).
	expiring chan struct{}
	// leftReleased, if set (by tests), is called once leaveLogsLocked's
	// goroutine has released the state directory.
	leftReleased func()
}

// New returns a daemon for cfg. It does no I/O; Listen or Serve
// load the state directory and bind the socket. It returns cfg.Validate's
// error.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	d := &Daemon{cfg: cfg, life: lifecycle.New(), deregisterWait: deregisterTimeout, cellChanged: make(chan struct{}),
		cellReady: make(chan struct{}), cellStarted: make(chan struct{}), cellWaiting: make(chan struct{}),
		stateLog: sparse.Sampler[wire.UUID]{Every: server.LimitLogEvery, Now: cfg.Now}, logLog: sparse.Sampler[wire.UUID]{Every: server.LimitLogEvery, Now: cfg.Now}}
	d.openLog = d.openStorageLog
	setup := server.Setup{Listen: cfg.Listen, Role: "groups", Metrics: cfg.Metrics, Logger: cfg.Logger, Now: cfg.Now}
	if cfg.Cell != nil {
		setup.Cell = cellHook{d: d}
	}
	handle := d.handle
	if cfg.wrap != nil {
		handle = cfg.wrap(handle)
	}
	d.srv = server.New(cfg.Server, setup, handle)
	cfg.Metrics.Groups(d.groupStats)
	if cfg.Cell != nil {
		cfg.Metrics.Cell(d.cellStats)
	}
	return d, nil
}

// Bind binds the UDP socket and writes nothing, so that a process running
// several daemons (huddle up) finds a port of any of them taken before one
// has created its state directory. Listen binds it if Bind did not. It
// returns ErrClosed after Close, and socket errors.
func (d *Daemon) Bind() error {
	if d.life.IsClosed() {
		return ErrClosed
	}
	if err := d.srv.Bind(); err != nil {
		return fmt.Errorf("group daemon: %w", err)
	}
	return nil
}

// Listen binds the UDP socket, then loads the state directory (the key,
// each group's UUID and members, creating what is missing), so Addr, Fingerprint
// and Groups are known before Serve. Calling it again does nothing. It
// returns ErrClosed after Close, errors wrapping ErrBadState for unusable
// state files, and identity or socket errors.
//
// Close does not wait for it past lifecycle.Wait (3 s): on a disk that does
// not answer, Listen returns ErrClosed once Close begins, and what it loads
// is released when the disk answers (releaseLoaded); the state directory
// stays locked until then.
func (d *Daemon) Listen() error {
	if err := d.life.Load(d.listen); err != nil {
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("group daemon: %w", err)
		}
		return err
	}
	return nil
}

// ListenContext is Listen, given up when ctx ends: the daemon is closed then
// (Close), and it returns ErrClosed. huddle serve calls it, so that SIGTERM
// stops a daemon starting on a disk that does not answer.
func (d *Daemon) ListenContext(ctx context.Context) error {
	return lifecycle.ListenUntil(ctx, d.Listen, d.Close)
}

// listen is Listen's loading, which lifecycle.Load runs.
func (d *Daemon) listen() error {
	if d.life.IsClosed() {
		return ErrClosed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// The socket first: a port in use refuses the daemon before it has
	// written anything (state directory, key, group identities, logs).
	if err := d.srv.Bind(); err != nil {
		return fmt.Errorf("group daemon: %w", err)
	}
	if err := d.cellKeyListed(); err != nil {
		return fmt.Errorf("group daemon: %w", err)
	}
	if d.lock == nil {
		l, err := statedir.Lock(d.cfg.StateDir)
		if err != nil {
			return fmt.Errorf("group daemon: %w", err)
		}
		d.lock = l
		if s := d.cfg.Storage; !s.Memory && filepath.Clean(s.DataDir) != filepath.Clean(d.cfg.StateDir) {
			if d.dataLock, err = statedir.Lock(s.DataDir); err != nil {
				d.releaseLocked()
				return fmt.Errorf("group daemon: data dir: %w", err)
			}
		}
	}
	if d.id == nil {
		if err := d.loadLocked(); err != nil {
			d.releaseLocked() // a daemon that did not start holds nothing
			return fmt.Errorf("group daemon: %w", err)
		}
	}
	if err := d.srv.Listen(d.id); err != nil {
		return fmt.Errorf("group daemon: %w", err)
	}
	if d.cfg.Cell != nil && d.node == nil {
		if err := d.newCellNode(); err != nil {
			return fmt.Errorf("group daemon: %w", err)
		}
	}
	return nil
}

// releaseLoaded releases what a Listen that Close went on without
// (lifecycle's StopLoads) loaded, once it has returned: the cell's node, the
// groups' logs, and then the directory locks.
func (d *Daemon) releaseLoaded() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.node != nil {
		if err := d.node.Close(); errors.Is(err, cell.ErrStuck) {
			// Raft may still write to the logs and its own: the
			// directories stay locked until it has stopped, as after
			// Close (leaveLogsLocked; until session 23 they stayed
			// locked, and the logs open, until the process exited). Raft
			// goes on once what it waits for answers: the groups it
			// then creates or restores are not opened (closing), which
			// they were until session 22, their logs never closed.
			d.leaveLogsLocked(d.host.raftStuck() + ", after a start the daemon's Close went on without: leaving the groups' logs open until it stops")
			return
		}
		for _, g := range d.host.closing() {
			d.groups[g.id] = g
		}
		d.host.opensEnded()
	}
	closeLogs(d.groups)
	d.releaseLocked()
	d.cfg.Logger.Info("the state directory's loading returned after the daemon stopped: released")
}

// releaseLocked gives up the directory locks. d.mu is held.
func (d *Daemon) releaseLocked() {
	d.lock.Release()
	d.dataLock.Release()
	d.lock, d.dataLock = nil, nil
}

func (d *Daemon) loadLocked() error {
	warn, err := checkKeyKept(d.cfg.StateDir, d.cfg.NewIdentity)
	if err != nil {
		return err
	}
	if n := removeStateTemps(d.cfg.StateDir); n > 0 {
		d.cfg.Logger.Info("removed temporary files a crash left in the state directory", "files", n)
	}
	id, err := identity.LoadOrCreate(d.cfg.StateDir)
	if err != nil {
		return err
	}
	if warn != "" {
		// With the key it is about: members need it to take the new key
		// (huddle join --daemon).
		d.cfg.Logger.Warn(warn, "fingerprint", id.Fingerprint().String())
	}
	if d.cfg.Cell != nil {
		// The cell creates the groups and opens their logs (cell.go).
		d.id, d.groups = id, make(map[wire.UUID]*group)
		return nil
	}
	names := make([]string, len(d.cfg.Groups))
	for i, g := range d.cfg.Groups {
		names[i] = g.Name
	}
	ids, err := loadGroupIDs(d.cfg.StateDir, names, d.cfg.Logger)
	if err != nil {
		return err
	}
	groups := make(map[wire.UUID]*group, len(names))
	order := make([]*group, 0, len(names))
	for _, spec := range d.cfg.Groups {
		gid := ids[spec.Name]
		records, err := loadMembers(d.cfg.StateDir, gid)
		if err != nil {
			return err
		}
		log, err := d.openLog(gid, spec.Name, d.cfg.Retention, false)
		if err != nil {
			log = nil
		}
		g := newGroup(gid, spec, log, d.cfg.StateDir, records, newRateLimiter(d.cfg.SendRate, d.cfg.SendBurst), d.cfg.Now)
		g.changed = d.countsChanged
		if err != nil {
			// This group is not served; the others are.
			g.broken = err
			logBroken(d.cfg.Logger, spec.Name, gid, d.cfg.Storage.logDir(gid), err)
		} else {
			order = append(order, g)
		}
		groups[gid] = g
	}
	if len(order) == 0 {
		closeLogs(groups)
		first := groups[ids[d.cfg.Groups[0].Name]]
		return fmt.Errorf("no group can be served: the log of each cannot be read; group %s's: %w", first.name, first.broken)
	}
	d.id, d.groups, d.order = id, groups, order
	return nil
}

// closeLogs closes the logs of groups (syncing those on disk).
func closeLogs(groups map[wire.UUID]*group) {
	for _, g := range groups {
		if g.log != nil {
			g.log.Close()
		}
	}
}

// Serve listens (if Listen was not called), registers the groups with the
// registry if one is configured, and serves until ctx ends or Close is
// called; then it shuts down as Close does and returns nil once everything
// has stopped. A cell member whose group log is behind its raft snapshot
// starts only once a peer has caught it up (package cell), serving none of
// the cell's groups meanwhile; ctx ending or Close stop that wait too. It
// returns ErrClosed after Close, ErrServing if already serving, and
// Listen's errors.
func (d *Daemon) Serve(ctx context.Context) error {
	// ctx ending while the state directory loads (which a disk that does
	// not answer holds for ever) stops the daemon too.
	if err := d.ListenContext(ctx); ctx.Err() != nil && (err == nil || errors.Is(err, ErrClosed)) {
		d.Close()
		d.cfg.Logger.Info("group daemon stopped before it started")
		return nil
	} else if err != nil {
		return err
	}
	var loops []lifecycle.Loop
	if len(d.cfg.Registries) > 0 || d.cfg.Discover {
		// Its deregistration on stopping takes up to deregisterWait.
		loops = append(loops, lifecycle.Loop{Name: "registration", Run: d.afterCellGroups(d.registerLoop), Stopping: d.deregisterWait})
	}
	if d.cfg.Retention.MaxAge > 0 {
		loops = append(loops, lifecycle.Loop{Name: "age limit", Run: d.afterCellGroups(d.expireLoop)})
	}
	if d.cfg.Cell != nil {
		loops = append(loops, lifecycle.Loop{Name: "cell groups", Run: func() { d.awaitCellGroups() }})
	}
	if err := d.life.Begin(loops...); err != nil {
		return err
	}
	if err := d.srv.Start(); err != nil {
		d.Close()
		return err
	}
	if d.node != nil {
		// A member whose group log is behind its raft snapshot waits in
		// Start until a peer can catch it up (package cell's catchUp),
		// which may take as long as its peers take to apply what the
		// snapshot covers, or to come back: ctx ending (or Close) stops
		// the daemon meanwhile.
		//
		// Start opens raft's log and restores its snapshot, opening the
		// group logs it holds: on a disk that does not answer, for ever,
		// holding the node's lock, which the node's Close waits for. So
		// it runs as a load (lifecycle.Load), which Close waits 3 s for,
		// then leaves (releaseLoaded closes what it opened once it
		// returns); until session 20 SIGTERM waited for SIGKILL there.
		d.startingNode.Store(d.node)
		stop := context.AfterFunc(ctx, func() { d.Close() })
		err := d.life.Load(d.node.Start)
		stop()
		d.startingNode.Store(nil)
		if err != nil {
			d.Close()
			if errors.Is(err, cell.ErrClosed) || errors.Is(err, ErrClosed) {
				d.cfg.Logger.Info("group daemon stopped before its cell member started")
				return nil
			}
			return fmt.Errorf("group daemon: %w", err)
		}
		close(d.cellStarted)
		d.cfg.Logger.Info("cell member started", "self", d.node.Self().String(), "peers", len(d.cfg.Cell.Peers), "join", d.cfg.Cell.Join)
	}
	// A cell's groups are logged as its member opens them (cellHost's
	// OpenGroup), once each: this daemon's list of them is set later, by
	// awaitCellGroups.
	if d.node == nil {
		d.mu.Lock()
		order := d.order
		d.mu.Unlock()
		for _, g := range order {
			d.cfg.Logger.Info("hosting group", "group", g.name, "uuid", g.id, "epoch", g.epoch(), "private", g.private(), "members", g.memberCount())
		}
	}
	d.cfg.Logger.Info("message storage", "storage", d.cfg.Storage.String())
	d.cfg.Logger.Info("group daemon serving", "addr", d.Addr().String(), "fingerprint", d.Fingerprint().String())
	d.life.Wait(ctx, d.Close)
	d.cfg.Logger.Info("group daemon stopped")
	return nil
}

// Close deregisters the groups (bounded by a short timeout), stops the
// daemon (see the package comment for the order) and waits for every
// goroutine it started. It is safe to call more than once; every call
// returns nil once shutdown has finished.
func (d *Daemon) Close() error {
	// First, without d.mu, which a Listen stuck in the disk holds: a
	// cell member's node starting (Serve) stops waiting for peers; then
	// the loads (Listen, the node's Start) get 3 s.
	if node := d.startingNode.Load(); node != nil {
		node.Abort()
	}
	if left, first := d.life.StopLoads(d.releaseLoaded); left {
		if first {
			d.cfg.Logger.Error("the state directory's loading did not return (a disk that does not answer?): stopping without it; what it holds (the state directory's lock) is released when it returns", "waited", lifecycle.Wait)
		}
		d.life.Close(d.srv.Close)
		return nil
	}
	d.mu.Lock()
	node := d.node
	d.mu.Unlock()
	if node != nil {
		select {
		case <-d.cellStarted:
			// While still serving: the sends refused meanwhile name the
			// new leader, and the cell need not wait out an election; and
			// so do the refusals of the shutdown itself.
			ctx, cancel := context.WithTimeout(context.Background(), handoverWait)
			if err := node.Handover(ctx); err == nil {
				if l, ok := node.Leader(); ok && l != node.Self() {
					d.srv.NameLeader(leaderHint(l))
				}
			}
			cancel()
		default:
			// Not started, or Serve's Start waits for a peer to catch a
			// group log up from: closing the node ends that wait (and
			// Serve returns).
			node.Close()
		}
	}
	loopsLeft := d.life.Close(d.srv.Close)
	d.mu.Lock()
	defer d.mu.Unlock()
	if loopsLeft != nil && !d.logsLeft {
		// The registration loop did not stop: it may read the logs. None
		// of the loops waits on the disk (the age-limit loop leaves its
		// pass, expiring, and registration waits on the network, its
		// deregistration bounded by deregisterWait, which Close waits
		// for besides): until session 21 this blamed the disk.
		d.leaveLogsLocked("the daemon's own goroutines did not stop in time (the machine overloaded, or a registry slow to answer: not the disk, which they do not wait on): stopping without closing the groups' logs, which they may read; a restart recovers what they stored",
			"running", loopsLeft, "waited", d.life.Bound())
	}
	if d.node != nil {
		// After the server (no handler waits on the cell now); before the
		// logs, which the cell's state machine applies to.
		if err := d.node.Close(); errors.Is(err, cell.ErrStuck) && !d.logsLeft {
			d.leaveLogsLocked(d.host.raftStuck() + ": stopping without closing the groups' logs; a restart recovers them from raft's log")
		}
		if d.logsLeft {
			return nil
		}
		for _, g := range d.host.closing() {
			d.groups[g.id] = g
		}
		d.host.opensEnded() // raft has stopped: none is under way, but for a test's call
	}
	if d.srv.Stuck() && !d.logsLeft {
		// A handler is still in a group's log (a send whose append never
		// returns): closing the logs would wait for it. A cell member's
		// handler waits on the cell's raft only within the cell's bounds
		// (a send not committed within CommitWait is answered
		// unavailable: TestCloseNamesRaftInALogWrite), and on the network
		// only until the server closed the connections.
		why := "a request did not return (in a group's log or its members file: a disk that does not answer?)"
		if d.node != nil {
			why = "a request did not return (not waiting on the cell's raft, which answers within its bounds: in a group log's read, a disk that does not answer?)"
		}
		d.leaveLogsLocked(why + ": stopping without closing the groups' logs; a restart recovers what they stored")
	}
	if d.logsLeft {
		return nil
	}
	if d.expiring != nil && !d.logsLeft {
		// It uses the logs too. Stuck in the disk itself (the deletion
		// of an old segment on a disk that does not answer), it held the
		// stop for ever until session 20: it gets as long as the server
		// gives its stuck handlers.
		t := time.NewTimer(expiringWait)
		select {
		case <-d.expiring:
		case <-t.C:
			d.leaveLogsLocked("an age-limit pass did not return (a disk that does not answer?): stopping without closing the groups' logs; a restart recovers what they stored")
		}
		t.Stop()
	}
	if d.logsLeft {
		return nil
	}
	closeLogs(d.groups) // after the server: no handler uses them now
	d.releaseLocked()
	return nil
}

// leaveLogsLocked closes the groups' logs, and then releases the state
// directory, in a goroutine of its own that Close does not wait for: the
// cell's raft did not stop (cell.ErrStuck), its state machine being in an
// append to one of them that has not returned (a disk that does not
// answer), or, a group hosted alone, the server left a send handler in
// such an append (server.Stuck); that log's Close waits for the append.
// Close waited for it, for ever on such a disk, until session 19: now the
// daemon stops, and the logs are left as a crash leaves them, which a
// restart recovers (raft replays into the group logs what they lost; a
// lone group's log recovers what it wrote). The directories stay locked
// until the logs are closed and the cell's raft has stopped
// (cell.Node.Stopped), if ever (the process's exit releases them): no
// other daemon opens a log this process may still write. Until session
// 23 a raft stuck outside the group logs (its own log's write or fsync,
// the daemon's OpenGroup) had the directory released while it could
// still write there (raft's log closes, and syncs, once raft stops). The
// daemon's node must be closed (Close) or about to be. why is logged,
// with args. d.mu is held.
func (d *Daemon) leaveLogsLocked(why string, args ...any) {
	d.logsLeft = true
	groups := maps.Clone(d.groups)
	if d.host != nil {
		for _, g := range d.host.closing() {
			groups[g.id] = g
		}
	}
	lock, dataLock := d.lock, d.dataLock
	d.lock, d.dataLock = nil, nil
	d.cfg.Logger.Error(why, args...)
	stopped, loops := d.srv.Stopped(), d.life.Stopped()
	host, node, released := d.host, d.node, d.leftReleased
	go func() {
		if node != nil {
			<-node.Stopped() // raft, stuck, writes to the group logs and its own until it stops
		}
		if host != nil {
			host.opensEnded() // raft, stuck, may be in one
		}
		<-stopped // the handlers the server left, if any, use the logs
		<-loops   // and the daemon's own goroutines
		// And so does an age-limit pass left. The expire loop sets
		// d.expiring as it stops: read once it has (loops), as Close
		// may have gone on without it (lifecycle's Close, stuck); read
		// before, it was a data race (TestCloseLeavesLoopsAndExpiring).
		if d.expiring != nil {
			<-d.expiring
		}
		closeLogs(groups)
		lock.Release()
		dataLock.Release()
		if released != nil {
			released()
		}
	}()
}

// Addr returns the address the daemon listens on, or nil before it does.
func (d *Daemon) Addr() net.Addr { return d.srv.Addr() }

// Fingerprint returns the daemon's fingerprint (what clients pin), or zero
// before Listen.
func (d *Daemon) Fingerprint() wire.Fingerprint {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id == nil {
		return wire.Fingerprint{}
	}
	return d.id.Fingerprint()
}

// Groups returns the hosted groups in configuration order, or nil before
// Listen.
func (d *Daemon) Groups() []HostedGroup {
	d.mu.Lock()
	defer d.mu.Unlock()
	var hs []HostedGroup
	for _, g := range d.order {
		hs = append(hs, HostedGroup{ID: g.id, Name: g.name, Private: g.private()})
	}
	return hs
}

// expiringWait is how long Close waits for an age-limit pass that was under
// way when the daemon closed (expiring) before it leaves the logs
// (leaveLogsLocked): as long as the server waits for its stuck handlers
// (server's stuckWait), so that a pass stuck in a disk that does not answer
// keeps the stop within systemd's 15 s.
const expiringWait = 3 * time.Second

// expireLoop applies the age limit to idle logs (expire).
func (d *Daemon) expireLoop() {
	t := time.NewTicker(min(max(d.cfg.Retention.MaxAge/8, 10*time.Millisecond), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-d.life.Ctx().Done():
			return
		case <-t.C:
			// In a goroutine of its own, so that closing the daemon does
			// not wait for a pass stuck behind a hung disk: Close waits
			// for it as for the logs (expiring).
			done := make(chan struct{})
			go func() {
				defer close(done)
				d.expire(d.cfg.Now())
			}()
			select {
			case <-done:
			case <-d.life.Ctx().Done():
				d.expiring = done
				return
			}
		}
	}
}

// expire applies the age limit as of now to the logs of the groups this
// daemon hosts alone. A cell's groups are left to their appends, which
// apply it as of the newest message, the leader's stamp: by each member's
// own clock, a member whose clock runs ahead would drop messages the
// others keep, so that the members' copies differ, and, restarted, its
// dedup window (rebuilt from what it kept) would miss IDs the cell
// acknowledged, which it would store again as the cell's leader.
func (d *Daemon) expire(now time.Time) {
	for _, g := range d.order {
		if g.cell == nil {
			g.log.Expire(now)
		}
	}
}

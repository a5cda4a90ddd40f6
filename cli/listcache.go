package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// listCacheFile, in $HUDDLE_HOME, holds the last good listing: the
// registries that answered (so the next command asks them at once, without
// waiting for mDNS) and the groups they listed (so commands still resolve
// group names while every registry is restarting). It is a cache: a file
// that cannot be read is ignored with a warning, and rewritten.
const listCacheFile = "listing.json"

// listCacheVersion is the cache's format; a file of another is ignored.
const listCacheVersion = 1

// listCache is the content of listCacheFile.
type listCache struct {
	Version int       `json:"version"`
	Scope   string    `json:"scope"` // the registries given ("" when found), so a listing stands in only for the same ones
	Saved   time.Time `json:"saved"`
	// Registries are those that answered, to ask first next time.
	Registries []cachedRegistry `json:"registries"`
	Groups     []cachedGroup    `json:"groups"`
}

type cachedRegistry struct {
	Name        string           `json:"name"` // its address or mdns:INSTANCE, as pinned
	Addr        string           `json:"addr"`
	Iface       string           `json:"iface,omitempty"`
	Fingerprint wire.Fingerprint `json:"fingerprint"`
}

type cachedGroup struct {
	UUID        wire.UUID          `json:"uuid"`
	Name        string             `json:"name"`
	Addrs       []string           `json:"addrs"`
	Fingerprint wire.Fingerprint   `json:"fingerprint"`
	Members     uint64             `json:"members"`
	LastSeq     uint64             `json:"last_seq"`
	ListedBy    []wire.Fingerprint `json:"listed_by"`
	OtherNames  []string           `json:"other_names,omitempty"`
	// Replicas and MemberAddrs, for a cell's group: its members, and the
	// addresses registries list each at. Until session 15 the cache kept
	// a cell's group as a group of one daemon, its leader of the day: a
	// command run while no registry answered knew none of its other
	// members, and with that leader down could not reach the group.
	Replicas    []cachedReplica               `json:"replicas,omitempty"`
	MemberAddrs map[wire.Fingerprint][]string `json:"member_addrs,omitempty"`
}

type cachedReplica struct {
	Addr        string           `json:"addr"`
	Fingerprint wire.Fingerprint `json:"fingerprint"`
	Leader      bool             `json:"leader,omitempty"`
}

// scopeOf names the set of registries given (empty: found by the client).
func scopeOf(given []string) string {
	s := slices.Clone(given)
	slices.Sort(s)
	return strings.Join(s, ",")
}

// loadListCache reads the cache in dir for scope. It returns nil, nil when
// there is none (or one of another scope or format), and an error when the
// file cannot be read as a cache.
func loadListCache(dir, scope string) (*listCache, error) {
	b, err := lockfile.ReadFile(filepath.Join(dir, listCacheFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c listCache
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, listCacheFile), err)
	}
	if c.Version != listCacheVersion || c.Scope != scope || c.Saved.IsZero() {
		return nil, nil
	}
	return &c, nil
}

// groups returns the cached groups as a listing's.
func (c *listCache) groups() []client.ListedGroup {
	out := make([]client.ListedGroup, len(c.Groups))
	for i, g := range c.Groups {
		out[i] = client.ListedGroup{
			GroupEntry:  wire.GroupEntry{Group: g.UUID, Name: g.Name, Addrs: g.Addrs, Fingerprint: g.Fingerprint, Members: g.Members, LastSeq: g.LastSeq},
			ListedBy:    g.ListedBy,
			OtherNames:  g.OtherNames,
			MemberAddrs: g.MemberAddrs,
		}
		for _, r := range g.Replicas {
			out[i].Replicas = append(out[i].Replicas, wire.Replica{Addr: r.Addr, Fingerprint: r.Fingerprint, Leader: r.Leader})
		}
	}
	return out
}

// saveListCache replaces the cache in dir with l, atomically (a temporary
// file renamed over it), readable by the user only.
func saveListCache(dir, scope string, l *listing) error {
	c := listCache{Version: listCacheVersion, Scope: scope, Saved: time.Now().UTC()}
	for _, r := range l.reports {
		if r.err != nil || r.same || r.fp.IsZero() {
			continue
		}
		c.Registries = append(c.Registries, cachedRegistry{Name: r.name, Addr: r.addr, Iface: r.iface, Fingerprint: r.fp})
	}
	for _, g := range l.groups {
		cg := cachedGroup{UUID: g.Group, Name: g.Name, Addrs: g.Addrs, Fingerprint: g.Fingerprint,
			Members: g.Members, LastSeq: g.LastSeq, ListedBy: g.ListedBy, OtherNames: g.OtherNames, MemberAddrs: g.MemberAddrs}
		for _, r := range g.Replicas {
			cg.Replicas = append(cg.Replicas, cachedReplica{Addr: r.Addr, Fingerprint: r.Fingerprint, Leader: r.Leader})
		}
		c.Groups = append(c.Groups, cg)
	}
	return writeListCache(dir, &c)
}

// forgetCachedRegistry drops the registry pinned as name (its address, or
// mdns:INSTANCE) from the cache in dir, whatever its scope: the cache
// keeps each registry's key, and asks it under that key, so a registry
// whose pin was forgotten (huddle forget-registry) would be asked under
// its old key again and reported not answering. A cache that cannot be
// read is left to the next command (which warns and rewrites it).
func forgetCachedRegistry(dir, name string) error {
	b, err := lockfile.ReadFile(filepath.Join(dir, listCacheFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var c listCache
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	n := len(c.Registries)
	c.Registries = slices.DeleteFunc(c.Registries, func(r cachedRegistry) bool { return r.Name == name || r.Addr == name })
	if len(c.Registries) == n {
		return nil
	}
	return writeListCache(dir, &c)
}

// writeListCache replaces the cache in dir with c, readable by the user
// only, whole: the file synced before it is renamed over the old one, the
// directory not (lockfile.ReplaceWhole). A cache may be lost, the old one
// back after a crash, but never torn: renamed unsynced (until session 17),
// a power cut could leave an empty or zero-filled file, ignored with a
// warning by every command until a listing rewrote it, and no listing to
// stand in while the registries restarted, as after such a cut they may.
func writeListCache(dir string, c *listCache) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return lockfile.ReplaceWhole(filepath.Join(dir, listCacheFile), append(b, '\n'), 0o600)
}

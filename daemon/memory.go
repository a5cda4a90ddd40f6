package daemon

import (
	"github.com/huddle-chat/huddle/store"
)

// What a daemon may use at most: what its peers can make its server hold
// (server.Config.PeerMemory), and its own, from these costs, measured on
// the reference daemons (BENCHMARKS.md, SECURITY.md):
const (
	// baseMemory is the process at rest, with its code, runtime and
	// pools.
	baseMemory = 64 << 20
	// messageMemory bounds what the log holds for a message besides its
	// body: its index entry (time, ID, where the body is) and its sender.
	// 33-35 B measured (store's BenchmarkOverhead); 259 B when every
	// message comes from a sender, or a name, of its own, which a member
	// renaming itself before each message can make so (SECURITY.md,
	// "Senders in the log").
	messageMemory = 264
	// dedupMemory is a log's dedup window at its default, full.
	dedupMemory = 4 << 20
)

// Memory is the most memory a daemon may use, by its configuration.
type Memory struct {
	// Base is the process at rest.
	Base int64
	// Peers is the most that all its peers together can make it hold.
	Peers int64
	// PerAddr is the most that one source address (an IPv4 address or an
	// IPv6 /64) can make it hold, with any number of keys; a key, from any
	// number of addresses, can make it hold no more.
	PerAddr int64
	// Retained is its groups' logs, full (0 for a registry; a registry's
	// leases are within Base).
	Retained int64
}

// Total is the most the daemon uses: Base + Peers + Retained. Garbage
// the runtime has not collected yet comes on top, within the memory limit
// that huddle's daemons set from this total (debug.SetMemoryLimit).
func (m Memory) Total() int64 { return m.Base + m.Peers + m.Retained }

// Memory returns the most memory a group daemon with this configuration
// may use: its peers' and its groups' logs at full retention.
func (c GroupConfig) Memory() Memory {
	all, perAddr := c.Server.PeerMemory()
	r := c.Retention
	perGroup := orDefault(r.MaxBytes, store.DefaultMaxBytes) + int64(orDefault(r.MaxMessages, store.DefaultMaxMessages))*messageMemory + dedupMemory
	return Memory{Base: baseMemory, Peers: all, PerAddr: perAddr, Retained: int64(len(c.Groups)) * perGroup}
}

// Memory returns the most memory a registry with this configuration may
// use.
func (c RegistryConfig) Memory() Memory {
	all, perAddr := c.Server.PeerMemory()
	return Memory{Base: baseMemory, Peers: all, PerAddr: perAddr}
}

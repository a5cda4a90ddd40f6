package daemon

import (
	"runtime/debug"
	"time"

	"github.com/huddle-chat/huddle/store"
)

// What a daemon may use at most.
//
// Everything a peer can make a server hold is bounded (shares.go, and the
// connection limits): connections, operations, request memory and reply
// memory, per source address and in all. A group daemon also holds its
// groups' logs, bounded by retention. Memory adds them up for a
// configuration, from these costs, measured on the reference daemons
// (BENCHMARKS.md, SECURITY.md):
const (
	// connMemory is an open connection: quic-go's and crypto/tls's state
	// and the server's goroutines for it (76-84 KB measured idle).
	connMemory = 96 << 10
	// opMemory is an operation: its goroutine's stack, its call, quic-go's
	// stream, and what a stalled request makes quic-go buffer for it (its
	// first 16 KiB window, in packet buffers: about 20 KiB).
	opMemory = 40 << 10
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

// peerMemory is what a server's peers can make it hold, in all and from
// one address.
func peerMemory(c ServerConfig) (all, perAddr int64) {
	c = c.withDefaults()
	l := sharesFor(c)
	all = int64(c.MaxConns)*connMemory + int64(l.total[resOps])*opMemory +
		int64(l.total[resRequest]) + int64(l.total[resReply])
	perAddr = int64(min(c.MaxConnsPerAddr, c.MaxConns))*connMemory + int64(l.addr[resOps])*opMemory +
		int64(l.addr[resRequest]) + int64(l.addr[resReply])
	return all, min(all, perAddr)
}

// Memory returns the most memory a group daemon with this configuration
// may use: its peers' and its groups' logs at full retention.
func (c GroupConfig) Memory() Memory {
	all, perAddr := peerMemory(c.ServerConfig)
	r := c.Retention
	perGroup := orDefault(r.MaxBytes, store.DefaultMaxBytes) + int64(orDefault(r.MaxMessages, store.DefaultMaxMessages))*messageMemory + dedupMemory
	return Memory{Base: baseMemory, Peers: all, PerAddr: perAddr, Retained: int64(len(c.Groups)) * perGroup}
}

// Memory returns the most memory a registry with this configuration may
// use.
func (c RegistryConfig) Memory() Memory {
	all, perAddr := peerMemory(c.ServerConfig)
	return Memory{Base: baseMemory, Peers: all, PerAddr: perAddr}
}

// Giving memory back after a burst.
//
// After an attack (or a burst of honest load) ends, what it made the
// server allocate is garbage, but the runtime collects it only when
// something allocates enough to reach the heap's goal, which was set high
// during the burst, or at its forced collection every two minutes: the
// daemons sat 170-270 MiB above their baseline for minutes (issue 15.3).
// So each server watches what its peers hold (the same counts Memory adds
// up) and, when that has dropped by reclaimDrop from its peak, collects
// and returns the freed memory to the system at once.
const (
	reclaimEvery = 5 * time.Second
	reclaimDrop  = 32 << 20
)

// load returns what the server's peers hold now, in the units of Memory,
// and the most they held since the last call (the shares and the accept
// loop keep the high-water marks: a burst between two looks counts).
func (s *server) load() (now, peak int64) {
	s.mu.Lock()
	conns, peakConns := len(s.conns), s.peakConns
	s.peakConns = conns
	s.mu.Unlock()
	s.shares.mu.Lock()
	held, peakHeld := s.shares.held, s.shares.peak
	s.shares.peak = s.shares.heldBytesLocked()
	s.shares.mu.Unlock()
	now = int64(conns)*connMemory + int64(held[resOps])*opMemory + int64(held[resRequest]) + int64(held[resReply])
	return now, int64(peakConns)*connMemory + peakHeld
}

// heldBytesLocked is what the shares count, in bytes of Memory. s.mu is
// held.
func (s *shares) heldBytesLocked() int64 {
	return int64(s.held[resOps])*opMemory + int64(s.held[resRequest]) + int64(s.held[resReply])
}

// reclaimLoop returns memory to the system after the peers' load has
// dropped, until shutdown begins.
func (s *server) reclaimLoop() {
	defer s.connWG.Done()
	t := time.NewTicker(reclaimEvery)
	defer t.Stop()
	var peak int64
	for {
		select {
		case <-s.stopping:
			return
		case <-t.C:
		}
		load, seen := s.load()
		peak = max(peak, seen)
		if peak-load >= reclaimDrop {
			s.cfg.log.Debug("peers let go of memory: returning it to the system", "from_mib", peak>>20, "to_mib", load>>20)
			debug.FreeOSMemory()
			peak = load
		}
	}
}

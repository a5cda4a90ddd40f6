package server

import (
	"runtime/debug"
	"time"
)

// What a server's peers can make it hold.
//
// Everything a peer can make a server hold is bounded (shares.go, and the
// connection limits): connections, operations, request memory and reply
// memory, per source address and in all. PeerMemory adds them up for a
// configuration, from these costs, measured on the reference daemons
// (BENCHMARKS.md, SECURITY.md); the daemons add their own (their process
// at rest, their groups' logs) to it.
const (
	// connMemory is an open connection: quic-go's and crypto/tls's state
	// and the server's goroutines for it (76-84 KB measured idle).
	connMemory = 96 << 10
	// opMemory is an operation: its goroutine's stack, its call, quic-go's
	// stream, and what a stalled request makes quic-go buffer for it (its
	// first 16 KiB window, in packet buffers: about 20 KiB).
	opMemory = 40 << 10
)

// baseMemory is a daemon's process at rest, with its code, runtime and
// pools.
const baseMemory = 64 << 20

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
	// Retained is what the daemon keeps of its own: its groups' logs,
	// full (0 for a registry; a registry's leases are within Base).
	Retained int64
}

// Total is the most the daemon uses: Base + Peers + Retained. Garbage
// the runtime has not collected yet comes on top, within the memory limit
// that huddle's daemons set from this total (debug.SetMemoryLimit).
func (m Memory) Total() int64 { return m.Base + m.Peers + m.Retained }

// Memory returns the most memory a daemon with a server of this
// configuration may use, when it retains at most retained bytes of its
// own.
func (c Config) Memory(retained int64) Memory {
	all, perAddr := c.PeerMemory()
	return Memory{Base: baseMemory, Peers: all, PerAddr: perAddr, Retained: retained}
}

// PeerMemory returns the most memory that a server of this configuration
// can be made to hold by all its peers together, and by one source address
// (an IPv4 address or an IPv6 /64) with any number of keys; a key, from
// any number of addresses, can make it hold no more than an address.
func (c Config) PeerMemory() (all, perAddr int64) {
	c = c.WithDefaults()
	l := c.Bounds().limits()
	all = int64(c.MaxConns)*connMemory + int64(l.total[resOps])*opMemory +
		int64(l.total[resRequest]) + int64(l.total[resReply])
	perAddr = int64(min(c.MaxConnsPerAddr, c.MaxConns))*connMemory + int64(l.addr[resOps])*opMemory +
		int64(l.addr[resRequest]) + int64(l.addr[resReply])
	return all, min(all, perAddr)
}

// Giving memory back after a burst.
//
// After an attack (or a burst of honest load) ends, what it made the
// server allocate is garbage, but the runtime collects it only when
// something allocates enough to reach the heap's goal, which was set high
// during the burst, or at its forced collection every two minutes: the
// daemons sat 170-270 MiB above their baseline for minutes (issue 15.3).
// So each server watches what its peers hold (the same counts PeerMemory
// adds up) and, when that has dropped by reclaimDrop from its peak,
// collects and returns the freed memory to the system at once.
const (
	reclaimEvery = 5 * time.Second
	reclaimDrop  = 32 << 20
)

// load returns what the server's peers hold now, in the units of
// PeerMemory, and the most they held since the last call (the shares and
// the accept loop keep the high-water marks: a burst between two looks
// counts).
func (s *Server) load() (now, peak int64) {
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

// heldBytesLocked is what the shares count, in bytes of PeerMemory. s.mu
// is held.
func (s *shares) heldBytesLocked() int64 {
	return int64(s.held[resOps])*opMemory + int64(s.held[resRequest]) + int64(s.held[resReply])
}

// reclaimLoop returns memory to the system after the peers' load has
// dropped, until shutdown begins.
func (s *Server) reclaimLoop() {
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
			s.setup.Logger.Debug("peers let go of memory: returning it to the system", "from_mib", peak>>20, "to_mib", load>>20)
			debug.FreeOSMemory()
			peak = load
		}
	}
}

package client

import (
	"math"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Info describes a group, its log and the limits its daemon enforces.
type Info struct {
	Group UUID   // the group's UUID
	Name  string // its name
	// Daemon is the fingerprint of the daemon that hosts the group.
	Daemon Fingerprint
	// Epoch is the log's identity: sequence numbers of another epoch are
	// unrelated (see ErrEpochMismatch).
	Epoch uint64
	// First is the first sequence number the group still holds, Last the
	// last one assigned (0: none yet).
	First, Last uint64
	Members     uint64 // how many keys are members
	Limits      Limits // what the daemon enforces
	Private     bool   // joining takes the group's secret
	Member      bool   // the asking key is a member
	// Storage is where the daemon keeps the log: "memory" or "disk" (""
	// from a daemon that does not say). A disk log's Fsync policy is
	// "always" or "interval", the latter every FsyncInterval.
	Storage       string
	Fsync         string
	FsyncInterval time.Duration
	// Replicas, for a group replicated by a cell, are the cell's members,
	// the leader marked; nil for a group of one daemon.
	Replicas []Replica
	// SendAfter: the daemon checks a retry's position (SendMessagesAfter,
	// PROTOCOL.md §8.5), refusing ErrWindowPassed a retry whose earlier
	// copy its dedup window may have forgotten, so that every retry of a
	// message in doubt is stored once at most. False from a daemon older
	// than session 21, which ignores the position.
	SendAfter bool
}

// Where a daemon keeps a group's log (Info.Storage), and a disk log's
// fsync policy (Info.Fsync).
const (
	StorageMemory = wire.StorageMemory
	StorageDisk   = wire.StorageDisk
	FsyncAlways   = wire.FsyncAlways
	FsyncInterval = wire.FsyncInterval
)

// Limits are a group's limits as its daemon enforces them. For the
// retention fields and SendRate zero means no limit; for the connection
// fields (MaxFrameBytes to IdleTimeout) zero means the daemon did not say.
type Limits struct {
	MaxMessageBytes uint64        // largest message body
	MaxBatch        uint64        // most messages in one send
	MaxMessages     uint64        // retention: messages kept
	MaxBytes        uint64        // retention: bytes of bodies kept
	MaxAge          time.Duration // retention: age of the oldest message kept
	FetchPage       uint64        // messages in one page of a fetch
	MaxMembers      uint64        // most members the group takes (Join then says ErrUnavailable)
	// SendRate is each member's sustained send rate in messages per
	// second; SendBurst how many it may send at once after being idle.
	SendRate  float64
	SendBurst uint64
	// Heartbeat is how often a watch hears from the daemon when the group
	// is quiet.
	Heartbeat time.Duration
	// MaxFrameBytes is the largest request the daemon reads; MaxStreams how
	// many operations one connection may have open at once;
	// MaxConnsPerAddr how many connections one source address (an IPv4
	// address, or an IPv6 /64) may have open.
	MaxFrameBytes   uint64
	MaxStreams      uint64
	MaxConnsPerAddr uint64
	// RequestTimeout is how long a client has to deliver a whole request;
	// IdleTimeout how long a connection may be silent before the daemon
	// drops it.
	RequestTimeout time.Duration
	IdleTimeout    time.Duration
}

// ms is v milliseconds from a daemon, held to the longest Duration (292
// years) past it: converted as it came, 2^62 ms (a retention of 146
// million years) wrapped to some hours, and 2^64-1 to -1 ms, so that huddle
// info showed a daemon's limits shorter than it said, or none.
func ms(v uint64) time.Duration {
	if v > uint64(math.MaxInt64/time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(v) * time.Millisecond
}

func infoFrom(in *wire.Info) Info {
	l := &in.Limits
	return Info{
		Group: in.Group, Name: in.Name, Daemon: in.Fingerprint, Epoch: in.Epoch,
		First: in.First, Last: in.Last, Members: in.Members, Private: in.Private, Member: in.Member,
		Storage: in.Storage, Fsync: in.Fsync, FsyncInterval: ms(in.FsyncIntervalMS), Replicas: in.Replicas, SendAfter: in.SendAfter,
		Limits: Limits{
			MaxMessageBytes: l.MaxMessageBytes, MaxBatch: l.MaxBatch,
			MaxMessages: l.MaxMessages, MaxBytes: l.MaxBytes, MaxAge: ms(l.MaxAgeMS),
			FetchPage: l.FetchPage, MaxMembers: l.MaxMembers,
			SendRate: float64(l.SendRateMilli) / 1000, SendBurst: l.SendBurst,
			Heartbeat:     ms(l.HeartbeatMS),
			MaxFrameBytes: l.MaxFrameBytes, MaxStreams: l.MaxStreams, MaxConnsPerAddr: l.MaxConnsPerAddr,
			RequestTimeout: ms(l.RequestTimeoutMS), IdleTimeout: ms(l.IdleTimeoutMS),
		},
	}
}

// Joined is the result of Join: the log's epoch and last sequence number
// at the time (a watch from Last misses nothing sent after joining), and
// whether the key was a member already (joining again updates its name).
type Joined struct {
	Epoch   uint64 // the log's epoch
	Last    uint64 // the last sequence number assigned (0: none yet)
	Already bool   // the key was a member already
}

// Member is one member of a group, with its presence.
type Member struct {
	Fingerprint Fingerprint // the member's key: its ID
	Name        string      // its display name
	Joined      time.Time   // when it first joined
	// Online reports a watch on the group open now; LastSeen is when the
	// daemon last saw the member (zero: not since the daemon started, or a
	// daemon too old to say).
	Online   bool
	LastSeen time.Time
}

func memberFrom(m *wire.Member) Member {
	out := Member{Fingerprint: m.Fingerprint, Name: m.Name, Joined: time.Unix(0, m.Joined), Online: m.Online}
	if m.LastSeen != 0 {
		out.LastSeen = time.Unix(0, m.LastSeen)
	}
	return out
}

// Outgoing is one message of SendMessages: its body, and the ID that
// makes sending it again harmless (NewID).
type Outgoing struct {
	ID   ID     // the message's ID: not zero, never reused (NewID)
	Body []byte // the message (at most Limits.MaxMessageBytes)
}

package wire

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Op names an operation; it is key 0 of a request frame.
type Op uint16

// Operations. Their numbers are part of the protocol: registry operations
// are below 16, group operations from 16.
const (
	OpRegister   Op = 1
	OpRenew      Op = 2
	OpDeregister Op = 3
	OpList       Op = 4

	OpInfo    Op = 16
	OpJoin    Op = 17
	OpLeave   Op = 18
	OpMembers Op = 19
	OpSend    Op = 20
	OpFetch   Op = 21
	OpWatch   Op = 22
)

// String returns the operation's protocol name.
func (o Op) String() string {
	switch o {
	case OpRegister:
		return "register"
	case OpRenew:
		return "renew"
	case OpDeregister:
		return "deregister"
	case OpList:
		return "list"
	case OpInfo:
		return "info"
	case OpJoin:
		return "join"
	case OpLeave:
		return "leave"
	case OpMembers:
		return "members"
	case OpSend:
		return "send"
	case OpFetch:
		return "fetch"
	case OpWatch:
		return "watch"
	case OpCellStatus:
		return "cell_status"
	case OpCellAdd:
		return "cell_add"
	case OpCellRemove:
		return "cell_remove"
	}
	return fmt.Sprintf("op_%d", uint16(o))
}

// Kind names a response frame; it is key 0 of a response frame.
type Kind uint16

// Response frame kinds. Their numbers are part of the protocol.
const (
	KindResult    Kind = 1 // the one reply of a single-reply operation
	KindError     Kind = 2 // an Error; always the last frame on its stream
	KindMessages  Kind = 3 // a batch of messages (fetch, watch)
	KindEnd       Kind = 4 // the end of a fetch, with its cursor
	KindHeartbeat Kind = 5 // a watch is idle but alive
	KindGap       Kind = 6 // a watch skipped messages retention dropped
	KindStart     Kind = 7 // the first frame of a watch
)

// Protocol limits on fields. A daemon may set lower limits of its own (see
// Limits); these are the most any huddle/1 peer accepts.
const (
	MaxNameBytes   = 64   // a group's or a member's display name, UTF-8
	MaxAddrs       = 16   // addresses in a registration
	MaxAddrBytes   = 64   // one "host:port" address
	MaxBatch       = 1024 // messages in one send
	MaxSecretBytes = 256  // a private group's join secret
)

// Register asks the registry to list a group and starts its lease. The
// group daemon's fingerprint is the one on the connection, never a field.
//
//	{1: group uuid, 2: name, 3: addrs [text], 4: port uint, 5: members uint, 6: last_seq uint,
//	 7: replicas [Replica]}
//
// Addrs are "host:port" strings clients should dial; when empty the registry
// lists the connection's source address with Port.
type Register struct {
	Group   UUID     `cbor:"1,keyasint"`
	Name    string   `cbor:"2,keyasint"`
	Addrs   []string `cbor:"3,keyasint,omitempty"`
	Port    uint16   `cbor:"4,keyasint,omitempty"`
	Members uint64   `cbor:"5,keyasint,omitempty"`
	LastSeq uint64   `cbor:"6,keyasint,omitempty"`
	// Replicas, from a member of a cell, are the cell's members, the
	// leader marked; every member registers the group, and the registry
	// lists it once (PROTOCOL.md §13). One of them must be the
	// registering daemon's key.
	Replicas []Replica `cbor:"7,keyasint,omitempty"`
	// LogEpoch is the epoch of the group's log (PROTOCOL.md §8), which
	// LastSeq counts in: the registry keeps the listed last_seq from
	// going back while registrations name the same epoch (§7.1). Zero:
	// not said (daemons before session 21).
	LogEpoch uint64 `cbor:"8,keyasint,omitempty"`
}

func (r *Register) check() error {
	if err := checkReplicas(r.Replicas); err != nil {
		return err
	}
	if err := requireGroup(r.Group); err != nil {
		return err
	}
	if err := checkName("group name", r.Name); err != nil {
		return err
	}
	if len(r.Addrs) > MaxAddrs {
		return fmt.Errorf("%d addresses, at most %d: %w", len(r.Addrs), MaxAddrs, ErrTooLarge)
	}
	if err := checkAddrs("address", r.Addrs); err != nil {
		return err
	}
	if len(r.Addrs) == 0 && r.Port == 0 {
		return errors.New("neither addrs nor port")
	}
	return nil
}

// Lease is the result of register and renew.
//
//	{1: epoch uint, 2: ttl_ms uint}
//
// Epoch is the registry's epoch, new at each registry start; TTLMS is how
// long the lease lasts without a renew. Renew every third of it.
type Lease struct {
	Epoch uint64 `cbor:"1,keyasint"`
	TTLMS uint64 `cbor:"2,keyasint"`
}

// Renew extends a group's lease and updates its counters.
//
//	{1: group uuid, 2: epoch uint, 3: members uint, 4: last_seq uint}
//
// An Epoch other than the registry's gets CodeEpochMismatch (the registry
// restarted: register again); an unknown group gets CodeNotFound (the lease
// lapsed: register again); a group owned by another key gets
// CodeUnauthorized.
type Renew struct {
	Group   UUID   `cbor:"1,keyasint"`
	Epoch   uint64 `cbor:"2,keyasint"`
	Members uint64 `cbor:"3,keyasint,omitempty"`
	LastSeq uint64 `cbor:"4,keyasint,omitempty"`
}

func (r *Renew) check() error {
	if err := requireGroup(r.Group); err != nil {
		return err
	}
	if r.Epoch == 0 {
		return errors.New("epoch is required (a registry's epochs are never 0)")
	}
	return nil
}

// Deregister removes a group from the registry at once. Removing a group
// that is not listed succeeds; one owned by another key gets
// CodeUnauthorized.
//
//	{1: group uuid}
type Deregister struct {
	Group UUID `cbor:"1,keyasint"`
}

func (d *Deregister) check() error { return requireGroup(d.Group) }

// List asks the registry for a page of the groups whose lease is alive, in
// name order: the first page, or the one after the cursor After (a
// previous page's Groups.Next). Its result is a Groups.
//
//	{1: after bytes}
type List struct {
	After []byte `cbor:"1,keyasint,omitempty"`
}

// MaxCursorBytes bounds a list cursor: opaque bytes the registry issues.
const MaxCursorBytes = 256

func (l *List) check() error {
	if len(l.After) > MaxCursorBytes {
		return fmt.Errorf("list cursor of %d bytes, at most %d", len(l.After), MaxCursorBytes)
	}
	return nil
}

// Groups is the result of list: one page of the listing. Next, when not
// empty, is the cursor of the page after this one: list again with
// After = Next until it is empty.
//
//	{1: epoch uint, 2: groups [GroupEntry], 3: next bytes}
type Groups struct {
	Epoch  uint64       `cbor:"1,keyasint"`
	Groups []GroupEntry `cbor:"2,keyasint"`
	Next   []byte       `cbor:"3,keyasint,omitempty"`
	// Skipped, on a page decoded, are the entries dropped from Groups
	// because an address of theirs (the daemon's or a replica's) is not
	// host:port; never sent.
	Skipped []SkippedEntry `cbor:"-"`
}

// SkippedEntry is an entry of a listing page that a client drops (Groups):
// one whose address is not host:port (§7.1), or whose replicas name one
// key twice (§13; a registry of before session 23 listed such). A registry of before session
// 12 listed whatever address a registration gave, so anyone could
// register one there; refusing the whole page for it, as clients did in
// session 18, let any stranger hide every group of such a registry from
// every new client. Dropped, the entry is neither dialed nor shown, as
// the page's refusal ensured; the rest of the page is kept.
type SkippedEntry struct {
	Group UUID
	Name  string // as listed: a registry's word (show it through Shown)
	Err   error  // which address, and why it is not host:port; or which key is repeated
}

// GroupEntry is one group in a registry listing.
//
//	{1: uuid, 2: name, 3: addrs [text], 4: fingerprint bytes(32),
//	 5: members uint, 6: last_seq uint, 7: expires_ms uint, 8: replicas [Replica]}
type GroupEntry struct {
	Group       UUID        `cbor:"1,keyasint"`
	Name        string      `cbor:"2,keyasint"`
	Addrs       []string    `cbor:"3,keyasint"`
	Fingerprint Fingerprint `cbor:"4,keyasint"`
	Members     uint64      `cbor:"5,keyasint,omitempty"`
	LastSeq     uint64      `cbor:"6,keyasint,omitempty"`
	ExpiresMS   uint64      `cbor:"7,keyasint,omitempty"`
	// Replicas, for a group replicated by a cell, are the cell's members,
	// the leader marked; Addrs and Fingerprint are then the leader's (a
	// member's while none is known). Absent for a group of one daemon.
	Replicas []Replica `cbor:"8,keyasint,omitempty"`
}

// check holds a listing to what a registry can list: names, addresses
// and replicas within the limits of a registration (a client decoding a
// listing otherwise held whatever a registry sent, up to a frame a page),
// or the page is refused. An entry with an address (its own or a
// replica's) that is not host:port is dropped into Skipped, the rest
// kept (SkippedEntry says why), as is one whose replicas name a key
// twice. A name's characters are not checked
// here: a registry of an earlier version may list a name the rules
// refuse now.
func (g *Groups) check() error {
	kept := g.Groups[:0]
	for _, e := range g.Groups {
		switch {
		case len(e.Name) > MaxNameBytes:
			return fmt.Errorf("group %s: a name of %d bytes, at most %d: %w", e.Group, len(e.Name), MaxNameBytes, ErrTooLarge)
		case len(e.Addrs) > MaxAddrs:
			return fmt.Errorf("group %s: %d addresses, at most %d: %w", e.Group, len(e.Addrs), MaxAddrs, ErrTooLarge)
		}
		// Each address is host:port, as a registration's must be (since
		// session 12) and as a replica's is: a listing was held to the
		// address's length only, and a rogue registry's "10.0.0.1:http",
		// "box:0" or a blank-filled host reached every client to dial
		// (until session 18).
		err := checkAddrs("address", e.Addrs)
		if err == nil {
			err = checkReplicas(e.Replicas)
		}
		if errors.Is(err, errNotHostPort) || errors.Is(err, errRepeatedReplica) {
			g.Skipped = append(g.Skipped, SkippedEntry{Group: e.Group, Name: e.Name, Err: err})
			continue
		}
		if err != nil {
			return fmt.Errorf("group %s: %w", e.Group, err)
		}
		// A cell's group is listed under one of its replicas' keys (its
		// leader's, or a member's while none is known): a registry
		// accepts no other. Clients merge the entries of one UUID and set
		// of replicas whatever key each names (Merge takes the one whose
		// lease has the most time left, a figure the registry gives), so
		// an entry naming another key was a rogue registry's way to take
		// the group, unmarked, to an impostor daemon.
		if len(e.Replicas) > 0 && !slices.ContainsFunc(e.Replicas, func(r Replica) bool { return r.Fingerprint == e.Fingerprint }) {
			return fmt.Errorf("group %s: listed under daemon %s, which is none of its replicas", e.Group, e.Fingerprint.Short())
		}
		kept = append(kept, e)
	}
	// The entries dropped are cleared, not left behind kept's end.
	clear(g.Groups[len(kept):])
	g.Groups = kept
	return nil
}

// GroupRef names the group of info, leave and members.
//
//	{1: group uuid}
type GroupRef struct {
	Group UUID `cbor:"1,keyasint"`
}

func (g *GroupRef) check() error { return requireGroup(g.Group) }

// requireGroup checks a request's required group field: an absent group
// decodes as the zero UUID, which no group has.
func requireGroup(g UUID) error {
	if g == (UUID{}) {
		return errors.New("group is required (absent or all zero)")
	}
	return nil
}

// Info describes a group; anyone may ask.
//
//	{1: group uuid, 2: name, 3: epoch uint, 4: first uint, 5: last uint,
//	 6: members uint, 7: limits Limits, 8: private bool, 9: member bool,
//	 10: fingerprint bytes(32), 11: storage text, 12: fsync text,
//	 13: fsync_interval_ms uint, 14: replicas [Replica]}
//
// Keys 11..13 were added within huddle/1 (absent from older daemons: not
// reported).
type Info struct {
	Group       UUID        `cbor:"1,keyasint"`
	Name        string      `cbor:"2,keyasint"`
	Epoch       uint64      `cbor:"3,keyasint"`
	First       uint64      `cbor:"4,keyasint"`
	Last        uint64      `cbor:"5,keyasint"`
	Members     uint64      `cbor:"6,keyasint"`
	Limits      Limits      `cbor:"7,keyasint"`
	Private     bool        `cbor:"8,keyasint,omitempty"`
	Member      bool        `cbor:"9,keyasint,omitempty"`
	Fingerprint Fingerprint `cbor:"10,keyasint"`
	// Storage is where the daemon keeps the log: StorageMemory or
	// StorageDisk ("" from a daemon that does not say).
	Storage string `cbor:"11,keyasint,omitempty"`
	// Fsync is a disk log's policy: FsyncAlways or FsyncInterval.
	Fsync string `cbor:"12,keyasint,omitempty"`
	// FsyncIntervalMS is the interval of FsyncInterval.
	FsyncIntervalMS uint64 `cbor:"13,keyasint,omitempty"`
	// Replicas, for a group replicated by a cell, are the cell's members,
	// the leader marked (PROTOCOL.md §13); absent for a group of one
	// daemon.
	Replicas []Replica `cbor:"14,keyasint,omitempty"`
	// SendAfter says the daemon checks a send's After against its dedup
	// window (Send.After; since session 21): absent, a send's after_epoch
	// is ignored, and a client must not rely on CodeWindowPassed.
	SendAfter bool `cbor:"15,keyasint,omitempty"`
}

// check holds an info to what a client keeps of it: a cell's members as
// any listing of them (at most MaxReplicas, each with a key and an
// address, one leader), and a name no longer than a name may be. Until
// session 17 an info was taken as it came: a daemon's answer could name
// thousands of members, which a client took for the cell's (its handle's
// members, each call's pass over them, huddle info's "replicated by").
func (i *Info) check() error {
	if len(i.Name) > MaxNameBytes {
		return fmt.Errorf("a group's name of %d bytes, at most %d: %w", len(i.Name), MaxNameBytes, ErrTooLarge)
	}
	return checkReplicas(i.Replicas)
}

// Values of Info.Storage and Info.Fsync.
const (
	// StorageMemory: the log is in memory; a restart loses it (new epoch).
	StorageMemory = "memory"
	// StorageDisk: the log is on disk; restarts keep it and its epoch.
	StorageDisk = "disk"
	// FsyncInterval: an ack means written to the OS (survives the
	// daemon's crash); the device is synced every FsyncIntervalMS.
	FsyncInterval = "interval"
	// FsyncAlways: an ack means on the device (survives power loss).
	FsyncAlways = "always"
)

// Limits are a group's limits as its daemon enforces them. Zero means no
// limit for the retention fields and the send rate; for the connection
// fields (11..15), added within huddle/1, zero means the daemon did not say.
//
//	{1: max_message_bytes, 2: max_batch, 3: max_messages, 4: max_bytes,
//	 5: max_age_ms, 6: fetch_page, 7: max_members, 8: send_rate_milli,
//	 9: send_burst, 10: heartbeat_ms, 11: max_frame_bytes, 12: max_streams,
//	 13: max_conns_per_addr, 14: request_timeout_ms, 15: idle_timeout_ms}
type Limits struct {
	MaxMessageBytes uint64 `cbor:"1,keyasint"`
	MaxBatch        uint64 `cbor:"2,keyasint"`
	MaxMessages     uint64 `cbor:"3,keyasint,omitempty"`
	MaxBytes        uint64 `cbor:"4,keyasint,omitempty"`
	MaxAgeMS        uint64 `cbor:"5,keyasint,omitempty"`
	FetchPage       uint64 `cbor:"6,keyasint"`
	MaxMembers      uint64 `cbor:"7,keyasint,omitempty"`
	// SendRateMilli is each member's sustained send rate in messages per
	// 1000 seconds (so 5/s is 5000); zero means unlimited.
	SendRateMilli uint64 `cbor:"8,keyasint,omitempty"`
	// SendBurst is how many messages a member may send at once after
	// being idle: the size of its token bucket.
	SendBurst   uint64 `cbor:"9,keyasint,omitempty"`
	HeartbeatMS uint64 `cbor:"10,keyasint,omitempty"`
	// MaxFrameBytes is the largest request frame the daemon reads.
	MaxFrameBytes uint64 `cbor:"11,keyasint,omitempty"`
	// MaxStreams is how many operations one connection may have open at
	// once.
	MaxStreams uint64 `cbor:"12,keyasint,omitempty"`
	// MaxConnsPerAddr is how many connections one source address (an IPv4
	// address, or an IPv6 /64) may have open at once.
	MaxConnsPerAddr uint64 `cbor:"13,keyasint,omitempty"`
	// RequestTimeoutMS is how long a client has to deliver a whole request.
	RequestTimeoutMS uint64 `cbor:"14,keyasint,omitempty"`
	// IdleTimeoutMS is how long a connection may be silent before the
	// daemon drops it.
	IdleTimeoutMS uint64 `cbor:"15,keyasint,omitempty"`
}

// Join makes the connection's key a member under a display name. Joining
// again is not an error: it updates the name and reports Already.
//
//	{1: group uuid, 2: name text, 3: secret bytes}
type Join struct {
	Group  UUID   `cbor:"1,keyasint"`
	Name   string `cbor:"2,keyasint"`
	Secret []byte `cbor:"3,keyasint,omitempty"`
}

func (j *Join) check() error {
	if err := requireGroup(j.Group); err != nil {
		return err
	}
	if len(j.Secret) > MaxSecretBytes {
		return fmt.Errorf("secret of %d bytes, at most %d: %w", len(j.Secret), MaxSecretBytes, ErrTooLarge)
	}
	return checkName("member name", j.Name)
}

// Joined is the result of join.
//
//	{1: epoch uint, 2: last uint, 3: already bool}
type Joined struct {
	Epoch   uint64 `cbor:"1,keyasint"`
	Last    uint64 `cbor:"2,keyasint"`
	Already bool   `cbor:"3,keyasint,omitempty"`
}

// Left is the result of leave; leaving a group one is not in succeeds with
// WasMember false.
//
//	{1: was_member bool}
type Left struct {
	WasMember bool `cbor:"1,keyasint,omitempty"`
}

// MemberList is the result of members.
//
//	{1: members [Member]}
type MemberList struct {
	Members []Member `cbor:"1,keyasint"`
}

// Member is one member of a group, with its presence: whether it has a
// watch on the group open now, and when the daemon last saw it. Online and
// LastSeen were added within huddle/1; an older daemon omits them, so a
// zero LastSeen means "not known", not "never".
//
//	{1: fingerprint bytes(32), 2: name text, 3: joined int (Unix ns),
//	 4: online bool, 5: last_seen int (Unix ns)}
type Member struct {
	Fingerprint Fingerprint `cbor:"1,keyasint"`
	Name        string      `cbor:"2,keyasint"`
	Joined      int64       `cbor:"3,keyasint"`
	Online      bool        `cbor:"4,keyasint,omitempty"`
	LastSeen    int64       `cbor:"5,keyasint,omitempty"`
}

// Send appends messages to a group, all or none.
//
//	{1: group uuid, 2: messages [Outgoing]}
type Send struct {
	Group    UUID       `cbor:"1,keyasint"`
	Messages []Outgoing `cbor:"2,keyasint"`
	// After and AfterEpoch, on a send of messages whose earlier try left
	// them in doubt, say where the group's log stood, as the sender knew
	// it, before that first try: any of them stored was stored after
	// sequence number After of epoch AfterEpoch. A daemon that says so in
	// its info (Info.SendAfter) refuses the send with CodeWindowPassed,
	// storing nothing, if its dedup window may have forgotten a message
	// stored after After and the send carries a message it does not find
	// (PROTOCOL.md §8.5). AfterEpoch 0: not said.
	After      uint64 `cbor:"3,keyasint,omitempty"`
	AfterEpoch uint64 `cbor:"4,keyasint,omitempty"`
}

func (s *Send) check() error {
	switch {
	case s.Group == (UUID{}):
		return requireGroup(s.Group)
	case len(s.Messages) == 0:
		return errors.New("send carries no messages")
	case len(s.Messages) > MaxBatch:
		return fmt.Errorf("send carries %d messages, at most %d: %w", len(s.Messages), MaxBatch, ErrTooLarge)
	}
	for i := range s.Messages {
		if s.Messages[i].ID.IsZero() {
			return fmt.Errorf("message %d has no id", i)
		}
	}
	// One ID for two messages of one batch would acknowledge the second as
	// a duplicate of the first and silently drop its body.
	if i := repeatedID(s.Messages); i > 0 {
		return fmt.Errorf("message %d repeats the id of an earlier message of the batch", i)
	}
	return nil
}

// pairwiseIDs is the batch size up to which repeatedID compares every pair
// of IDs instead of building a set: up to 496 comparisons of 16 bytes,
// cheaper than a map's allocation and inserts.
const pairwiseIDs = 32

// repeatedID returns the index of the first message whose ID an earlier
// message of msgs has, or 0 if none has.
func repeatedID(msgs []Outgoing) int {
	if len(msgs) <= pairwiseIDs {
		for i := 1; i < len(msgs); i++ {
			for j := range i {
				if msgs[i].ID == msgs[j].ID {
					return i
				}
			}
		}
		return 0
	}
	seen := make(map[ID]struct{}, len(msgs))
	for i := range msgs {
		if _, dup := seen[msgs[i].ID]; dup {
			return i
		}
		seen[msgs[i].ID] = struct{}{}
	}
	return 0
}

// Outgoing is one message as a client sends it. ID is client-generated
// (NewID's UUIDv7, or any unguessable non-zero 16 bytes) and makes the send idempotent: a retried ID is acknowledged with
// its original sequence and timestamp.
//
//	{1: id bytes(16), 2: body bytes}
type Outgoing struct {
	ID   ID     `cbor:"1,keyasint"`
	Body []byte `cbor:"2,keyasint"`
}

// Sent is the result of send: one Ack per message, in order.
//
//	{1: epoch uint, 2: acks [Ack]}
type Sent struct {
	Epoch uint64 `cbor:"1,keyasint"`
	Acks  []Ack  `cbor:"2,keyasint"`
}

// Ack acknowledges one message: the group holds it under Seq and Time.
//
//	{1: seq uint, 2: ts int (Unix ns), 3: duplicate bool}
type Ack struct {
	Seq       uint64 `cbor:"1,keyasint"`
	Time      int64  `cbor:"2,keyasint"`
	Duplicate bool   `cbor:"3,keyasint,omitempty"`
}

// Fetch reads a group's messages: those at or after Since (a server
// timestamp, inclusive), or those after After (a sequence, exclusive: a
// resume cursor), or all of them when neither is set; never both. Limit caps
// how many are returned (0: the daemon's fetch page). Epoch, when not zero,
// must be the log's current epoch, or the fetch fails with
// CodeEpochMismatch: a cursor is never matched against another epoch's
// sequence numbers.
//
//	{1: group uuid, 2: since int, 3: after uint, 4: limit uint, 5: epoch uint, 6: min_seq uint}
type Fetch struct {
	Group UUID    `cbor:"1,keyasint"`
	Since *int64  `cbor:"2,keyasint,omitempty"`
	After *uint64 `cbor:"3,keyasint,omitempty"`
	Limit uint64  `cbor:"4,keyasint,omitempty"`
	Epoch uint64  `cbor:"5,keyasint,omitempty"`
	// MinSeq, if not zero, asks a replica of a cell's group to answer only
	// once its log holds message MinSeq (read-your-writes: the client was
	// acknowledged it); see PROTOCOL.md §13.
	MinSeq uint64 `cbor:"6,keyasint,omitempty"`
}

func (f *Fetch) check() error {
	if err := requireGroup(f.Group); err != nil {
		return err
	}
	return checkSelection(f.Since, f.After)
}

// Watch is a fetch that does not end: the same selection, then live
// messages as they arrive. Limit is not used.
//
//	{1: group uuid, 2: since int, 3: after uint, 5: epoch uint, 6: min_seq uint}
type Watch struct {
	Group UUID    `cbor:"1,keyasint"`
	Since *int64  `cbor:"2,keyasint,omitempty"`
	After *uint64 `cbor:"3,keyasint,omitempty"`
	Epoch uint64  `cbor:"5,keyasint,omitempty"`
	// MinSeq: as Fetch's.
	MinSeq uint64 `cbor:"6,keyasint,omitempty"`
}

func (w *Watch) check() error {
	if err := requireGroup(w.Group); err != nil {
		return err
	}
	return checkSelection(w.Since, w.After)
}

// Messages carries a batch of messages in sequence order.
//
//	{1: messages [Message]}
type Messages struct {
	Messages []Message `cbor:"1,keyasint"`
}

// Message is one stored message. From is the fingerprint of the key that
// sent it and Name its display name when it did; the server fills both.
//
//	{1: seq uint, 2: ts int (Unix ns), 3: id bytes(16), 4: from bytes(32),
//	 5: name text, 6: body bytes}
type Message struct {
	Seq  uint64      `cbor:"1,keyasint"`
	Time int64       `cbor:"2,keyasint"`
	ID   ID          `cbor:"3,keyasint"`
	From Fingerprint `cbor:"4,keyasint"`
	Name string      `cbor:"5,keyasint"`
	Body []byte      `cbor:"6,keyasint"`
}

// End is the last frame of a fetch.
//
//	{1: next uint, 2: more bool, 3: first uint, 4: last uint, 5: epoch uint}
//
// Next is the After to continue from; More says whether messages remain past
// it; First is the first sequence the group still holds (a client that asked
// for an earlier point has a gap); Last is the last sequence assigned.
type End struct {
	Next  uint64 `cbor:"1,keyasint"`
	More  bool   `cbor:"2,keyasint,omitempty"`
	First uint64 `cbor:"3,keyasint"`
	Last  uint64 `cbor:"4,keyasint"`
	Epoch uint64 `cbor:"5,keyasint"`
}

// Start is the first frame of a watch.
//
//	{1: epoch uint, 2: first uint, 3: last uint, 4: heartbeat_ms uint}
type Start struct {
	Epoch       uint64 `cbor:"1,keyasint"`
	First       uint64 `cbor:"2,keyasint"`
	Last        uint64 `cbor:"3,keyasint"`
	HeartbeatMS uint64 `cbor:"4,keyasint"`
}

// Heartbeat is sent on an idle watch every heartbeat interval.
//
//	{1: last uint, 2: now int (Unix ns)}
type Heartbeat struct {
	Last uint64 `cbor:"1,keyasint"`
	Now  int64  `cbor:"2,keyasint"`
}

// Gap tells a watcher that messages From..To (inclusive) were dropped by
// retention before they could be delivered; delivery goes on after To.
//
//	{1: from uint, 2: to uint}
type Gap struct {
	From uint64 `cbor:"1,keyasint"`
	To   uint64 `cbor:"2,keyasint"`
}

func checkSelection(since *int64, after *uint64) error {
	if since != nil && after != nil {
		return errors.New("both since and after: give one, or neither for everything")
	}
	return nil
}

// errNotHostPort is checkAddr's error for an address within its length
// that is not host:port: a listing skips its entry (Groups.check).
var errNotHostPort = errors.New("not host:port")

// checkAddr checks an address a peer gives for others to dial (a
// registration's, a replica's): 1..MaxAddrBytes bytes (over is too_large)
// of host:port, the host not empty and free of blanks and control and
// format characters, the port 1..65535 (else an error wrapping
// errNotHostPort).
func checkAddr(what, a string) error {
	switch {
	case len(a) == 0:
		return fmt.Errorf("an empty %s: %w", what, errNotHostPort)
	case len(a) > MaxAddrBytes:
		// Over a length limit, like a name: too_large.
		return fmt.Errorf("an %s of %d bytes, at most %d: %w", what, len(a), MaxAddrBytes, ErrTooLarge)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || strings.ContainsFunc(host, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
	}) {
		return fmt.Errorf("%s %q is %w", what, a, errNotHostPort)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%s %q: the port is not 1..65535: %w", what, a, errNotHostPort)
	}
	if ip, err := netip.ParseAddr(host); err == nil && !dialable(ip) {
		// Until session 22 a stranger could list a group, or a rogue
		// registry a cell's member, at the mDNS group or any multicast
		// address, and every client dialling it sent its QUIC Initials
		// to the whole link.
		return fmt.Errorf("%s %q: %s is an unspecified, multicast or broadcast address, not one to dial: %w", what, a, host, errNotHostPort)
	}
	return nil
}

// dialable reports whether ip names one host: not unspecified (0.0.0.0,
// ::), not multicast, not the IPv4 broadcast address.
func dialable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsUnspecified() && !ip.IsMulticast() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// CheckAddr reports whether a is an address peers may be given to dial (a
// registration's, a replica's): host:port as PROTOCOL.md §7.1 defines it,
// with the rules a server applies. Errors wrap ErrTooLarge (over
// MaxAddrBytes) or ErrBadRequest.
func CheckAddr(a string) error {
	if err := checkAddr("address", a); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

// checkAddrs is checkAddr of each of addrs, the first error.
func checkAddrs(what string, addrs []string) error {
	for _, a := range addrs {
		if err := checkAddr(what, a); err != nil {
			return err
		}
	}
	return nil
}

// checkName enforces the rules for display names: 1..MaxNameBytes bytes of
// UTF-8 with no control characters (Unicode Cc), no format characters (Cf:
// bidirectional overrides such as U+202E, zero-width characters, the BOM),
// no line or paragraph separators (Zl, Zp), no fillers (Filler: U+3164
// and the like), and no blank (Unicode White_Space: a space, U+00A0,
// U+3000...) at either end. Format characters and fillers are invisible or reorder
// the text around them, so they would let one name pass for another (or
// for no name at all), or make a line of output lie about who said what;
// a blank at an end shows as nothing, so "alice " passed for "alice" and
// a name of blanks alone for none (until session 23, when U+3164 alone
// was refused but " " or U+3000 alone was taken). Blanks within a name
// are kept: "Mary Ann" is a name, and where names are told apart a run
// of blanks counts as one (the CLI's lookalike). The ends are judged
// without variation selectors, which show as nothing: "alice " followed
// by U+FE0F ends with a blank, and U+FE0F alone is blanks alone.
func checkName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("%s of %d bytes, at most %d: %w", what, len(name), MaxNameBytes, ErrTooLarge)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s is not UTF-8", what)
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r):
			return fmt.Errorf("%s contains a control character", what)
		case unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp):
			return fmt.Errorf("%s contains an invisible format character (U+%04X)", what, r)
		case Filler(r):
			return fmt.Errorf("%s contains a character shown as nothing or as a blank (U+%04X)", what, r)
		}
	}
	// Judged as shown: a variation selector draws nothing of its own, so
	// one after a blank leaves that blank at the end ("alice " and U+FE0F
	// passed for "alice" until session 23's review), and selectors alone
	// show as no name.
	shown := withoutSelectors(name)
	switch trimmed := strings.TrimSpace(shown); {
	case trimmed == "":
		return fmt.Errorf("%s is only blanks, which shows as no name", what)
	case trimmed != shown:
		return fmt.Errorf("%s starts or ends with a blank, which shows as the name without it (%q)", what, trimmed)
	}
	return nil
}

// ShownName returns a name stored before the rules refused it (in a group
// daemon's members file or groups.json, in a cell's state) as it shows,
// the name a daemon reads it as rather than stop for it: without the
// format characters and separators (U+202E..., refused since session 19)
// and fillers (U+3164..., since session 20) it holds, and without blanks
// at either end (since session 23, with the variation selectors beside
// them there); U+FFFD if nothing is left, a name that showed as none. A
// name CheckName takes is returned as it is; one with a control character
// still fails it.
func ShownName(name string) string {
	if CheckName(name) == nil {
		return name
	}
	t := strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) || Filler(r) {
			return -1
		}
		return r
	}, name))
	if CheckName(t) != nil {
		// Blanks a variation selector hid from TrimSpace ("alice " and
		// U+FE0F), or selectors alone.
		t = strings.TrimFunc(t, func(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Variation_Selector, r) })
	}
	if t == "" && name != "" {
		return "\uFFFD"
	}
	return t
}

// withoutSelectors returns s without its variation selectors, which
// show as nothing of their own: s as its blanks show.
func withoutSelectors(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Variation_Selector, r) {
			return -1
		}
		return r
	}, s)
}

// BlankAtEnd reports whether s, as it shows, starts or ends with a blank
// (Unicode White_Space) or is blanks alone, judged without its variation
// selectors, which show as nothing: "alice " followed by U+FE0F ends with
// a blank. Names refuse it (CheckName), and so do the instance names
// registries are found under over mDNS and pinned by.
func BlankAtEnd(s string) bool {
	shown := withoutSelectors(s)
	return shown == "" || strings.TrimSpace(shown) != shown
}

// Filler reports whether r is drawn as nothing, or as an empty cell, though
// it is neither a control, format nor space character: the characters
// Unicode makes default-ignorable besides the format characters and the
// variation selectors (the Hangul fillers U+115F, U+1160, U+3164 and
// U+FFA0, the combining grapheme joiner U+034F, the Khmer inherent vowels
// U+17B4 and U+17B5, and the code points kept for more such), and two
// symbols drawn as an empty cell: the Braille pattern blank U+2800 and the
// musical null notehead U+1D159. Names refuse them as they refuse format
// characters: "alice" and "alice" with U+3164 read alike, and a name of
// U+3164 alone reads as no name. Variation selectors (U+FE0F after an
// emoji, an ideograph's variants, Mongolian's) choose how the character
// before them is drawn, and names keep them; a name that differs from
// another by them alone counts as that name where names are told apart.
func Filler(r rune) bool {
	return unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || r == '\u2800' || r == '\U0001D159'
}

// CheckName reports whether name is acceptable as a group or member name,
// with the same rules a server applies. Errors wrap ErrBadRequest or
// ErrTooLarge.
func CheckName(name string) error {
	if err := checkName("name", name); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

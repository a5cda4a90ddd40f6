package wire

import (
	"errors"
	"fmt"
)

// Operations of a cell's members (PROTOCOL.md §13): a group daemon that is
// a member of a cell answers them on huddle/1.
const (
	// OpCellStatus asks a member for its view of its cell (CellStatus).
	// Anyone may ask: it names addresses and keys the registry lists too.
	OpCellStatus Op = 23
	// OpCellAdd asks the leader to add a member (CellMember); only a key of
	// one of the cell's members may.
	OpCellAdd Op = 24
	// OpCellRemove asks the leader to remove a member (CellMember); only a
	// key of one of the cell's members may.
	OpCellRemove Op = 25
)

// MaxReplicas is the most replicas a cell lists: raft cells have 3 or 5
// members, and a few more while one is being replaced.
const MaxReplicas = 9

// Replica is one member of the cell that hosts a replicated group: the
// address its group daemon serves huddle/1 (and the cell's traffic) on,
// its key's fingerprint, whether it leads the cell, and (in cell_status,
// cell_add and cell_remove only) whether it was added and is still being
// brought up to date: it does not vote, nor serve the groups, until then.
//
//	{1: addr text, 2: fingerprint bytes(32), 3: leader bool, 4: catching_up bool}
type Replica struct {
	Addr        string      `cbor:"1,keyasint"`
	Fingerprint Fingerprint `cbor:"2,keyasint"`
	Leader      bool        `cbor:"3,keyasint,omitempty"`
	CatchingUp  bool        `cbor:"4,keyasint,omitempty"`
}

func (r *Replica) check() error {
	switch {
	case r.Fingerprint.IsZero():
		return errors.New("a replica without a fingerprint")
	}
	return checkAddr("replica address", r.Addr)
}

// Dialable reports whether a cell member's configured address is one a
// peer may be given to dial (CheckAddr). A cell's configuration may name
// a member at one that is not: made before session 20, when raft took any
// address ("box:http"), or before session 22, when an unspecified,
// multicast or broadcast host was taken ("0.0.0.0:7001", which on Linux
// reaches the machine itself). cell_status, cell_add and cell_remove list
// such a member as it is, so that an operator sees it (and moves it:
// cell_add its key at a dialable host:port); no other listing names it (a
// daemon leaves it out of info, refusals and registrations, which a peer
// would refuse whole for it), and no reference client dials it.
func Dialable(addr string) bool { return CheckAddr(addr) == nil }

// checkConfigured holds a replica of a cell's configuration (cell_status,
// cell_add, cell_remove) to a key and an address of 1 to MaxAddrBytes
// bytes, dialable or not (Dialable): until session 22 one at
// "box:http" had the whole answer refused, and huddle cell status could
// not show such a cell, the very one its operator needs to repair.
func (r *Replica) checkConfigured() error {
	switch {
	case r.Fingerprint.IsZero():
		return errors.New("a replica without a fingerprint")
	case r.Addr == "":
		return fmt.Errorf("an empty replica address: %w", errNotHostPort)
	case len(r.Addr) > MaxAddrBytes:
		return fmt.Errorf("a replica address of %d bytes, at most %d: %w", len(r.Addr), MaxAddrBytes, ErrTooLarge)
	}
	return nil
}

// errRepeatedReplica is checkReplicasWith's error for a list naming one
// key twice: a listing skips its entry (Groups.check), as a registry of
// before session 23 may list one.
var errRepeatedReplica = errors.New("a key listed as two replicas")

func checkReplicas(rs []Replica) error {
	return checkReplicasWith(rs, (*Replica).check)
}

// checkConfiguredReplicas is checkReplicas for a cell's configuration
// (checkConfigured).
func checkConfiguredReplicas(rs []Replica) error {
	return checkReplicasWith(rs, (*Replica).checkConfigured)
}

func checkReplicasWith(rs []Replica, check func(*Replica) error) error {
	if len(rs) > MaxReplicas {
		return fmt.Errorf("%d replicas, at most %d: %w", len(rs), MaxReplicas, ErrTooLarge)
	}
	leaders := 0
	for i := range rs {
		if err := check(&rs[i]); err != nil {
			return err
		}
		// One key is one member: a cell's configuration names each key
		// once (raft's server IDs are the members' fingerprints), so no
		// member lists one twice. Until session 23 a list could repeat
		// one key up to MaxReplicas times, each copy at any address: a
		// registration could have a registry list one daemon as nine
		// replicas, and a client try its key at nine addresses.
		for _, o := range rs[:i] {
			if o.Fingerprint == rs[i].Fingerprint {
				return fmt.Errorf("replica %s listed twice: %w", rs[i].Fingerprint.Short(), errRepeatedReplica)
			}
		}
		if rs[i].Leader {
			leaders++
		}
	}
	if leaders > 1 {
		return fmt.Errorf("%d replicas marked leader", leaders)
	}
	return nil
}

// CellQuery is the request of cell_status: empty today.
//
//	{}
type CellQuery struct{}

// CellMember is the request of cell_add and cell_remove: the member to add
// (address and fingerprint) or remove (fingerprint; the address is
// ignored).
//
//	{1: addr text, 2: fingerprint bytes(32)}
type CellMember struct {
	Addr        string      `cbor:"1,keyasint,omitempty"`
	Fingerprint Fingerprint `cbor:"2,keyasint"`
}

func (m *CellMember) check() error {
	if m.Fingerprint.IsZero() {
		return errors.New("a member without a fingerprint")
	}
	if len(m.Addr) > MaxAddrBytes {
		return fmt.Errorf("an address of %d bytes, at most %d: %w", len(m.Addr), MaxAddrBytes, ErrTooLarge)
	}
	return nil
}

// CellChanged is the result of cell_add and cell_remove: the members of the
// cell once the change is committed.
//
//	{1: members [Replica]}
type CellChanged struct {
	Members []Replica `cbor:"1,keyasint"`
}

// check holds the members to what any listing of a cell's holds (as
// CellStatus's), and to one at least (the leader that made the change):
// until session 17 a cell_add or cell_remove answer could name thousands,
// which huddle cell add printed, or none, taken as the cell's members. A
// member's address may be one not to dial (Dialable), as in
// cell_status.
func (c *CellChanged) check() error {
	if len(c.Members) == 0 {
		return errors.New("a cell change leaving no member")
	}
	return checkConfiguredReplicas(c.Members)
}

// CellStatus is the result of cell_status: one member's view of its cell.
//
//	{1: self Replica, 2: state text, 3: term uint, 4: leader Replica,
//	 5: commit_index uint, 6: applied_index uint, 7: last_index uint,
//	 8: last_contact_ms int (-1: never; 0 on the leader),
//	 9: members [Replica], 10: groups [CellGroup], 11: stall CellStall,
//	 12: key_mismatches [CellKeyMismatch], 13: groups_omitted uint}
type CellStatus struct {
	Self         Replica     `cbor:"1,keyasint"`
	State        string      `cbor:"2,keyasint"` // "leader", "follower", "candidate", "shutdown"
	Term         uint64      `cbor:"3,keyasint"`
	Leader       *Replica    `cbor:"4,keyasint,omitempty"`
	CommitIndex  uint64      `cbor:"5,keyasint"`
	AppliedIndex uint64      `cbor:"6,keyasint"`
	LastIndex    uint64      `cbor:"7,keyasint"`
	LastContact  int64       `cbor:"8,keyasint"`
	Members      []Replica   `cbor:"9,keyasint"`
	Groups       []CellGroup `cbor:"10,keyasint"`
	// Stall is set while the member's state machine cannot apply what the
	// cell commits (absent otherwise, and from daemons before session 14).
	Stall *CellStall `cbor:"11,keyasint,omitempty"`
	// KeyMismatches are the members' configurations naming, for a
	// member's address, another key than the daemon there presents: the
	// cell was set up with a wrong --cell-peer (absent in a cell set up
	// right, and from daemons before session 14).
	KeyMismatches []CellKeyMismatch `cbor:"12,keyasint,omitempty"`
	// GroupsOmitted is how many groups the member hosts beyond those
	// Groups lists: it lists at most MaxCellGroups, the first by name
	// (absent: none omitted; daemons before session 16 listed every one).
	GroupsOmitted uint64 `cbor:"13,keyasint,omitempty"`
}

// check holds a status to its limits. Its replicas (self, leader,
// members, a key mismatch's member) are the cell's configuration's, whose
// addresses may be ones not to dial (Dialable): listed as they are,
// never refused for it.
func (s *CellStatus) check() error {
	if s.Leader != nil {
		if err := s.Leader.checkConfigured(); err != nil {
			return err
		}
	}
	if s.Stall != nil {
		if err := s.Stall.check(); err != nil {
			return err
		}
	}
	if len(s.Groups) > MaxCellGroups {
		return fmt.Errorf("%d groups, at most %d: %w", len(s.Groups), MaxCellGroups, ErrTooLarge)
	}
	for i := range s.Groups {
		if n := len(s.Groups[i].Name); n > MaxNameBytes {
			return fmt.Errorf("a group's name of %d bytes, at most %d: %w", n, MaxNameBytes, ErrTooLarge)
		}
	}
	if len(s.KeyMismatches) > MaxKeyMismatches {
		return fmt.Errorf("%d key mismatches, at most %d: %w", len(s.KeyMismatches), MaxKeyMismatches, ErrTooLarge)
	}
	for i := range s.KeyMismatches {
		if err := s.KeyMismatches[i].check(); err != nil {
			return err
		}
	}
	return checkConfiguredReplicas(s.Members)
}

// MaxKeyMismatches is the most key mismatches a cell_status lists.
const MaxKeyMismatches = 32

// MaxCellGroups is the most groups a cell_status lists (GroupsOmitted
// counts the others): about 120 KiB of them at most, so that a member
// hosting many groups still answers within a frame, and a client reads no
// more than that of one.
const MaxCellGroups = 1024

// CellKeyMismatch says, in cell_status, that a member's raft configuration
// names, for a member's address, another key than the daemon there
// presented in a TLS handshake: the cell was set up with a wrong
// --cell-peer, and may not survive the loss of its leader. Member is the
// member whose configuration is wrong; Named is absent when Member
// refuses the answering daemon's key (its configuration does not list
// it, at Addr).
//
//	{1: member Replica, 2: addr text, 3: named bytes(32), 4: presented bytes(32)}
type CellKeyMismatch struct {
	Member    Replica      `cbor:"1,keyasint"`
	Addr      string       `cbor:"2,keyasint"`
	Named     *Fingerprint `cbor:"3,keyasint,omitempty"`
	Presented Fingerprint  `cbor:"4,keyasint"`
}

func (k *CellKeyMismatch) check() error {
	if err := k.Member.checkConfigured(); err != nil {
		return err
	}
	if k.Presented.IsZero() {
		return errors.New("a key mismatch without the key presented")
	}
	return checkAddr("key mismatch address", k.Addr)
}

// CellStall says, in cell_status, that the member's state machine cannot
// apply what the cell commits (a group log on it refuses appends: a full
// disk), since how long, at which raft entry, and why: the group whose log
// refuses, and the cause in brief ("disk full (no space left on device)").
//
//	{1: stalled_ms uint, 2: index uint, 3: group text, 4: cause text}
type CellStall struct {
	StalledMS uint64 `cbor:"1,keyasint"`
	Index     uint64 `cbor:"2,keyasint"`
	Group     string `cbor:"3,keyasint,omitempty"`
	Cause     string `cbor:"4,keyasint,omitempty"`
}

func (s *CellStall) check() error {
	switch {
	case len(s.Group) > MaxNameBytes:
		return fmt.Errorf("a stall's group name of %d bytes, at most %d: %w", len(s.Group), MaxNameBytes, ErrTooLarge)
	case len(s.Cause) > MaxShownMessage:
		return fmt.Errorf("a stall's cause of %d bytes, at most %d: %w", len(s.Cause), MaxShownMessage, ErrTooLarge)
	}
	return nil
}

// CellGroup is one of a cell's groups as one member holds it.
//
//	{1: group uuid, 2: name text, 3: epoch uint, 4: last uint, 5: members uint}
type CellGroup struct {
	Group   UUID   `cbor:"1,keyasint"`
	Name    string `cbor:"2,keyasint"`
	Epoch   uint64 `cbor:"3,keyasint"`
	Last    uint64 `cbor:"4,keyasint"`
	Members uint64 `cbor:"5,keyasint"`
}

package cell

import (
	"errors"
	"fmt"
	"strings"

	"github.com/huddle-chat/huddle/wire"
)

// ErrInvalidConfig is wrapped by the errors of Config.Validate and of the
// constructors.
var ErrInvalidConfig = errors.New("cell: invalid config")

// Peer is a member of a cell: the UDP address its group daemon listens on
// and the fingerprint of its key. Raft knows the member by its
// fingerprint (its server ID, in text form) and dials its address.
type Peer struct {
	Addr        string           `json:"addr"`
	Fingerprint wire.Fingerprint `json:"fingerprint"`
}

// String returns the peer's text form, FINGERPRINT@HOST:PORT (ParsePeer's).
func (p Peer) String() string { return p.Fingerprint.String() + "@" + p.Addr }

// ParsePeer parses FINGERPRINT@HOST:PORT, the form flags and the CLI take.
// Errors wrap ErrInvalidConfig.
func ParsePeer(s string) (Peer, error) {
	fps, addr, ok := strings.Cut(strings.TrimSpace(s), "@")
	if !ok {
		return Peer{}, fmt.Errorf("%w: peer %q: want FINGERPRINT@HOST:PORT", ErrInvalidConfig, s)
	}
	fp, err := wire.ParseFingerprint(fps)
	if err != nil {
		return Peer{}, fmt.Errorf("%w: peer %q: %v", ErrInvalidConfig, s, err)
	}
	p := Peer{Addr: addr, Fingerprint: fp}
	if err := p.check(); err != nil {
		return Peer{}, err
	}
	return p, nil
}

func (p Peer) check() error {
	// The address is listed to clients as a Replica's (info, refusals,
	// registrations), which must be host:port as PROTOCOL.md §7.1 defines
	// it: one raft took without it ("box:http", a blank in the host) had
	// every registration of the cell's groups refused, and every client
	// refuse the replicas the members named (until session 20).
	if err := wire.CheckAddr(p.Addr); err != nil {
		return fmt.Errorf("%w: peer address %q: want HOST:PORT, a host others can reach and a fixed port 1..65535: %v", ErrInvalidConfig, p.Addr, err)
	}
	if p.Fingerprint.IsZero() {
		return fmt.Errorf("%w: peer %s: no fingerprint", ErrInvalidConfig, p.Addr)
	}
	return nil
}

// maxCellMembers bounds the cell an operator makes: raft cells have 3 or
// 5 members, a few more while one is replaced, and every listing of a
// cell's replicas (cell_status, info, refusals, registrations) carries at
// most wire.MaxReplicas, which clients refuse beyond. Checked where a
// configuration is made (checkPeers, AddMember), so no cell grows past
// what its clients can follow.
const maxCellMembers = wire.MaxReplicas

// maxCellServers bounds a configuration that arrives from a member
// (configurationDecodes): raft takes any configuration a leader sends it,
// and keeps, dials and (leading) replicates to every server it lists. It
// is looser than maxCellMembers so that a member never refuses what an
// honest leader of a cell of maxCellMembers, or of a later version
// allowing a few more, sends.
const maxCellServers = 64

// checkPeers checks a list of a cell's members: each well formed, no
// address or key twice.
func checkPeers(peers []Peer) error {
	if len(peers) > maxCellMembers {
		return fmt.Errorf("%w: %d peers, at most %d", ErrInvalidConfig, len(peers), maxCellMembers)
	}
	addrs := make(map[string]bool, len(peers))
	keys := make(map[wire.Fingerprint]bool, len(peers))
	for _, p := range peers {
		if err := p.check(); err != nil {
			return err
		}
		if addrs[p.Addr] {
			return fmt.Errorf("%w: address %s listed twice", ErrInvalidConfig, p.Addr)
		}
		if keys[p.Fingerprint] {
			return fmt.Errorf("%w: key %s listed twice", ErrInvalidConfig, p.Fingerprint.Short())
		}
		addrs[p.Addr], keys[p.Fingerprint] = true, true
	}
	return nil
}

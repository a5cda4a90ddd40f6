package cell

import (
	"errors"
	"fmt"
	"net"
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
	host, port, err := net.SplitHostPort(p.Addr)
	switch {
	case err != nil:
		return fmt.Errorf("%w: peer address %q: %v", ErrInvalidConfig, p.Addr, err)
	case host == "" || port == "" || port == "0":
		return fmt.Errorf("%w: peer address %q: want HOST:PORT, a host others can reach and a fixed port", ErrInvalidConfig, p.Addr)
	case len(p.Addr) > wire.MaxAddrBytes:
		return fmt.Errorf("%w: peer address %q: at most %d bytes", ErrInvalidConfig, p.Addr, wire.MaxAddrBytes)
	case p.Fingerprint.IsZero():
		return fmt.Errorf("%w: peer %s: no fingerprint", ErrInvalidConfig, p.Addr)
	}
	return nil
}

// maxCellServers bounds a cell's members: raft cells have 3 or 5, a few
// more while one is replaced (wire.MaxReplicas, what cell_status and
// refusals list). Checked where a configuration is made (checkPeers,
// AddMember) and where one arrives from a member (configurationDecodes):
// raft takes any configuration a leader sends it, and keeps, dials and
// (leading) replicates to every server it lists.
const maxCellServers = 64

// checkPeers checks a list of a cell's members: each well formed, no
// address or key twice.
func checkPeers(peers []Peer) error {
	if len(peers) > maxCellServers {
		return fmt.Errorf("%w: %d peers, at most %d", ErrInvalidConfig, len(peers), maxCellServers)
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

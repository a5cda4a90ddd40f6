// Package identity holds a peer's long-lived key, the self-signed
// certificate it presents, the TLS configurations that pin peers by
// fingerprint, and the known-hosts file that remembers the registries a user
// has trusted.
//
// A huddle identity is an Ed25519 key kept on disk (PEM, mode 0600). The
// certificate is made afresh from the key at each load: only its public key
// matters, since a peer's identity is the SHA-256 of the certificate's
// SubjectPublicKeyInfo (wire.Fingerprint). TLS 1.3's CertificateVerify proves
// the peer holds the key; no certificate authority is involved.
package identity

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// KeyFile is the name of the key file inside an identity directory.
const KeyFile = "key.pem"

// Errors.
var (
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("peer presented no certificate")
	// ErrBadKey: the key file exists but cannot be used.
	ErrBadKey = errors.New("unusable key file")
	// ErrBadPinName: a name the known-hosts file cannot pin (KnownHosts.Check).
	ErrBadPinName = errors.New("not a name a registry can be pinned under")
	// ErrPinsFull: the known-hosts file holds MaxDiscoveredPins pins of
	// registries found over mDNS, or MaxAddressPins of addresses, and a new
	// one of that kind is not pinned (KnownHosts.Check). The registry may be
	// used, unpinned (one found over mDNS: its key matched its
	// advertisement), until the user forgets pins they no longer need.
	ErrPinsFull = errors.New("known registries full")
	// ErrPinsLocked: another process held the known-hosts file's writers'
	// lock for longer than a change may wait (KnownHosts.Check, Forget):
	// nothing was written. A writer holds it for a read and a write of the
	// file; one that holds it longer is stopped (^Z) or hostile.
	ErrPinsLocked = errors.New("known registries locked by another process")
)

// Identity is a key pair and the certificate made from it.
type Identity struct {
	cert tls.Certificate
	fp   wire.Fingerprint
}

// Fingerprint returns the identity's fingerprint, the peer's ID everywhere.
func (id *Identity) Fingerprint() wire.Fingerprint { return id.fp }

// Certificate returns the TLS certificate to present.
func (id *Identity) Certificate() tls.Certificate { return id.cert }

// Generate makes a new identity in memory.
func Generate() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return fromKey(key)
}

// LoadOrCreate loads the identity kept in dir, creating dir (mode 0700) and a
// new key (mode 0600) on first use. It returns ErrBadKey, wrapped, if the
// key file exists but is not a PEM Ed25519 or ECDSA private key, and refuses
// a key file that others can read. A new key is on the device (synced, with
// the directory entries naming it) before it is returned.
func LoadOrCreate(dir string) (*Identity, error) {
	return loadOrCreate(dir, syncs{file: (*os.File).Sync, dir: syncDir})
}

// syncs is how a new key is made durable: its file, then a directory's
// entries. Tests watch them.
type syncs struct {
	file func(*os.File) error
	dir  func(string) error
}

func loadOrCreate(dir string, s syncs) (*Identity, error) {
	// Temporary files of a create a crash interrupted (a copy of the key,
	// or of one never used) go; one a create running beside us loses
	// makes that create write its file in place (writeExcl).
	if left, _ := filepath.Glob(filepath.Join(dir, "."+KeyFile+"-*")); len(left) > 0 {
		for _, f := range left {
			os.Remove(f)
		}
	}
	path := filepath.Join(dir, KeyFile)
	data, err := lockfile.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return create(dir, path, s)
	}
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load identity: %s is readable by others (mode %v); run chmod 600 %s: %w",
			path, st.Mode().Perm(), path, ErrBadKey)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("load identity: %s holds no PEM block: %w", path, ErrBadKey)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load identity: %s: %v: %w", path, err, ErrBadKey)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load identity: %s: key of type %T: %w", path, key, ErrBadKey)
	}
	return fromKey(signer)
}

// create makes a new key at path: written to a temporary file beside it
// and synced, then linked to its name (a link, not a rename: two processes
// creating the same identity at once must not end up with different keys;
// the loser loads the winner's), then the directory synced. A crash leaves
// a whole key.pem or none, never an empty one, and a key once returned
// survives a power cut.
func create(dir, path string, s syncs) (*Identity, error) {
	if err := mkdirSynced(dir, s); err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(dir, "."+KeyFile+"-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = s.file(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	if err = os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		// A file system without hard links: created in place, with
		// O_EXCL for the same reason; a crash there may leave it empty.
		err = writeExcl(path, data, s)
	}
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreate(dir, s)
	}
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	// A directory that cannot be synced is not an error (a file system
	// that refuses directory fsyncs persists entries its own way), as in
	// the group logs (STORAGE.md, "Durability").
	s.dir(dir)
	return fromKey(key)
}

// writeExcl creates path (mode 0600) with data and syncs it; fs.ErrExist
// if it is there already.
func writeExcl(path string, data []byte, s syncs) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = s.file(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// mkdirSynced creates dir (mode 0700) and the directories above it that
// are missing, syncing the directory that holds each one it made.
func mkdirSynced(dir string, s syncs) error {
	var made []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		made = append(made, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(made) - 1; i >= 0; i-- {
		s.dir(filepath.Dir(made[i]))
	}
	return nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func fromKey(key crypto.Signer) (*Identity, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "huddle"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"huddle"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse own certificate: %w", err)
	}
	return &Identity{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		fp:   wire.FingerprintOf(leaf),
	}, nil
}

// PeerFingerprint returns the fingerprint of the certificate the peer
// presented on a TLS connection, or ErrNoCertificate.
func PeerFingerprint(cs tls.ConnectionState) (wire.Fingerprint, error) {
	if len(cs.PeerCertificates) == 0 {
		return wire.Fingerprint{}, ErrNoCertificate
	}
	return wire.FingerprintOf(cs.PeerCertificates[0]), nil
}

// ServerTLS returns the TLS configuration of a huddle server: TLS 1.3, ALPN
// huddle/1, and a client certificate required from every peer (any key: the
// server keys what the peer may do by its fingerprint).
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		NextProtos:   []string{wire.ALPN},
		ClientAuth:   tls.RequireAnyClientCert,
		// huddle clients keep no session cache, so a ticket would never be
		// used: sending one costs the server a ticket's encryption and a
		// packet per connection for nothing.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := PeerFingerprint(cs)
			return err
		},
	}
}

// MismatchError is returned by a handshake whose server presented another
// fingerprint than the one pinned.
type MismatchError struct {
	Want, Got wire.Fingerprint
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("server presented fingerprint %s, expected %s", e.Got, e.Want)
}

// ClientTLS returns the TLS configuration for dialing a server whose
// fingerprint must be want. The handshake fails with a *MismatchError
// otherwise. If want is zero, any server is accepted and verify, when not
// nil, decides (trust on first use).
func (id *Identity) ClientTLS(want wire.Fingerprint, verify func(wire.Fingerprint) error) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		NextProtos:   []string{wire.ALPN},
		ServerName:   "huddle",
		// Chain verification does not apply: identities are self-signed and
		// pinned by fingerprint in VerifyConnection below.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := PeerFingerprint(cs)
			if err != nil {
				return err
			}
			if !want.IsZero() && got != want {
				return &MismatchError{Want: want, Got: got}
			}
			if want.IsZero() && verify != nil {
				return verify(got)
			}
			return nil
		},
	}
}

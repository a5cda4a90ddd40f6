package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Fingerprint identifies a peer: the SHA-256 of its certificate's
// SubjectPublicKeyInfo. On the wire it is a 32-byte byte string; its one text
// form is lowercase RFC 4648 base32 without padding, in groups of four
// letters joined by '-' (64 characters).
type Fingerprint [32]byte

// ErrBadFingerprint: a fingerprint's text or bytes are not well formed.
var ErrBadFingerprint = errors.New("bad fingerprint")

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// FingerprintOf returns the fingerprint of a certificate.
func FingerprintOf(cert *x509.Certificate) Fingerprint {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

// String returns the text form.
func (f Fingerprint) String() string {
	s := strings.ToLower(b32.EncodeToString(f[:])) // 52 letters
	var b strings.Builder
	b.Grow(64)
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// Short returns the first two groups of the text form, for display where the
// whole fingerprint does not fit. It is not an identity.
func (f Fingerprint) Short() string { return f.String()[:9] }

// IsZero reports whether f is unset.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// ParseFingerprint parses the text form. Case and the '-' separators are
// optional. It returns ErrBadFingerprint if s is not 32 bytes of base32 in
// canonical form (the 52nd letter's four padding bits zero, no line breaks),
// so each fingerprint has one spelling up to case and dashes.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	clean := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
	b, err := b32.DecodeString(clean)
	if err != nil || len(b) != len(f) || b32.EncodeToString(b) != clean {
		return f, fmt.Errorf("%w: %q is not a huddle fingerprint (52 base32 letters)", ErrBadFingerprint, s)
	}
	copy(f[:], b)
	return f, nil
}

// MarshalText implements encoding.TextMarshaler (for JSON and flags).
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	p, err := ParseFingerprint(string(b))
	*f = p
	return err
}

// UnmarshalCBOR accepts exactly a 32-byte byte string.
func (f *Fingerprint) UnmarshalCBOR(b []byte) error { return fixedBytes(f[:], b) }

// UUID is a group's identity, a 16-byte byte string on the wire (decoding
// rejects any other length).
type UUID = uuid.UUID

// ID is a client-generated message ID (a UUIDv7), a 16-byte byte string on
// the wire. The zero ID is invalid.
type ID [16]byte

// NewID returns a fresh UUIDv7 message ID: the Unix time in milliseconds,
// then 74 bits from crypto/rand (RFC 9562 §5.7). IDs need to be unique and
// unguessable, not ordered within a millisecond, so unlike uuid.NewV7 it
// keeps no sub-millisecond sequence and takes no lock, which halves its
// cost per ID.
func NewID() ID {
	var id ID
	rand.Read(id[6:]) // never fails (crypto/rand crashes the program instead)
	ms := uint64(time.Now().UnixMilli())
	id[0], id[1], id[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	id[3], id[4], id[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	id[6] = 0x70 | id[6]&0x0f // version 7
	id[8] = 0x80 | id[8]&0x3f // variant 10
	return id
}

// String returns the ID in UUID text form.
func (id ID) String() string { return uuid.UUID(id).String() }

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalCBOR accepts exactly a 16-byte byte string.
func (id *ID) UnmarshalCBOR(b []byte) error { return fixedBytes(id[:], b) }

// fixedBytes decodes a CBOR byte string of exactly len(dst) bytes into
// dst, allocating nothing. Its length may be encoded in any of CBOR's
// widths: PROTOCOL.md §4 asks encoders for the shortest and decoders not
// to require it. Until session 22 only the shortest was taken, so a
// message ID sent as 58 10 and 16 bytes was refused bad_request (while a
// group UUID so sent was read).
func fixedBytes(dst, item []byte) error {
	n := len(dst)
	if len(item) == 0 || item[0]>>5 != 2 {
		return wantBytes(n)
	}
	hdr, size := 1, uint64(item[0]&0x1f)
	switch {
	case size < 24:
	case size <= 27:
		w := 1 << (size - 24) // 1, 2, 4 or 8 bytes of length
		if len(item) < 1+w {
			return wantBytes(n)
		}
		size = 0
		for _, c := range item[1 : 1+w] {
			size = size<<8 | uint64(c)
		}
		hdr += w
	default:
		return wantBytes(n) // an indefinite length (refused before) or reserved
	}
	if size != uint64(n) || len(item) != hdr+n {
		return wantBytes(n)
	}
	copy(dst, item[hdr:])
	return nil
}

// wantBytes is fixedBytes' error: made only when it fails, as an ID is
// decoded for every message of a send.
func wantBytes(n int) error { return fmt.Errorf("want a %d-byte byte string", n) }

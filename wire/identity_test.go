package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestFingerprintText(t *testing.T) {
	fp := Fingerprint(sha256.Sum256([]byte("alice's SubjectPublicKeyInfo")))
	s := fp.String()
	if len(s) != 64 {
		t.Fatalf("String() = %q, %d characters, want 64", s, len(s))
	}
	groups := strings.Split(s, "-")
	if len(groups) != 13 {
		t.Fatalf("String() = %q: %d groups, want 13", s, len(groups))
	}
	for _, g := range groups {
		if len(g) != 4 || strings.ToLower(g) != g {
			t.Errorf("group %q of %q: want 4 lowercase characters", g, s)
		}
	}
	if got := fp.Short(); got != s[:9] {
		t.Errorf("Short() = %q, want %q", got, s[:9])
	}
	for _, in := range []string{
		s,
		strings.ReplaceAll(s, "-", ""),
		strings.ToUpper(s),
		strings.ToUpper(strings.ReplaceAll(s, "-", "")),
		"  " + s + "\n",
	} {
		got, err := ParseFingerprint(in)
		if err != nil {
			t.Errorf("ParseFingerprint(%q): %v", in, err)
			continue
		}
		if got != fp {
			t.Errorf("ParseFingerprint(%q) = %x, want %x", in, got, fp)
		}
	}
	// Text marshaling, as JSON and flags use it.
	b, _ := fp.MarshalText()
	var back Fingerprint
	if err := back.UnmarshalText(b); err != nil || back != fp {
		t.Errorf("UnmarshalText(MarshalText()) = %x, %v; want %x", back, err, fp)
	}
}

func TestParseFingerprintRejects(t *testing.T) {
	s := Fingerprint(sha256.Sum256([]byte("x"))).String()
	bare := strings.ReplaceAll(s, "-", "")
	// The 52nd letter carries one data bit and four padding bits; flipping a
	// padding bit names the same 32 bytes with another spelling.
	last := bare[len(bare)-1]
	other := byte('b')
	if last == 'b' {
		other = 'c'
	}
	for _, in := range []string{
		"",
		bare[:51],       // 51 letters
		bare + "a",      // 53 letters
		bare[:48],       // 30 bytes' worth
		bare[:51] + "1", // '1' is not in the alphabet
		bare[:50] + "0" + bare[51:],
		bare[:51] + string(other), // nonzero padding bits
		bare[:20] + "\n" + bare[20:],
		bare + "====",
		strings.Repeat("a", 56), // 35 bytes
	} {
		if f, err := ParseFingerprint(in); !errors.Is(err, ErrBadFingerprint) {
			t.Errorf("ParseFingerprint(%q) = %x, %v; want ErrBadFingerprint", in, f, err)
		} else if !f.IsZero() {
			t.Errorf("ParseFingerprint(%q) returned %x with its error", in, f)
		}
	}
}

func TestFingerprintOf(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "huddle"},
		NotBefore:    time.Unix(0, tT0),
		NotAfter:     time.Unix(0, tT0).Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := FingerprintOf(cert), Fingerprint(sha256.Sum256(spki)); got != want {
		t.Errorf("FingerprintOf = %x, want SHA-256 of the SPKI %x", got, want)
	}
	// A new certificate for the same key has the same identity.
	tmpl.SerialNumber = big.NewInt(2)
	der2, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	cert2, _ := x509.ParseCertificate(der2)
	if FingerprintOf(cert2) != FingerprintOf(cert) {
		t.Error("fingerprint changed with the certificate, not the key")
	}
}

func TestID(t *testing.T) {
	a, b := NewID(), NewID()
	if a.IsZero() || a == b {
		t.Errorf("NewID() gave %v then %v", a, b)
	}
	if v := uuid.UUID(a).Version(); v != 7 {
		t.Errorf("NewID() is a version %d UUID, want 7", v)
	}
	if v := uuid.UUID(a).Variant(); v != uuid.RFC4122 {
		t.Errorf("NewID() has variant %v, want RFC 4122", v)
	}
	before := time.Now().UnixMilli()
	c := NewID()
	after := time.Now().UnixMilli()
	if sec, nsec := uuid.UUID(c).Time().UnixTime(); sec*1000+nsec/1e6 < before || sec*1000+nsec/1e6 > after {
		t.Errorf("NewID()'s time is %d ms, want %d..%d", sec*1000+nsec/1e6, before, after)
	}
	seen := make(map[ID]bool)
	for range 10000 {
		id := NewID()
		if seen[id] {
			t.Fatalf("NewID() repeated %v", id)
		}
		seen[id] = true
	}
	if got, want := tID1.String(), "01933ba0-1c2d-7e3f-8a4b-5c6d7e8f9a01"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if txt, _ := tID1.MarshalText(); string(txt) != tID1.String() {
		t.Errorf("MarshalText() = %q", txt)
	}
}

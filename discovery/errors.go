package discovery

import "errors"

var (
	// ErrNotFound is returned by Find when its context ends before any
	// answer verified. It wraps the reason (the context's error, and the
	// last verification failure if there was one).
	ErrNotFound = errors.New("discovery: no huddle registry found")

	// ErrNoInterface is returned when no network interface can be used for
	// mDNS. The error's text says why each candidate was left out.
	ErrNoInterface = errors.New("discovery: no usable network interface")

	// ErrInvalidConfig is returned by NewAdvertiser, Find, Browse and
	// Diagnose for a configuration that cannot work (wrapped with the field).
	ErrInvalidConfig = errors.New("discovery: invalid config")

	// ErrClosed is returned by Advertiser.Serve after Close.
	ErrClosed = errors.New("discovery: advertiser closed")

	// ErrBadAnswer is the Answer.Err of an mDNS answer that cannot be a
	// huddle registry (no fingerprint, wrong protocol, no usable address).
	ErrBadAnswer = errors.New("discovery: malformed answer")
)

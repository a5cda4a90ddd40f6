package daemon

import (
	"errors"

	"github.com/quic-go/quic-go"
)

// Errors returned by the servers' methods.
var (
	// ErrClosed: the server was closed; it cannot listen or serve again.
	ErrClosed = errors.New("daemon: closed")
	// ErrInvalidConfig is wrapped by every error of a Config's Validate.
	ErrInvalidConfig = errors.New("daemon: invalid config")
	// ErrServing: Serve was called while the server was already serving.
	ErrServing = errors.New("daemon: already serving")
	// ErrBadState: a file in the state directory cannot be used.
	ErrBadState = errors.New("daemon: unusable state directory")
)

// Application error codes on streams (RESET_STREAM, STOP_SENDING) and
// connections (CONNECTION_CLOSE). They belong in PROTOCOL.md beside the
// Error frame codes.
const (
	// streamTimeout: the request did not arrive in time, or the server is
	// shutting down.
	streamTimeout quic.StreamErrorCode = 0x2
	// streamProtocol: the request was not a frame followed by the end of
	// the stream.
	streamProtocol quic.StreamErrorCode = 0x3

	// connNoError: the connection ended normally.
	connNoError quic.ApplicationErrorCode = 0x0
	// connShutdown: the server is shutting down.
	connShutdown quic.ApplicationErrorCode = 0x2
	// connProtocol: the peer broke the protocol (no certificate).
	connProtocol quic.ApplicationErrorCode = 0x3
)

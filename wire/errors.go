package wire

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Code is an error code carried by an Error frame.
type Code uint16

// Error codes. Their numbers are part of the protocol.
const (
	CodeInternal      Code = 1  // the server failed; not the client's fault
	CodeBadRequest    Code = 2  // malformed frame, missing or invalid field, both since and after
	CodeUnauthorized  Code = 3  // this key may not do this (another key owns the UUID, wrong secret)
	CodeNotMember     Code = 4  // the operation needs membership of the group
	CodeNotFound      Code = 5  // no such group or lease
	CodeTooLarge      Code = 6  // a frame, message, batch or name over its limit
	CodeRateLimited   Code = 7  // slow down; RetryAfter says when to try again
	CodeUnavailable   Code = 8  // shutting down, or a capacity limit was hit; try again later
	CodeUnsupported   Code = 9  // unknown operation
	CodeEpochMismatch Code = 10 // the cursor's or lease's epoch is not the current one; Epoch says which is
	// CodeWindowPassed refuses a send naming after_epoch (Send.AfterEpoch)
	// whose messages the group's dedup window may have forgotten since
	// Send.After: stored again under their IDs they might be stored twice.
	// Only a send with after_epoch gets it (PROTOCOL.md §8.5).
	CodeWindowPassed Code = 11
)

// Sentinel errors, one per code. Errors decoded from the wire match them with
// errors.Is, and ToError maps any error wrapping one of them to its code.
var (
	ErrInternal      = errors.New("internal error")
	ErrBadRequest    = errors.New("bad request")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrNotMember     = errors.New("not a member")
	ErrNotFound      = errors.New("not found")
	ErrTooLarge      = errors.New("too large")
	ErrRateLimited   = errors.New("rate limited")
	ErrUnavailable   = errors.New("unavailable")
	ErrUnsupported   = errors.New("unsupported operation")
	ErrEpochMismatch = errors.New("epoch mismatch")
	ErrWindowPassed  = errors.New("past the dedup window")
)

var codeErrs = [...]error{
	CodeInternal:      ErrInternal,
	CodeBadRequest:    ErrBadRequest,
	CodeUnauthorized:  ErrUnauthorized,
	CodeNotMember:     ErrNotMember,
	CodeNotFound:      ErrNotFound,
	CodeTooLarge:      ErrTooLarge,
	CodeRateLimited:   ErrRateLimited,
	CodeUnavailable:   ErrUnavailable,
	CodeUnsupported:   ErrUnsupported,
	CodeEpochMismatch: ErrEpochMismatch,
	CodeWindowPassed:  ErrWindowPassed,
}

// Sentinel returns the sentinel error for c; unknown codes (from a newer
// peer) map to ErrInternal.
func (c Code) Sentinel() error {
	if int(c) < len(codeErrs) && codeErrs[c] != nil {
		return codeErrs[c]
	}
	return ErrInternal
}

// String returns the code's protocol name.
func (c Code) String() string {
	switch c {
	case CodeInternal:
		return "internal"
	case CodeBadRequest:
		return "bad_request"
	case CodeUnauthorized:
		return "unauthorized"
	case CodeNotMember:
		return "not_member"
	case CodeNotFound:
		return "not_found"
	case CodeTooLarge:
		return "too_large"
	case CodeRateLimited:
		return "rate_limited"
	case CodeUnavailable:
		return "unavailable"
	case CodeUnsupported:
		return "unsupported"
	case CodeEpochMismatch:
		return "epoch_mismatch"
	case CodeWindowPassed:
		return "window_passed"
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// Error is the body of an Error frame, and the error a client gets back for
// it. It matches its code's sentinel with errors.Is.
//
//	{1: code uint, 2: message text, 3: retry_after_ms uint, 4: epoch uint, 5: leader Replica}
type Error struct {
	Code    Code   `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
	// RetryAfterMS is set with CodeRateLimited (and may be with
	// CodeUnavailable): milliseconds to wait before trying again.
	RetryAfterMS uint64 `cbor:"3,keyasint,omitempty"`
	// Epoch is set with CodeEpochMismatch: the current epoch.
	Epoch uint64 `cbor:"4,keyasint,omitempty"`
	// Leader may be set with CodeUnavailable by a member of a cell that
	// does not lead it, for an operation only the leader runs (send, join,
	// leave): the member that leads, to send it to (PROTOCOL.md §13).
	Leader *Replica `cbor:"5,keyasint,omitempty"`
	// Replicas may be set with CodeUnavailable by a member of a cell: by
	// one that does not serve a cell's group (it was removed from the
	// cell, or is still catching up after being added), and with every
	// refusal of an operation only the leader runs (send, join, leave):
	// the members that serve the group, as the daemon knows them, to use
	// instead of the list the client holds (PROTOCOL.md §13).
	Replicas []Replica `cbor:"6,keyasint,omitempty"`
	// Unchanged, with any code, says the server carried out nothing of
	// the request (a send: this request stored none of its messages), so
	// the refusal is its whole outcome. Without it a send refused
	// unavailable or internal may have been stored (a write that could
	// not be made durable, a cell that could not decide it), and a client
	// reports its outcome unknown (PROTOCOL.md §9). Servers before
	// session 19 never set it.
	Unchanged bool `cbor:"7,keyasint,omitempty"`
}

// Error returns the message, or the code's text without one. The message
// is a peer's text, and callers print it: shown as one line of at most
// MaxShownMessage bytes, its control and format characters (a line break,
// ESC, U+202E) and invalid bytes as U+FFFD, so that a server cannot drive
// the terminal of a user reading the error, nor fake lines of its own.
func (e *Error) Error() string {
	msg := Shown(e.Message)
	if msg == "" {
		msg = e.Code.Sentinel().Error()
	}
	if e.RetryAfterMS > 0 {
		return fmt.Sprintf("%s (retry after %v)", msg, e.RetryAfter())
	}
	return msg
}

// MaxShownMessage is how much of an Error's message Error returns; the
// rest is cut, marked with "...".
const MaxShownMessage = 1024

// Shown returns s, a peer's text, as an error message may quote it: one
// line of at most MaxShownMessage bytes (the rest cut, marked with "..."),
// its control and format characters (a line break, ESC, U+202E), line and
// paragraph separators and invalid bytes as U+FFFD. Error shows a
// server's message so; a client shows so what a registry listed (a
// group's name, its daemon's addresses) when its errors quote it. Text
// an honest peer sends comes back unchanged.
func Shown(s string) string {
	cut := len(s) > MaxShownMessage
	if cut {
		s = s[:MaxShownMessage]
	}
	if !cut && utf8.ValidString(s) && !strings.ContainsFunc(s, Unshown) {
		return s
	}
	var b strings.Builder
	for i, r := range s { // an invalid byte comes as U+FFFD
		if cut && !utf8.FullRuneInString(s[i:]) {
			break // a character the cut split
		}
		if Unshown(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	if cut {
		b.WriteString("...")
	}
	return b.String()
}

// Unshown reports whether Shown shows r as U+FFFD: a control character
// (C0, DEL, C1), a format character (a bidirectional override, a
// zero-width character), or a line or paragraph separator. It is the one
// rule for a peer's text: the CLI shows what it prints to a terminal by it
// too.
func Unshown(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}

// Unwrap returns the code's sentinel, so errors.Is(err, ErrNotMember) works
// on an error decoded from the wire.
func (e *Error) Unwrap() error { return e.Code.Sentinel() }

// MaxRetryAfter is the longest wait RetryAfter returns: a peer's
// retry_after_ms is any uint, and one past 2^63 ns converted as it came
// wrapped to a negative wait (retry at once, in a loop).
const MaxRetryAfter = time.Hour

// RetryAfter is RetryAfterMS as a duration, at most MaxRetryAfter.
func (e *Error) RetryAfter() time.Duration {
	if e.RetryAfterMS >= uint64(MaxRetryAfter/time.Millisecond) {
		return MaxRetryAfter
	}
	return time.Duration(e.RetryAfterMS) * time.Millisecond
}

func (e *Error) check() error {
	if e.Code == 0 {
		return errors.New("error frame without a code")
	}
	if e.Leader != nil {
		if err := e.Leader.check(); err != nil {
			return err
		}
	}
	return checkReplicas(e.Replicas)
}

// ToError maps any error to what travels on the wire. An *Error in err's
// chain is used as it is; an error wrapping a sentinel gets that sentinel's
// code and err's text (only the sentinel's own text if err also wraps a
// file-system, system-call or network error, whose text names paths and
// addresses of the server); anything else becomes CodeInternal with a
// generic message, so internal details never leak to peers.
func ToError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	for c := range codeErrs {
		if s := codeErrs[c]; s != nil && s != ErrInternal && errors.Is(err, s) {
			msg := err.Error()
			if local(err) {
				msg = s.Error()
			}
			return &Error{Code: Code(c), Message: msg}
		}
	}
	switch {
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrEmptyFrame):
		return &Error{Code: CodeBadRequest, Message: err.Error()}
	case errors.Is(err, ErrFrameTooLarge):
		return &Error{Code: CodeTooLarge, Message: err.Error()}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// local reports whether err's chain holds an error whose text describes the
// server's own machine: a path, a system call, a socket.
func local(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	var se *os.SyscallError
	var ne *net.OpError
	return errors.As(err, &pe) || errors.As(err, &le) || errors.As(err, &se) || errors.As(err, &ne)
}

// Application error codes of the QUIC transport (PROTOCOL.md §3). They are
// untyped so that they convert to quic-go's StreamErrorCode and
// ApplicationErrorCode without this package importing it.
const (
	// StreamCancelled: a client abandoned the operation (RESET_STREAM and
	// STOP_SENDING).
	StreamCancelled = 0x1
	// StreamTimeout: the server gave up on the stream: its request did not
	// arrive in time, its reply could not be written in time, or the
	// server is shutting down.
	StreamTimeout = 0x2
	// StreamProtocolViolation: the request was not one frame followed by
	// the end of the stream.
	StreamProtocolViolation = 0x3
)

// Connection close codes (CONNECTION_CLOSE of the application).
const (
	// ConnNoError: the connection ended normally.
	ConnNoError = 0x0
	// ConnProtocolViolation: the peer broke the protocol (no client
	// certificate, for example).
	ConnProtocolViolation = 0x1
	// ConnShutdown: the server is shutting down.
	ConnShutdown = 0x2
	// ConnRefused: a connection limit was hit (connections per source
	// address, or in all); the reason phrase says which. Retry later, with
	// fewer connections.
	ConnRefused = 0x3
)

package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// allCodes lists every code of huddle/1 with its sentinel and name.
var allCodes = []struct {
	code Code
	err  error
	name string
}{
	{CodeInternal, ErrInternal, "internal"},
	{CodeBadRequest, ErrBadRequest, "bad_request"},
	{CodeUnauthorized, ErrUnauthorized, "unauthorized"},
	{CodeNotMember, ErrNotMember, "not_member"},
	{CodeNotFound, ErrNotFound, "not_found"},
	{CodeTooLarge, ErrTooLarge, "too_large"},
	{CodeRateLimited, ErrRateLimited, "rate_limited"},
	{CodeUnavailable, ErrUnavailable, "unavailable"},
	{CodeUnsupported, ErrUnsupported, "unsupported"},
	{CodeEpochMismatch, ErrEpochMismatch, "epoch_mismatch"},
	{CodeWindowPassed, ErrWindowPassed, "window_passed"},
}

// roundTrip is a server writing err as an Error frame and a client reading it.
func roundTrip(t *testing.T, err error) (*Error, error) {
	t.Helper()
	var stream bytes.Buffer
	if werr := WriteError(&stream, err); werr != nil {
		t.Fatalf("WriteError(%v): %v", err, werr)
	}
	kind, _, got := ReadResponse(&stream, nil)
	if kind != KindError {
		t.Fatalf("kind = %v, want KindError", kind)
	}
	var we *Error
	if !errors.As(got, &we) {
		t.Fatalf("ReadResponse: %v, want an *Error", got)
	}
	return we, got
}

func TestErrorRoundTrip(t *testing.T) {
	for _, tc := range allCodes {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.code.String(); got != tc.name {
				t.Errorf("String() = %q, want %q", got, tc.name)
			}
			if got := tc.code.Sentinel(); got != tc.err {
				t.Errorf("Sentinel() = %v, want %v", got, tc.err)
			}
			// The sentinel itself, and wrapped with context as servers do.
			for _, err := range []error{tc.err, fmt.Errorf("send group %s: %w", tGroup, tc.err)} {
				if got := ToError(err).Code; got != tc.code {
					t.Errorf("ToError(%v).Code = %v, want %v", err, got, tc.code)
				}
				we, got := roundTrip(t, err)
				if !errors.Is(got, tc.err) {
					t.Errorf("errors.Is(%v, %v) = false after the round trip", got, tc.err)
				}
				if we.Code != tc.code {
					t.Errorf("code = %v, want %v", we.Code, tc.code)
				}
				for _, other := range allCodes {
					if other.code != tc.code && errors.Is(got, other.err) {
						t.Errorf("%v also matches %v", got, other.err)
					}
				}
			}
		})
	}
}

func TestErrorFields(t *testing.T) {
	we, got := roundTrip(t, &Error{Code: CodeRateLimited, RetryAfterMS: 1500})
	if !errors.Is(got, ErrRateLimited) || we.RetryAfter() != 1500*time.Millisecond {
		t.Errorf("got %v, retry after %v; want rate_limited, 1.5s", got, we.RetryAfter())
	}
	if s := got.Error(); !strings.Contains(s, "1.5s") {
		t.Errorf("Error() = %q, want the retry delay in it", s)
	}
	we, got = roundTrip(t, fmt.Errorf("fetch: %w", &Error{Code: CodeEpochMismatch, Epoch: tEpoch}))
	if !errors.Is(got, ErrEpochMismatch) || we.Epoch != tEpoch {
		t.Errorf("got %v, epoch %#x; want epoch_mismatch, %#x", got, we.Epoch, tEpoch)
	}
	e := &Error{Code: CodeNotFound, Message: fmt.Sprintf("no group %s", tGroup)}
	if we, _ := roundTrip(t, e); !reflect.DeepEqual(we, e) {
		t.Errorf("an *Error's round trip = %+v, want %+v", we, e)
	}
	// A member that no longer serves a cell's group names those that do.
	e = &Error{Code: CodeUnavailable, Leader: &Replica{Addr: "10.0.0.2:7374", Fingerprint: tDaemon, Leader: true},
		Replicas: []Replica{{Addr: "10.0.0.2:7374", Fingerprint: tDaemon, Leader: true}, {Addr: "10.0.0.3:7374", Fingerprint: tBob}}}
	if we, _ := roundTrip(t, e); !reflect.DeepEqual(we, e) {
		t.Errorf("an *Error with replicas: round trip = %+v, want %+v", we, e)
	}
	// A refusal that changed nothing says so (key 7: true).
	e = &Error{Code: CodeUnavailable, Message: "the server is shutting down", Unchanged: true}
	if we, _ := roundTrip(t, e); !reflect.DeepEqual(we, e) {
		t.Errorf("an unchanged *Error: round trip = %+v, want %+v", we, e)
	}
	if b, err := encMode.Marshal(e); err != nil || !bytes.Contains(b, []byte{0x07, 0xf5}) {
		t.Errorf("an unchanged *Error encodes as %x (%v), want key 7 true (07 f5)", b, err)
	}
}

// TestErrorUnknownCode: a code from a newer peer is an internal error here.
func TestErrorUnknownCode(t *testing.T) {
	we, got := roundTrip(t, &Error{Code: 4242, Message: "quota exceeded"})
	if !errors.Is(got, ErrInternal) {
		t.Errorf("errors.Is(%v, ErrInternal) = false", got)
	}
	if we.Code != 4242 || we.Code.String() != "code_4242" {
		t.Errorf("code = %d %q, want 4242 kept", we.Code, we.Code)
	}
	if got.Error() != "quota exceeded" {
		t.Errorf("Error() = %q, want the peer's message", got.Error())
	}
	if s := (&Error{Code: 4242}).Error(); s != ErrInternal.Error() {
		t.Errorf("Error() without a message = %q", s)
	}
}

// TestErrorNoLeak: an error wrapping no sentinel is internal, with a generic
// message that says nothing of what failed.
func TestErrorNoLeak(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("open /var/lib/huddle/secret.key: permission denied"),
		fmt.Errorf("store: %w", errors.New("shard 3 corrupt at offset 4096")),
		fmt.Errorf("context: %w", ErrInternal),
		nil,
	} {
		we, got := roundTrip(t, err)
		if we.Code != CodeInternal || !errors.Is(got, ErrInternal) {
			t.Errorf("%v: code %v, want internal", err, we.Code)
		}
		if we.Message != "internal error" {
			t.Errorf("%v: message %q leaks or differs from %q", err, we.Message, "internal error")
		}
	}
}

// TestErrorNoLocalDetail: an error that wraps a sentinel and also a file or
// network error keeps its code but travels with the sentinel's own text:
// paths and addresses of the server stay on the server.
func TestErrorNoLocalDetail(t *testing.T) {
	pathErr := &fs.PathError{Op: "open", Path: "/var/lib/huddle/members.json", Err: fs.ErrPermission}
	netErr := &net.OpError{Op: "dial", Net: "udp", Err: errors.New("10.1.2.3:7373: refused")}
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{fmt.Errorf("join: %w: %w", ErrUnavailable, pathErr), CodeUnavailable},
		{fmt.Errorf("%w: %w", ErrNotFound, netErr), CodeNotFound},
		{fmt.Errorf("%w: %w", ErrBadRequest, os.NewSyscallError("sendmsg", errors.New("EPERM"))), CodeBadRequest},
	} {
		we := ToError(tc.err)
		if we.Code != tc.want || we.Message != tc.want.Sentinel().Error() {
			t.Errorf("ToError(%v) = %v %q, want %v with the sentinel's text", tc.err, we.Code, we.Message, tc.want)
		}
	}
}

// TestToErrorCodecErrors: codec errors travel as bad_request or too_large.
func TestToErrorCodecErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{fmt.Errorf("%w: cbor: duplicate key", ErrMalformed), CodeBadRequest},
		{ErrEmptyFrame, CodeBadRequest},
		{fmt.Errorf("frame declares 2000000 bytes: %w", ErrFrameTooLarge), CodeTooLarge},
		{fmt.Errorf("name: %w", ErrTooLarge), CodeTooLarge},
	} {
		if got := ToError(tc.err).Code; got != tc.want {
			t.Errorf("ToError(%v).Code = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestErrorShownAsOneLine checks that an Error's text, a peer's, is one
// line of bounded length with no character a terminal acts on or hides:
// a hostile server's message reached users' terminals as it was.
func TestErrorShownAsOneLine(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"not a member", "not a member"},
		{"refused\r\nhuddle: fake line", "refused\uFFFD\uFFFDhuddle: fake line"},
		{"\x1b]52;c;aGk=\x07\x1b[2J\u009b31m", "\uFFFD]52;c;aGk=\uFFFD\uFFFD[2J\uFFFD31m"},
		{"evil\u202e\u200bname\xff", "evil\uFFFD\uFFFDname\uFFFD"},
		{"été", "été"},
		{strings.Repeat("a", MaxShownMessage-1) + "é", strings.Repeat("a", MaxShownMessage-1) + "..."},
		{strings.Repeat("b", 1<<20), strings.Repeat("b", MaxShownMessage) + "..."},
	} {
		got := (&Error{Code: CodeUnauthorized, Message: tc.msg}).Error()
		if got != tc.want {
			t.Errorf("Error() of %.40q = %.60q..., want %.60q...", tc.msg, got, tc.want)
		}
	}
}

// TestRetryAfterBounded checks that a peer's retry_after_ms, any uint,
// is a wait of 0..MaxRetryAfter: 2^64-1 ms converted as it came was -1 ms,
// a retry at once, and a client paced by it sent in a loop.
func TestRetryAfterBounded(t *testing.T) {
	for _, tc := range []struct {
		ms   uint64
		want time.Duration
	}{
		{0, 0},
		{250, 250 * time.Millisecond},
		{3_600_000, MaxRetryAfter},
		{1<<63 - 1, MaxRetryAfter},
		{1 << 63, MaxRetryAfter},
		{1<<64 - 1, MaxRetryAfter},
		{18446744073709, MaxRetryAfter}, // wraps to a positive 2.5 h
	} {
		if got := (&Error{Code: CodeRateLimited, RetryAfterMS: tc.ms}).RetryAfter(); got != tc.want {
			t.Errorf("retry_after_ms %d: RetryAfter %v, want %v", tc.ms, got, tc.want)
		}
	}
}

package wire

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckAddr: the exported form of a registration's and a replica's
// address rule (PROTOCOL.md §7.1), as cell.Peer uses it: host:port with a
// decimal port 1..65535, too_large over 64 bytes, bad_request otherwise.
func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want error
	}{
		{"127.0.0.1:7374", nil},
		{"[fd00::1]:7374", nil},
		{"box.example:1", nil},
		{"127.0.0.1:http", ErrBadRequest},
		{"127.0.0.1:0", ErrBadRequest},
		{"127.0.0.1:65536", ErrBadRequest},
		{"127.0.0.1", ErrBadRequest},
		{"box one:7374", ErrBadRequest},
		{":7374", ErrBadRequest},
		{"", ErrBadRequest},
		{strings.Repeat("h", 60) + ":7374", ErrTooLarge},
	} {
		err := CheckAddr(tc.addr)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("CheckAddr(%q) = %v, want %v", tc.addr, err, tc.want)
		}
	}
}

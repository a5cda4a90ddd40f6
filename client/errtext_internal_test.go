package client

import (
	"errors"
	"strings"
	"testing"
)

// TestResolveShowsAddress: an address a registry listed with a line break
// or a format character is refused before net's resolver, whose error
// quotes the address as it came, and the error shows it as one line.
func TestResolveShowsAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9\nfake line", "host\u202e:1", "\x1b]0;title\x07:1"} {
		_, err := resolve(addr)
		if err == nil {
			t.Fatalf("resolve %q: no error", addr)
		}
		if strings.ContainsAny(err.Error(), "\n\u202e\x1b\x07") {
			t.Errorf("resolve %q: error quotes it as listed: %q", addr, err)
		}
	}
}

// TestResolveRefusesGroupAddr: an address that names a multicast or
// broadcast group is refused before anything is sent to it
// (ErrGroupAddr), while loopback and the unspecified address, which a
// one-machine setup dials to reach itself, resolve.
func TestResolveRefusesGroupAddr(t *testing.T) {
	for _, addr := range []string{"224.0.0.251:7373", "239.1.2.3", "[ff02::fb]:5353", "255.255.255.255:7373"} {
		if ua, err := resolve(addr); !errors.Is(err, ErrGroupAddr) {
			t.Errorf("resolve %q = %v, %v; want ErrGroupAddr", addr, ua, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7373", "[::1]:7373", "0.0.0.0:7373", "localhost"} {
		if _, err := resolve(addr); err != nil {
			t.Errorf("resolve %q: %v", addr, err)
		}
	}
}

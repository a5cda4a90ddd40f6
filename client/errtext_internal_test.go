package client

import (
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

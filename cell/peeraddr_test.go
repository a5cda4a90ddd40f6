package cell

import (
	"errors"
	"testing"
)

// TestParsePeerAddress: a member's address is listed to clients as a
// Replica's, so a peer is refused an address a Replica may not have (a
// service name for a port, a blank in the host), which raft took until
// session 20: cell_add of "box:http" made every registration of the cell's
// groups bad_request.
func TestParsePeerAddress(t *testing.T) {
	const fp = "fvyr-mqvx-e2ye-ialc-psu7-xlbs-6xef-gd5r-sa6m-jwyc-ewdr-peq2-jcaq"
	for _, addr := range []string{"127.0.0.1:http", "box one:7374", "127.0.0.1:0", "127.0.0.1", "127.0.0.1:70000"} {
		if _, err := ParsePeer(fp + "@" + addr); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParsePeer(...@%s): %v, want ErrInvalidConfig", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7374", "[::1]:7374", "box.example:7374"} {
		if _, err := ParsePeer(fp + "@" + addr); err != nil {
			t.Errorf("ParsePeer(...@%s): %v", addr, err)
		}
	}
}

//go:build !linux

package cell

import (
	"net"
	"time"
)

// connRTT: the kernel's round trip is read on Linux only (rtt_linux.go);
// elsewhere none is known, and the election timeouts stay as configured.
func connRTT(net.Conn, time.Duration) (time.Duration, bool) { return 0, false }

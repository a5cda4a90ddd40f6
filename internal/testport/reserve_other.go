//go:build !unix

package testport

import "os"

// reserve takes port for this process; without file locks it cannot keep
// other test processes from it (reserve_unix.go).
func reserve(port int) bool { return true }

// unreserve lets go of port's reservation: there is none (reserve).
func unreserve(port int) {}

// lock takes port among the test processes on this host; without file
// locks it cannot, and the port counts as taken (reserve_unix.go).
func lock(port int) (f *os.File, ok bool) { return nil, true }

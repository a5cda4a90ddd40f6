//go:build !linux

package testbin

// stopForker has nothing to end: Start is Linux's (Pdeathsig).
func stopForker() {}

package testlog

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// Output is t.Output() for a log that may outlive t. The code under test
// may leave goroutines running past its Close (a daemon goes on without
// its loops, or a request stuck in a disk, after a bound), and one that
// logs once t has ended makes testing panic ("Log in goroutine after ...
// has completed"), which ends the whole test binary: a healthy but loaded
// machine could do it to any test whose daemon's loops outlived the bound.
// What is written once t's cleanups reach the one Output registers (it
// runs after those registered later: the daemon's Close) goes to os.Stderr
// instead, each write prefixed with t's name. Lines written before are
// t's; none is lost.
func Output(t testing.TB) io.Writer { return OutputOr(t, os.Stderr) }

// OutputOr is Output with what is written once t has ended going to late.
func OutputOr(t testing.TB, late io.Writer) io.Writer {
	o := &output{out: t.Output(), late: late, name: t.Name()}
	t.Cleanup(func() {
		o.mu.Lock()
		o.ended = true // no write to t's output is under way, and none will be
		o.mu.Unlock()
	})
	return o
}

type output struct {
	mu    sync.Mutex
	out   io.Writer // t.Output(), until t ends
	late  io.Writer
	name  string
	ended bool
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.ended {
		return o.out.Write(p)
	}
	if _, err := fmt.Fprintf(o.late, "%s, after it ended: %s", o.name, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

package client

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
)

// TestCloseWaitsForTheFirst: a Close called while another is still
// waiting for the Client's goroutines returns only once they are done, as
// the first does (it returned at once, with them still running: a program
// that closed from two places could exit, or check for leaks, too early).
func TestCloseWaitsForTheFirst(t *testing.T) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	// A goroutine of the Client's that outlasts the start of Close until
	// the test lets it end.
	closing, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if err := c.start(func(ctx context.Context) {
		<-ctx.Done()
		close(closing)
		<-release
		close(ended)
	}); err != nil {
		t.Fatal(err)
	}
	go c.Close()
	<-closing

	second := make(chan bool, 1)
	go func() {
		c.Close()
		select {
		case <-ended:
			second <- true
		default:
			second <- false
		}
	}()
	// Let the goroutine end once the second Close is blocked in Close
	// beside the first, or has returned.
	deadline := time.Now().Add(10 * time.Second)
	for closers() < 2 && len(second) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second Close neither returned nor waited")
		}
		runtime.Gosched()
	}
	close(release)
	if !<-second {
		t.Fatal("the second Close returned while the Client's goroutine was still running")
	}
}

// closers counts the goroutines inside Client.Close.
func closers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "client.(*Client).Close(")
}

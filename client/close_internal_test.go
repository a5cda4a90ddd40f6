package client

import (
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
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

// TestGroupCloseWaitsForBatching: a Group's Close returns only once the
// goroutines its batched sends started have ended, as the Client's Close
// does. It returned while they still ran, so a program that closed a
// handle and then checked for leaks (goleak), or relied on nothing of the
// handle still running, found the batcher's goroutine. Here that goroutine
// is held at its last step (failing what is queued) until the test lets it
// go: Close must still be waiting then.
func TestGroupCloseWaitsForBatching(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // the daemon: answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := newTestClient(t, Config{DialTimeout: time.Minute})
	defer c.Close()
	g, err := c.Group(wire.GroupEntry{Group: wire.UUID{7}, Name: "lobby", Addrs: []string{silent.LocalAddr().String()}, Fingerprint: wire.Fingerprint{1}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.batcher() // as the first batched Send does
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock() // the batcher's close, at its end, waits for it
	closed := make(chan struct{})
	go func() {
		g.Close()
		close(closed)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !inStacks("[sync.Mutex.Lock", "client.(*batcher).close(") {
		if time.Now().After(deadline) {
			b.mu.Unlock()
			t.Fatal("the batcher never began to close")
		}
		runtime.Gosched()
	}
	// Close has stopped the batcher; it must wait for it, not return.
	for !inStacks("[chan receive", "client.(*Group).Close(") {
		select {
		case <-closed:
			b.mu.Unlock()
			t.Fatal("Group.Close returned while its batcher's goroutine was still running")
		default:
		}
		if time.Now().After(deadline) {
			b.mu.Unlock()
			t.Fatal("Group.Close neither returned nor waited")
		}
		runtime.Gosched()
	}
	b.mu.Unlock()
	<-closed
	// Its goroutines have ended their work; each leaves its stack a moment
	// after.
	for inStacks("", "client.(*batcher).") {
		if time.Now().After(deadline) {
			t.Fatal("a batcher goroutine still runs after Group.Close returned")
		}
		runtime.Gosched()
	}
	if err := g.Close(); err != nil { // again: at once
		t.Fatal(err)
	}
}

// inStacks reports whether a goroutine's stack has state (its header's
// "[reason", "" for any) and calls fn.
func inStacks(state, fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, state) && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}

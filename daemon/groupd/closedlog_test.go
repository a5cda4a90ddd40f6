package groupd

import (
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// TestClosedLogAnswersUnavailable: a group whose log is closed under the
// daemon's handlers (store.ErrClosed: the daemon closes its logs as it
// shuts down) answers a fetch, and a watch already caught up and waiting,
// with unavailable naming the closed log: the client asks again from its
// cursor. Until session 19 a closed log's query was an empty page, no
// error: the fetch ended as at the end of the log and the watch waited on
// as if caught up, each reader believing it had everything.
func TestClosedLogAnswersUnavailable(t *testing.T) {
	var inner Log
	d := serveOverLogWith(t, func(c *Config) {
		c.HeartbeatInterval = time.Hour // the watch below waits on the log alone
	}, func(l Log) Log { inner = l; return l })
	g := gid(d)
	p := joined(t, d, "ann")
	_, err := p.send(g, outgoing("m1", "m2", "m3"))
	must(t, err)

	// A watch sent everything: caught up, it waits on the log's Changed.
	str := p.open(request(t, wire.OpWatch, wire.Watch{Group: g}))
	defer str.CancelRead(0x1)
	str.SetReadDeadline(time.Now().Add(testTimeout))
	var seen uint64
	for seen < 3 {
		f, err := readFrame(str)
		must(t, err)
		switch f.kind {
		case wire.KindStart:
		case wire.KindMessages:
			var m wire.Messages
			f.decode(t, &m)
			seen = m.Messages[len(m.Messages)-1].Seq
		default:
			t.Fatalf("watch: frame of kind %v before its 3 messages", f.kind)
		}
	}
	// (Whether it waits already or queries once more, the log's Close
	// must end it: a waiter is woken, a query refused.)

	must(t, inner.Close())
	unavailable := func(what string, err error) {
		t.Helper()
		we, ok := err.(*wire.Error)
		if !ok || we.Code != wire.CodeUnavailable || !strings.Contains(we.Message, "log is closed") {
			t.Errorf("%s of the group whose log closed: %v, want unavailable naming the closed log", what, err)
		}
	}
	f, err := readFrame(str)
	must(t, err)
	if f.kind != wire.KindError {
		t.Fatalf("the watch caught up when the log closed: frame of kind %v, want an error", f.kind)
	}
	unavailable("the watch", f.err)

	msgs, end, err := p.fetch(wire.Fetch{Group: g})
	if err == nil {
		t.Fatalf("fetch of the group whose log closed: %d messages, end %+v, no error; want unavailable", len(msgs), end)
	}
	unavailable("fetch", err)
}

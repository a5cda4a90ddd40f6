package groupd

import (
	"sync/atomic"
	"testing"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// holeLog is a group's log that, once armed, runs between before the
// second After of the next fetch: the fetch has queried its page's first
// chunk, and sends meanwhile make retention drop what follows it.
type holeLog struct {
	Log
	afters  atomic.Int32 // Afters since armed; -1: not armed
	between func()
}

func (l *holeLog) arm(between func()) {
	l.between = between
	l.afters.Store(0)
}

func (l *holeLog) After(seq uint64, limit int, dst []store.Message) ([]store.Message, store.Cursor, error) {
	if l.afters.Load() >= 0 && l.afters.Add(1) == 2 {
		l.afters.Store(-1)
		l.between()
	}
	return l.Log.After(seq, limit, dst)
}

// TestFetchPageEndsAtRetentionHole: a fetch page longer than one query of
// the log (queryChunk) whose next messages retention drops while the
// daemon sends the first ends before the hole (more set), so that every
// reply is a run of consecutive messages (PROTOCOL.md, Messages) and the
// next page, beginning past the hole, reports it (its End's first). The
// page went on past the hole, and the Go client, which since session 17
// refuses a reply skipping sequence numbers as the daemon's error, failed
// a fetch of a busy group at its limits with ErrProtocol.
func TestFetchPageEndsAtRetentionHole(t *testing.T) {
	const limit = 2048
	log := &holeLog{}
	log.afters.Store(-1)
	d := serveOverLogWith(t, func(c *Config) {
		c.SendRate = -1
		c.Retention.MaxMessages = limit
		c.Storage = StorageConfig{Memory: true}
	}, func(inner Log) Log { log.Log = inner; return log })
	cl, err := client.New(client.Config{Identity: newKey(t), Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { cl.Close() })
	g, err := cl.Group(wire.GroupEntry{Group: gid(d), Name: "general", Addrs: []string{d.Addr().String()}, Fingerprint: d.Fingerprint()})
	must(t, err)
	_, err = g.Join(testCtx(t), "ann", nil)
	must(t, err)
	send := func(n int) error {
		for ; n > 0; n -= DefaultMaxBatch {
			msgs := make([]client.Outgoing, min(n, DefaultMaxBatch))
			for i := range msgs {
				msgs[i] = client.Outgoing{ID: client.NewID(), Body: []byte("m")}
			}
			if _, err := g.SendMessages(testCtx(t), msgs); err != nil {
				return err
			}
		}
		return nil
	}
	must(t, send(limit))
	// Between the page's first chunk and its second, twice the limit
	// more: retention drops every message past the first chunk.
	// dropPast runs on the daemon's handler goroutine: its outcome comes
	// back through a channel, since the reply read over the network is
	// no happens-before edge the race detector sees.
	sendErr := make(chan error, 1)
	dropPast := func() { sendErr <- send(2 * limit) }
	dropped := func() error {
		select {
		case err := <-sendErr:
			return err
		default: // dropPast runs before the page's second chunk is read
			t.Fatal("the fetch did not query a second chunk of its page")
			return nil
		}
	}

	reader := joined(t, d, "bob")
	log.arm(dropPast)
	zero := uint64(0)
	msgs, end, err := reader.fetch(wire.Fetch{Group: gid(d), After: &zero})
	must(t, err)
	must(t, dropped())
	if len(msgs) == 0 {
		t.Fatal("the page holds no message")
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq != msgs[i-1].Seq+1 {
			t.Fatalf("the page holds message %d after message %d: a reply skipped the messages retention dropped while it was sent", msgs[i].Seq, msgs[i-1].Seq)
		}
	}
	last := msgs[len(msgs)-1].Seq
	if end.Next != last || !end.More {
		t.Fatalf("the page ends with next %d, more %v; want next %d (its last message) and more", end.Next, end.More, last)
	}
	next, end2, err := reader.fetch(wire.Fetch{Group: gid(d), After: &end.Next, Limit: 1})
	must(t, err)
	if end2.First <= last+1 || len(next) != 1 || next[0].Seq != end2.First {
		t.Fatalf("the next page: first %d, messages %d; want it to begin past the hole after %d, at its End's first", end2.First, len(next), last)
	}

	// The Go client pages through it, told of the gap.
	log.arm(dropPast)
	var n int
	cur, err := g.Fetch(testCtx(t), client.Query{}, func(client.Message) bool { n++; return true })
	must(t, dropped())
	if err != nil {
		t.Fatalf("a fetch of the whole log while retention dropped messages past its first chunk: %v, after %d messages", err, n)
	}
	if !cur.Gap {
		t.Errorf("the fetch's cursor %+v reports no gap, though retention dropped messages between its pages", cur)
	}
}

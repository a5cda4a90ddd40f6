package server

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// BenchmarkRepliesTogether is the reply side of a cell's unbatched sends
// (issue 20, target 2): 16 operations in flight on one connection, whose
// handlers all wait for one event (their raft entry applied), then are
// answered. each: every handler, woken, writes its own reply (Result),
// and the connection's sender runs after each. together: the goroutine
// that learns of the event writes every reply first (TryResult), then
// wakes the handlers, as a cell's send is answered
// (cell.Node.SendAnswered). It reports the packets the client receives
// per reply.
func BenchmarkRepliesTogether(b *testing.B) {
	for _, together := range []bool{false, true} {
		name := "each"
		if together {
			name = "together"
		}
		b.Run(name, func(b *testing.B) { benchReplies(b, together) })
	}
}

func benchReplies(b *testing.B, together bool) {
	const inFlight = 16
	type waiting struct {
		c    *Call
		done chan struct{}
	}
	arrived := make(chan waiting)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // the event: a round of inFlight operations, answered at once
		for {
			round := make([]waiting, 0, inFlight)
			for len(round) < inFlight {
				select {
				case w := <-arrived:
					round = append(round, w)
				case <-ctx.Done():
					return
				}
			}
			for _, w := range round {
				if together {
					w.c.TryResult(wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: 1}}})
				}
				close(w.done)
			}
		}
	})
	id, err := identity.Generate()
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{}, Setup{Listen: "127.0.0.1:0"}, func(ctx context.Context, c *Call) error {
		var req wire.Join
		if err := c.Decode(&req); err != nil {
			return err
		}
		w := waiting{c, make(chan struct{})}
		select {
		case arrived <- w:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-w.done
		if c.Answered() {
			return nil
		}
		return c.Result(wire.Sent{Epoch: 1, Acks: []wire.Ack{{Seq: 1, Time: 1}}})
	})
	if err := s.Listen(id); err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn := floorDial(ctx, b, s.Addr(), id)
	req, err := wire.AppendFrame(nil, uint64(wire.OpJoin), wire.Join{Group: wire.UUID{1}, Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	per := (b.N + inFlight - 1) / inFlight // every caller alike: rounds stay whole
	heard := conn.ConnectionStats().PacketsReceived
	b.ResetTimer()
	var callers sync.WaitGroup
	for range inFlight {
		callers.Go(func() {
			for range per {
				if err := replyCall(ctx, conn, req); err != nil {
					b.Error(err)
					cancel()
					return
				}
			}
		})
	}
	callers.Wait()
	b.StopTimer()
	b.ReportMetric(float64(conn.ConnectionStats().PacketsReceived-heard)/float64(per*inFlight), "packets/reply")
	conn.CloseWithError(0, "")
	cancel()
}

// replyCall runs one operation: req on a stream of its own, and its reply
// read to the stream's end.
func replyCall(ctx context.Context, conn *quic.Conn, req []byte) error {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if _, err := str.Write(req); err != nil {
		return err
	}
	str.Close()
	_, err = io.Copy(io.Discard, str)
	return err
}

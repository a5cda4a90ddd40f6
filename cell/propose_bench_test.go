package cell

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/store"
)

// BenchmarkSendConcurrent is a leader's cost per unbatched send on a
// three-member cell in one process, with 64 senders of one message each
// gathered into shared raft entries (propose.go): the proposer's work,
// raft's, the transport's and the state machines' of all three members
// together, per send.
func BenchmarkSendConcurrent(b *testing.B) {
	c := newTestCell(b, 3, false, func(cfg *Config) {
		// One leader throughout, whatever the machine's load.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
	})
	l := c.leader()
	g := l.group("lobby")
	body := make([]byte, 256)
	var next atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(32) // 64 senders on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e := []store.Entry{{ID: newID(int(next.Add(1))), From: alice, Body: body}}
			if _, err := l.node.Send(ctx, g.ID, e, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

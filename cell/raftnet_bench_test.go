package cell

import (
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkRaftNetAppendEntries sends AppendEntries requests of 4 entries
// of 10 KB (a loaded cell's entries gather tens of messages each) from
// one raftNet to another on 127.0.0.1 through a pipeline, as a leader
// replicates, and reports entries/s.
func BenchmarkRaftNetAppendEntries(b *testing.B) {
	a, _, target, _ := raftNetPair(b)
	p, err := a.AppendEntriesPipeline("b", target)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	logs := entries(1, 4)
	done := make(chan error, 1)
	go func() {
		for range b.N {
			f := <-p.Consumer()
			if err := f.Error(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ReportAllocs()
	b.SetBytes(4 * 10_000)
	b.ResetTimer()
	for i := range b.N {
		req := &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: uint64(4 * i), Entries: logs}
		if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "entries/s")
}

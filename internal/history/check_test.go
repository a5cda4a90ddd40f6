package history

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/wire"
	"pgregory.net/rapid"
)

// t0 is the start of every generated run.
var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// at is the moment step i of a generated run: message #i is acknowledged
// at at(i), and a read at step j starts just after at(j).
func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }

func idOf(salt uint64, n int) wire.ID {
	var id wire.ID
	binary.BigEndian.PutUint64(id[:8], salt)
	binary.BigEndian.PutUint64(id[8:], uint64(n))
	return id
}

// run is a generated history before it is recorded: a correct one, which
// a plant function then breaks in one way.
type run struct {
	log      []Message // the group's log, #1 first
	sends    []Send
	reads    []Read
	watches  []watchSpec
	clients  []string
	replicas []string
	epoch    uint64
	salt     uint64
}

type watchSpec struct {
	client, replica string
	after           uint64
	events          []Message
	resets, gaps    int
}

func (r *run) history() *History {
	h := New()
	for _, s := range r.sends {
		h.Send(s)
	}
	for _, rd := range r.reads {
		h.Read(rd)
	}
	for _, ws := range r.watches {
		w := h.Watch(ws.client, ws.replica, ws.after)
		for _, m := range ws.events {
			w.Message(m)
		}
		for range ws.resets {
			w.Reset()
		}
		for range ws.gaps {
			w.Gap()
		}
	}
	return h
}

// genRun draws a correct history: a log of messages, each sent by one
// client in attempts of which the last may be acknowledged (and some
// acknowledged IDs sent again, answered as duplicates), messages that
// failed and were never stored, reads from replicas at every moment that
// honour read-your-writes, watches over stretches of the log, and a final
// read of the whole log from every replica.
func genRun(t *rapid.T) *run {
	r := &run{epoch: rapid.Uint64Range(1, 1<<40).Draw(t, "epoch"), salt: rapid.Uint64().Draw(t, "salt")}
	for i := range rapid.IntRange(1, 3).Draw(t, "clients") {
		r.clients = append(r.clients, fmt.Sprint("c", i))
	}
	for i := range rapid.IntRange(1, 3).Draw(t, "replicas") {
		r.replicas = append(r.replicas, fmt.Sprint("r", i))
	}
	n := rapid.IntRange(0, 40).Draw(t, "messages")
	ts := t0.UnixNano()
	for i := 1; i <= n; i++ {
		ts += rapid.Int64Range(1, 1e6).Draw(t, "tick")
		m := Message{Seq: uint64(i), Time: ts, ID: idOf(r.salt, i), Body: fmt.Appendf(nil, "body %d", i)}
		r.log = append(r.log, m)
		client := rapid.SampledFrom(r.clients).Draw(t, "client")
		s := Send{Client: client, ID: m.ID, Body: m.Body, Start: at(i - 1), End: at(i)}
		failures := rapid.IntRange(0, 2).Draw(t, "failures")
		unacked := rapid.IntRange(0, 4).Draw(t, "unacked") == 0
		if unacked {
			failures = max(failures, 1) // stored, but its client never heard
		}
		for range failures {
			f := s
			f.Err = "timeout"
			r.sends = append(r.sends, f)
		}
		if unacked {
			continue
		}
		s.Acked, s.Seq, s.Time, s.Epoch = true, m.Seq, m.Time, r.epoch
		r.sends = append(r.sends, s)
		if rapid.IntRange(0, 5).Draw(t, "resend") == 0 {
			d := s
			d.Duplicate = true
			r.sends = append(r.sends, d)
		}
	}
	for k := range rapid.IntRange(0, 3).Draw(t, "never stored") {
		// Failed in doubt and not stored, or refused (nothing stored, as
		// the refusal promised).
		refused := rapid.Bool().Draw(t, "refused")
		r.sends = append(r.sends, Send{Client: r.clients[0], ID: idOf(r.salt, n+1+k), Body: []byte("lost in flight"), Start: at(0), End: at(1), Err: "unavailable", Refused: refused})
	}
	for range rapid.IntRange(0, 6).Draw(t, "reads") {
		step := rapid.IntRange(0, n).Draw(t, "read step")
		after := rapid.IntRange(0, n).Draw(t, "read after")
		upto := max(step, after)
		upto = rapid.IntRange(upto, n).Draw(t, "read upto")
		r.reads = append(r.reads, Read{
			Client: rapid.SampledFrom(r.clients).Draw(t, "reader"), Replica: rapid.SampledFrom(r.replicas).Draw(t, "replica"),
			After: uint64(after), Start: at(step).Add(time.Microsecond), End: at(step).Add(2 * time.Microsecond),
			Epoch: r.epoch, Messages: slices.Clone(r.log[after:upto]),
		})
	}
	for range rapid.IntRange(0, 3).Draw(t, "watches") {
		after := rapid.IntRange(0, n).Draw(t, "watch after")
		upto := rapid.IntRange(after, n).Draw(t, "watch upto")
		r.watches = append(r.watches, watchSpec{client: rapid.SampledFrom(r.clients).Draw(t, "watcher"), replica: rapid.SampledFrom(r.replicas).Draw(t, "watched"),
			after: uint64(after), events: slices.Clone(r.log[after:upto])})
	}
	for _, rep := range r.replicas {
		r.reads = append(r.reads, Read{Client: "checker", Replica: rep, Start: at(n + 1), End: at(n + 2), Epoch: r.epoch, Messages: slices.Clone(r.log), Final: true})
	}
	return r
}

func TestCorrectHistoriesPass(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRun(t)
		res := r.history().Check()
		if err := res.Err(); err != nil {
			t.Fatalf("a correct history fails: %v", err)
		}
		if res.Held != len(r.log) || res.Replicas != len(r.replicas) {
			t.Fatalf("checked %d messages on %d replicas, want %d on %d", res.Held, res.Replicas, len(r.log), len(r.replicas))
		}
	})
}

// ackedSeqs returns the sequences acknowledged in r, in order.
func (r *run) ackedSeqs() []uint64 {
	var out []uint64
	for _, s := range r.sends {
		if s.Acked && !s.Duplicate {
			out = append(out, s.Seq)
		}
	}
	return out
}

// finals returns the indexes of r's final reads.
func (r *run) finals() []int {
	var out []int
	for i, rd := range r.reads {
		if rd.Final {
			out = append(out, i)
		}
	}
	return out
}

// renumber gives msgs the sequence numbers after, after+1, ... as a
// replica that lost or gained a message would.
func renumber(msgs []Message, after uint64) []Message {
	out := slices.Clone(msgs)
	for i := range out {
		out[i].Seq = after + uint64(i) + 1
	}
	return out
}

// plants are the bugs a store or a replication layer could have, each
// planted in a correct history. A plant returns false when the drawn
// history has no room for its bug (no acknowledged message, say).
var plants = map[Kind]func(t *rapid.T, r *run) bool{
	Lost: func(t *rapid.T, r *run) bool {
		acked := r.ackedSeqs()
		if len(acked) == 0 {
			return false
		}
		seq := rapid.SampledFrom(acked).Draw(t, "lost seq")
		f := r.finals()
		i := f[rapid.IntRange(0, len(f)-1).Draw(t, "replica")]
		// The replica lost the message, and those after it moved up.
		msgs := r.reads[i].Messages
		r.reads[i].Messages = append(msgs[:seq-1:seq-1], renumber(msgs[seq:], seq-1)...)
		return true
	},
	Duplicate: func(t *rapid.T, r *run) bool {
		if len(r.log) == 0 {
			return false
		}
		k := rapid.IntRange(0, len(r.log)-1).Draw(t, "duplicated")
		dup := r.log[k]
		dup.Seq, dup.Time = uint64(len(r.log)+1), r.log[len(r.log)-1].Time+1
		for _, i := range r.finals() {
			r.reads[i].Messages = append(r.reads[i].Messages, dup)
		}
		return true
	},
	Gap: func(t *rapid.T, r *run) bool {
		if len(r.log) < 2 {
			return false
		}
		// Every replica skips a sequence number.
		k := rapid.IntRange(1, len(r.log)-1).Draw(t, "skipped")
		for _, i := range r.finals() {
			for j := k; j < len(r.reads[i].Messages); j++ {
				r.reads[i].Messages[j].Seq++
			}
		}
		return true
	},
	Diverged: func(t *rapid.T, r *run) bool {
		if len(r.log) == 0 || len(r.replicas) < 2 {
			return false
		}
		// The second replica holds another body at one sequence.
		k := rapid.IntRange(0, len(r.log)-1).Draw(t, "diverged")
		f := r.finals()
		msgs := slices.Clone(r.reads[f[1]].Messages)
		msgs[k].Body = []byte("other")
		r.reads[f[1]].Messages = msgs
		return true
	},
	TimeOrder: func(t *rapid.T, r *run) bool {
		if len(r.log) < 2 {
			return false
		}
		k := rapid.IntRange(1, len(r.log)-1).Draw(t, "not after")
		stamp := r.log[k-1].Time - rapid.Int64Range(0, 5).Draw(t, "back")
		r.setTime(uint64(k+1), stamp)
		return true
	},
	AckMismatch: func(t *rapid.T, r *run) bool {
		var acked []int
		for i, s := range r.sends {
			if s.Acked {
				acked = append(acked, i)
			}
		}
		if len(acked) == 0 {
			return false
		}
		i := rapid.SampledFrom(acked).Draw(t, "mismatched ack")
		if rapid.Bool().Draw(t, "seq or time") {
			r.sends[i].Time++
		} else {
			r.sends[i].Seq = r.sends[i].Seq%uint64(len(r.log)) + 1
			if len(r.log) == 1 {
				r.sends[i].Time++
			}
		}
		return true
	},
	Phantom: func(t *rapid.T, r *run) bool {
		m := Message{Seq: uint64(len(r.log) + 1), ID: idOf(^r.salt, 0), Body: []byte("never sent"), Time: t0.UnixNano()}
		if len(r.log) > 0 {
			m.Time = r.log[len(r.log)-1].Time + 1
		}
		if rapid.Bool().Draw(t, "body") && len(r.log) > 0 {
			// A sent ID held with another body, wherever it is read.
			seq := uint64(rapid.IntRange(1, len(r.log)).Draw(t, "altered"))
			for i := range r.reads {
				r.reads[i].Messages = slices.Clone(r.reads[i].Messages)
				for j := range r.reads[i].Messages {
					if r.reads[i].Messages[j].Seq == seq {
						r.reads[i].Messages[j].Body = []byte("altered")
					}
				}
			}
			for i := range r.watches {
				r.watches[i].events = slices.Clone(r.watches[i].events)
				for j := range r.watches[i].events {
					if r.watches[i].events[j].Seq == seq {
						r.watches[i].events[j].Body = []byte("altered")
					}
				}
			}
			return true
		}
		for _, i := range r.finals() {
			r.reads[i].Messages = append(r.reads[i].Messages, m)
		}
		return true
	},
	StaleRead: func(t *rapid.T, r *run) bool {
		var acked []Send
		for _, s := range r.sends {
			if s.Acked && !s.Duplicate {
				acked = append(acked, s)
			}
		}
		if len(acked) == 0 {
			return false
		}
		s := rapid.SampledFrom(acked).Draw(t, "stale")
		// The client reads after its ack and sees the log only up to
		// the message before.
		r.reads = append(r.reads, Read{Client: s.Client, Replica: r.replicas[0], Start: s.End.Add(time.Microsecond),
			End: s.End.Add(2 * time.Microsecond), Epoch: r.epoch, Messages: slices.Clone(r.log[:s.Seq-1])})
		return true
	},
	EpochChanged: func(t *rapid.T, r *run) bool {
		if len(r.reads) < 2 && len(r.ackedSeqs()) == 0 {
			return false // one epoch-bearing record cannot disagree with itself
		}
		i := rapid.IntRange(0, len(r.reads)-1).Draw(t, "read in another epoch")
		r.reads[i].Epoch++
		return true
	},
	WatchBroken: func(t *rapid.T, r *run) bool {
		switch rapid.IntRange(0, 3).Draw(t, "how") {
		case 0:
			r.watches = append(r.watches, watchSpec{client: "w", replica: r.replicas[0], resets: 1})
		case 1:
			r.watches = append(r.watches, watchSpec{client: "w", replica: r.replicas[0], gaps: 1})
		case 2:
			if len(r.log) < 2 {
				return false
			}
			// Two messages delivered in each other's place: every one
			// once, each as the log holds it, out of order.
			k := rapid.IntRange(0, len(r.log)-2).Draw(t, "swapped")
			events := slices.Clone(r.log)
			events[k], events[k+1] = events[k+1], events[k]
			r.watches = append(r.watches, watchSpec{client: "w", replica: r.replicas[0], events: events})
		default:
			if len(r.log) < 2 {
				return false
			}
			// Not the last: a watch that ends early is a prefix.
			k := rapid.IntRange(0, len(r.log)-2).Draw(t, "skipped or repeated")
			events := slices.Clone(r.log)
			if rapid.Bool().Draw(t, "repeat") {
				events = slices.Insert(events, k, events[k])
			} else {
				events = slices.Delete(events, k, k+1)
			}
			r.watches = append(r.watches, watchSpec{client: "w", replica: r.replicas[0], events: events})
		}
		return true
	},
	WatchDiverged: func(t *rapid.T, r *run) bool {
		if len(r.log) == 0 {
			return false
		}
		k := rapid.IntRange(0, len(r.log)-1).Draw(t, "diverged event")
		events := slices.Clone(r.log[:k+1])
		events[k].ID = idOf(^r.salt, 1)
		r.watches = append(r.watches, watchSpec{client: "w", replica: r.replicas[0], events: events})
		return true
	},
	RealTime: func(t *rapid.T, r *run) bool {
		acked := r.ackedSeqs()
		if len(acked) < 2 || acked[len(acked)-1] < acked[0]+2 {
			return false
		}
		// Two messages trade their attempts' times: the later one was
		// acknowledged before the earlier one was first sent.
		j := rapid.SampledFrom(acked[:len(acked)-1]).Draw(t, "earlier")
		var later []uint64
		for _, k := range acked {
			if k >= j+2 {
				later = append(later, k)
			}
		}
		if len(later) == 0 {
			return false
		}
		k := rapid.SampledFrom(later).Draw(t, "later")
		idJ, idK := r.log[j-1].ID, r.log[k-1].ID
		for i, s := range r.sends {
			switch s.ID {
			case idJ:
				r.sends[i].Start, r.sends[i].End = at(int(k)-1), at(int(k))
			case idK:
				r.sends[i].Start, r.sends[i].End = at(int(j)-1), at(int(j))
			}
		}
		return true
	},
	RefusedHeld: func(t *rapid.T, r *run) bool {
		// A message stored whose every attempt was refused (a daemon that
		// marked a send it stored unchanged, a client that dropped its
		// doubt).
		held := make(map[wire.ID]bool)
		for _, m := range r.log {
			held[m.ID] = true
		}
		acked := make(map[wire.ID]bool)
		for _, s := range r.sends {
			if s.Acked {
				acked[s.ID] = true
			}
		}
		var ids []wire.ID
		for _, s := range r.sends {
			if held[s.ID] && !acked[s.ID] && !slices.Contains(ids, s.ID) {
				ids = append(ids, s.ID)
			}
		}
		if len(ids) == 0 {
			return false
		}
		id := rapid.SampledFrom(ids).Draw(t, "refused yet held")
		for i := range r.sends {
			if r.sends[i].ID == id {
				r.sends[i].Refused = true
			}
		}
		return true
	},
	NoFinalRead: func(t *rapid.T, r *run) bool {
		r.reads = slices.DeleteFunc(r.reads, func(rd Read) bool { return rd.Final })
		return true
	},
}

// setTime sets the timestamp of #seq everywhere it appears (log, reads,
// watches, acks), so only the order is wrong.
func (r *run) setTime(seq uint64, stamp int64) {
	r.log[seq-1].Time = stamp
	for i := range r.reads {
		for j := range r.reads[i].Messages {
			if r.reads[i].Messages[j].Seq == seq {
				r.reads[i].Messages[j].Time = stamp
			}
		}
	}
	for i := range r.watches {
		for j := range r.watches[i].events {
			if r.watches[i].events[j].Seq == seq {
				r.watches[i].events[j].Time = stamp
			}
		}
	}
	for i := range r.sends {
		if r.sends[i].Acked && r.sends[i].Seq == seq {
			r.sends[i].Time = stamp
		}
	}
}

// TestPlantedBugsCaught plants each kind of bug in correct histories: the
// checker must report it, under its own kind.
func TestPlantedBugsCaught(t *testing.T) {
	for kind, plant := range plants {
		t.Run(kind.String(), func(t *testing.T) {
			planted := 0
			rapid.Check(t, func(t *rapid.T) {
				r := genRun(t)
				if !plant(t, r) {
					return // no room for this bug in the drawn history
				}
				planted++
				res := r.history().Check()
				if !res.Has(kind) {
					t.Fatalf("planted %v, checker found: %v", kind, res.Err())
				}
			})
			if planted == 0 {
				t.Fatalf("no history had room for a %v bug", kind)
			}
		})
	}
	for k := range kindNames {
		if plants[k] == nil {
			t.Errorf("no planted bug of kind %v", k)
		}
	}
}

// TestLostOnOneReplica is the plainest case, spelled out: three replicas,
// the third lost the last acknowledged message.
func TestLostOnOneReplica(t *testing.T) {
	h := New()
	var log []Message
	for i := 1; i <= 3; i++ {
		m := Message{Seq: uint64(i), Time: int64(i) * 10, ID: idOf(7, i), Body: []byte{byte(i)}}
		log = append(log, m)
		h.Send(Send{Client: "c", ID: m.ID, Body: m.Body, Start: at(i - 1), End: at(i), Acked: true, Seq: m.Seq, Time: m.Time, Epoch: 1})
	}
	for _, rep := range []string{"a", "b"} {
		h.Read(Read{Client: "x", Replica: rep, Start: at(9), Epoch: 1, Messages: log, Final: true})
	}
	h.Read(Read{Client: "x", Replica: "c", Start: at(9), Epoch: 1, Messages: log[:2], Final: true})
	res := h.Check()
	if !res.Has(Lost) || !res.Has(Diverged) {
		t.Fatalf("got %v, want lost and diverged", res.Err())
	}
	if got, want := len(res.Violations), 2; got != want {
		t.Fatalf("%d violations, want %d: %v", got, want, res.Err())
	}
}

// TestRecoveries measures from each fault to the first acknowledged
// attempt started after it.
func TestRecoveries(t *testing.T) {
	h := New()
	kill := at(10)
	h.Fault(kill, "kill", "leader")
	h.Fault(at(50), "partition", "leader")
	h.Send(Send{ID: idOf(1, 1), Start: at(9), End: at(12), Acked: true, Seq: 1})  // started before: not a recovery
	h.Send(Send{ID: idOf(1, 2), Start: at(11), End: at(40), Err: "timeout"})      // failed
	h.Send(Send{ID: idOf(1, 2), Start: at(40), End: at(45), Acked: true, Seq: 2}) // the first after
	h.Send(Send{ID: idOf(1, 3), Start: at(41), End: at(47), Acked: true, Seq: 3})
	got := h.Recoveries("kill")
	if len(got) != 1 || !got[0].Recovered || got[0].After != 35*time.Millisecond {
		t.Fatalf("recoveries %+v, want one of 35ms", got)
	}
	if got := h.Recoveries("partition"); len(got) != 1 || got[0].Recovered {
		t.Fatalf("partition recoveries %+v, want one not recovered", got)
	}
}

// TestAckedSinceLastFault counts only attempts started after the last
// fault: an attempt under way when it struck may be acknowledged after it.
func TestAckedSinceLastFault(t *testing.T) {
	h := New()
	if h.AckedSinceLastFault() {
		t.Fatal("acked with no sends")
	}
	h.Send(Send{ID: idOf(1, 1), Start: at(1), End: at(2), Acked: true, Seq: 1})
	if !h.AckedSinceLastFault() {
		t.Fatal("an ack with no fault yet not counted")
	}
	h.Fault(at(10), "kill", "d1")
	h.Send(Send{ID: idOf(1, 2), Start: at(9), End: at(30), Acked: true, Seq: 2}) // under way at the kill
	h.Send(Send{ID: idOf(1, 3), Start: at(31), End: at(40), Err: "timeout"})
	if h.AckedSinceLastFault() {
		t.Fatal("an attempt started before the fault counted")
	}
	h.Send(Send{ID: idOf(1, 3), Start: at(40), End: at(45), Acked: true, Seq: 3})
	if !h.AckedSinceLastFault() {
		t.Fatal("an ack of an attempt started after the fault not counted")
	}
}

// TestRefusedHeld spells out the send outcome contract's check: an ID
// whose every attempt was refused is reported wherever it is held, naming
// it, its refusal and the read; a refused attempt says nothing of an ID
// acknowledged, or of one an attempt left in doubt.
func TestRefusedHeld(t *testing.T) {
	h := New()
	var log []Message
	refused := idOf(9, 1)
	for i := 1; i <= 3; i++ {
		m := Message{Seq: uint64(i), Time: int64(i) * 10, ID: idOf(9, i), Body: []byte{byte(i)}}
		log = append(log, m)
		h.Send(Send{Client: "c", ID: m.ID, Body: m.Body, Start: at(i - 1), End: at(i), Err: "unavailable: no", Refused: true})
		switch i {
		case 2: // refused, then acknowledged
			h.Send(Send{Client: "c", ID: m.ID, Body: m.Body, Start: at(i), End: at(i), Acked: true, Seq: m.Seq, Time: m.Time, Epoch: 1})
		case 3: // refused, then in doubt
			h.Send(Send{Client: "c", ID: m.ID, Body: m.Body, Start: at(i), End: at(i), Err: "in doubt: lost"})
		}
	}
	h.Read(Read{Client: "x", Replica: "a", Start: at(9), Epoch: 1, Messages: log, Final: true})
	res := h.Check()
	if len(res.Violations) != 1 || !res.Has(RefusedHeld) {
		t.Fatalf("got %v, want one refused-held", res.Err())
	}
	if msg := res.Violations[0].Msg; !strings.Contains(msg, refused.String()) || !strings.Contains(msg, "unavailable: no") || !strings.Contains(msg, "final read of a") {
		t.Errorf("the violation %q does not name the ID, its refusal and where it was held", msg)
	}
	if res.Refused != 1 || res.InDoubt != 1 || res.Settled != 0 {
		t.Errorf("counted %d refused, %d in doubt, %d settled; want 1, 1, 0", res.Refused, res.InDoubt, res.Settled)
	}
}

package history

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Kind is the kind of guarantee a Violation breaks.
type Kind int

// The guarantees Check verifies.
const (
	// Lost: an acknowledged message is missing from a final read.
	Lost Kind = iota + 1
	// Duplicate: one message ID is held at two sequence numbers, or was
	// acknowledged as new twice.
	Duplicate
	// Gap: a read's sequence numbers are not consecutive from where it
	// started (After+1), or a final read does not start at 1.
	Gap
	// Diverged: two reads (two replicas, or one replica at two moments)
	// hold different messages at one sequence number, or final reads
	// differ in length.
	Diverged
	// TimeOrder: timestamps are not strictly increasing with the sequence.
	TimeOrder
	// AckMismatch: what is held at an acknowledged sequence is not the
	// message acknowledged there (ID, timestamp, body), or a duplicate ack
	// differs from the original.
	AckMismatch
	// Phantom: a message is held that no client sent (its ID was never
	// sent, or its body is not what was sent under that ID).
	Phantom
	// StaleRead: a client acknowledged #n then fetched and did not see #n.
	StaleRead
	// EpochChanged: acks or reads name more than one log epoch (a reset).
	EpochChanged
	// WatchBroken: a watch skipped or repeated a sequence, or reported a
	// reset or a gap.
	WatchBroken
	// WatchDiverged: a watch delivered a message the final log does not
	// hold at that sequence.
	WatchDiverged
	// NoFinalRead: the history has no final read to check against.
	NoFinalRead
	// RealTime: a message acknowledged before another was first sent
	// holds a later sequence than it (the log's order is not the order
	// in which the cell acknowledged: a leader that stamped from a stale
	// copy, a crash that lost a sequencer's state).
	RealTime
	// RefusedHeld: a message ID whose every attempt was refused (an error
	// that promised nothing was stored) is held by a read or delivered
	// by a watch: the refusal broke the send's outcome contract.
	RefusedHeld
)

var kindNames = map[Kind]string{
	Lost: "lost", Duplicate: "duplicate", Gap: "gap", Diverged: "diverged", TimeOrder: "time-order",
	AckMismatch: "ack-mismatch", Phantom: "phantom", StaleRead: "stale-read", EpochChanged: "epoch-changed",
	WatchBroken: "watch-broken", WatchDiverged: "watch-diverged", NoFinalRead: "no-final-read", RealTime: "real-time",
	RefusedHeld: "refused-held",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Violation is one broken guarantee.
type Violation struct {
	Kind Kind
	Msg  string
}

func (v Violation) String() string { return v.Kind.String() + ": " + v.Msg }

// Result is what Check found: the violations (none when the history is
// correct) and what it looked at.
type Result struct {
	Violations []Violation
	Attempts   int // send attempts
	Acked      int // distinct message IDs acknowledged
	Failed     int // attempts that failed (and were retried or given up)
	Refused    int // distinct IDs whose every attempt was refused (none may be held)
	InDoubt    int // distinct IDs with an attempt in doubt (failed, not refused)
	Settled    int // of those, the IDs later acknowledged (held once: the final reads check)
	Held       int // messages in the final log
	Replicas   int // replicas with a final read
	Reads      int // reads checked, final ones included
	Watches    int
	Watched    int // messages delivered by watches
}

// Has reports whether the result has a violation of kind k.
func (r Result) Has(k Kind) bool {
	for _, v := range r.Violations {
		if v.Kind == k {
			return true
		}
	}
	return false
}

// Err returns the violations as one error (at most the first 20 of them,
// and how many more), or nil when there are none.
func (r Result) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d violations:", len(r.Violations))
	for i, v := range r.Violations {
		if i == 20 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Violations)-i)
			break
		}
		b.WriteString("\n  " + v.String())
	}
	return errors.New(b.String())
}

// String is a one-line summary for the test log.
func (r Result) String() string {
	return fmt.Sprintf("%d send attempts (%d failed), %d messages acknowledged, %d IDs refused (none may be held), %d in doubt (%d settled by a retry), %d held on each of %d replicas, %d reads, %d watches delivering %d messages, %d violations",
		r.Attempts, r.Failed, r.Acked, r.Refused, r.InDoubt, r.Settled, r.Held, r.Replicas, r.Reads, r.Watches, r.Watched, len(r.Violations))
}

// checker holds what Check derives from the history.
type checker struct {
	res  Result
	sent map[wire.ID][]byte // every ID any attempt sent, with its body
	// acked is the first acknowledgement of each ID.
	acked map[wire.ID]Send
	// log is every sequence any read returned, with the first read that
	// returned it (for the message of a divergence).
	log    map[uint64]Message
	logBy  map[uint64]string
	held   map[wire.ID]uint64 // where each ID is held
	epoch  uint64
	epochs string // where the epoch was first seen
}

func (c *checker) violate(k Kind, format string, args ...any) {
	c.res.Violations = append(c.res.Violations, Violation{Kind: k, Msg: fmt.Sprintf(format, args...)})
}

// Check verifies the history (see the package comment for what). Call it
// once the workload has stopped.
func (h *History) Check() Result {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &checker{
		sent:  make(map[wire.ID][]byte),
		acked: make(map[wire.ID]Send),
		log:   make(map[uint64]Message),
		logBy: make(map[uint64]string),
		held:  make(map[wire.ID]uint64),
	}
	c.res.Attempts, c.res.Reads, c.res.Watches = len(h.sends), len(h.reads), len(h.watches)
	c.checkSends(h.sends)
	for i := range h.reads {
		c.checkRead(&h.reads[i])
	}
	c.checkFinal(h.reads)
	c.checkLog()
	c.checkAcks()
	c.checkReadYourWrites(h.sends, h.reads)
	c.checkRealTime(h.sends)
	for _, w := range h.watches {
		c.checkWatch(w)
	}
	c.checkRefused(h.sends, h.watches)
	return c.res
}

// checkRefused checks the send outcome contract's promise: an ID whose
// every attempt was refused is held by no read and delivered by no watch,
// at any time. It also counts the IDs in doubt, and those of them a retry
// settled (acknowledged; the final reads check they are held, and the log
// that they are held once).
func (c *checker) checkRefused(sends []Send, watches []*Watch) {
	refused := make(map[wire.ID]Send) // the last refusal of each ID refused throughout
	doubt := make(map[wire.ID]bool)
	for _, s := range sends {
		switch {
		case s.Refused && !doubt[s.ID]:
			if _, acked := c.acked[s.ID]; !acked {
				refused[s.ID] = s
			}
		case !s.Acked:
			doubt[s.ID] = true
			delete(refused, s.ID)
		}
	}
	for id := range c.acked {
		delete(refused, id)
	}
	c.res.Refused, c.res.InDoubt = len(refused), len(doubt)
	for id := range doubt {
		if _, ok := c.acked[id]; ok {
			c.res.Settled++
		}
	}
	for seq, m := range c.log {
		if s, ok := refused[m.ID]; ok {
			c.violate(RefusedHeld, "ID %s refused to %s (%s) is held as #%d (in the %s)", m.ID, s.Client, s.Err, seq, c.logBy[seq])
		}
	}
	for _, w := range watches {
		w.mu.Lock()
		for _, m := range w.events {
			if s, ok := refused[m.ID]; ok {
				c.violate(RefusedHeld, "ID %s refused to %s (%s) was delivered as #%d by the watch by %s on %s", m.ID, s.Client, s.Err, m.Seq, w.Client, w.Replica)
			}
		}
		w.mu.Unlock()
	}
}

// epochSeen checks that every ack and read names one epoch.
func (c *checker) epochSeen(e uint64, where string) {
	switch {
	case c.epochs == "":
		c.epoch, c.epochs = e, where
	case e != c.epoch:
		c.violate(EpochChanged, "%s is in epoch %d, %s in epoch %d", where, e, c.epochs, c.epoch)
	}
}

func (c *checker) checkSends(sends []Send) {
	for _, s := range sends {
		if body, ok := c.sent[s.ID]; ok && !bytes.Equal(body, s.Body) {
			// The workload itself broke the rule that an ID is sent
			// with one body: say so, since no check below is sound.
			c.violate(Phantom, "ID %s sent with two bodies (%q, %q)", s.ID, body, s.Body)
		}
		c.sent[s.ID] = s.Body
		if !s.Acked {
			c.res.Failed++
			continue
		}
		c.epochSeen(s.Epoch, fmt.Sprintf("the ack of %s to %s", s.ID, s.Client))
		first, ok := c.acked[s.ID]
		if !ok {
			c.acked[s.ID] = s
			continue
		}
		if first.Seq != s.Seq || first.Time != s.Time || first.Epoch != s.Epoch {
			k := AckMismatch
			if !s.Duplicate {
				k = Duplicate // acknowledged as new twice, at two places
			}
			c.violate(k, "ID %s acknowledged as #%d at %d, then as #%d at %d (duplicate flag %v)",
				s.ID, first.Seq, first.Time, s.Seq, s.Time, s.Duplicate)
		}
	}
	c.res.Acked = len(c.acked)
}

// checkRead checks one read on its own (consecutive from After+1, strictly
// increasing timestamps, each ID once) and against every other read
// (one message per sequence across replicas and time).
func (c *checker) checkRead(r *Read) {
	where := fmt.Sprintf("read of %s after #%d", r.Replica, r.After)
	if r.Final {
		where = "final " + where
	}
	c.epochSeen(r.Epoch, where)
	ids := make(map[wire.ID]uint64, len(r.Messages))
	next := r.After + 1
	for i, m := range r.Messages {
		if m.Seq != next {
			c.violate(Gap, "%s: #%d where #%d was due", where, m.Seq, next)
		}
		next = m.Seq + 1
		if i > 0 && m.Time <= r.Messages[i-1].Time {
			c.violate(TimeOrder, "%s: #%d at %d is not after #%d at %d", where, m.Seq, m.Time, r.Messages[i-1].Seq, r.Messages[i-1].Time)
		}
		if at, dup := ids[m.ID]; dup {
			c.violate(Duplicate, "%s: ID %s held as #%d and #%d", where, m.ID, at, m.Seq)
		}
		ids[m.ID] = m.Seq
		if prev, ok := c.log[m.Seq]; ok {
			if prev.ID != m.ID || prev.Time != m.Time || !bytes.Equal(prev.Body, m.Body) {
				c.violate(Diverged, "#%d is %s at %d in the %s, %s at %d in the %s", m.Seq, m.ID, m.Time, where, prev.ID, prev.Time, c.logBy[m.Seq])
			}
			continue
		}
		c.log[m.Seq], c.logBy[m.Seq] = m, where
	}
}

// checkFinal checks that there is a final read, that every final read is
// the whole log (from #1, all of the same length), and that each holds
// every acknowledged message.
func (c *checker) checkFinal(reads []Read) {
	replicas := make(map[string]bool)
	length, lengthBy := -1, ""
	for _, r := range reads {
		if !r.Final {
			continue
		}
		replicas[r.Replica] = true
		if r.After != 0 {
			c.violate(Gap, "final read of %s starts after #%d, not at #1", r.Replica, r.After)
		}
		switch {
		case length < 0:
			length, lengthBy = len(r.Messages), r.Replica
		case len(r.Messages) != length:
			c.violate(Diverged, "final read of %s holds %d messages, of %s %d", r.Replica, len(r.Messages), lengthBy, length)
		}
		have := make(map[wire.ID]bool, len(r.Messages))
		for _, m := range r.Messages {
			have[m.ID] = true
		}
		lost := 0
		for id, a := range c.acked {
			if !have[id] {
				if lost < 5 {
					c.violate(Lost, "%s acknowledged to %s as #%d is not on %s", id, a.Client, a.Seq, r.Replica)
				}
				lost++
			}
		}
		if lost > 5 {
			c.violate(Lost, "%d more acknowledged messages are not on %s", lost-5, r.Replica)
		}
	}
	c.res.Replicas = len(replicas)
	if length < 0 {
		c.violate(NoFinalRead, "no final read: nothing to check the acknowledgements against")
		return
	}
	c.res.Held = length
}

// checkLog checks the log all reads agree on: each ID at one sequence,
// timestamps increasing with the sequence, and each message sent by a
// client with the body held.
func (c *checker) checkLog() {
	seqs := make([]uint64, 0, len(c.log))
	for s := range c.log {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, s := range seqs {
		m := c.log[s]
		if at, dup := c.held[m.ID]; dup {
			c.violate(Duplicate, "ID %s is held as #%d and #%d", m.ID, at, s)
		} else {
			c.held[m.ID] = s
		}
		if i > 0 && seqs[i-1] == s-1 && c.log[s-1].Time >= m.Time {
			c.violate(TimeOrder, "#%d at %d is not after #%d at %d", s, m.Time, s-1, c.log[s-1].Time)
		}
		body, ok := c.sent[m.ID]
		switch {
		case !ok:
			c.violate(Phantom, "#%d (ID %s, in the %s) was never sent", s, m.ID, c.logBy[s])
		case !bytes.Equal(body, m.Body):
			c.violate(Phantom, "#%d (ID %s) holds %q, sent as %q", s, m.ID, m.Body, body)
		}
	}
}

// checkAcks checks each acknowledgement against what is held at its
// sequence.
func (c *checker) checkAcks() {
	for id, a := range c.acked {
		m, ok := c.log[a.Seq]
		if !ok {
			continue // reported as lost by the final reads (or no read reached it)
		}
		if m.ID != id || m.Time != a.Time {
			c.violate(AckMismatch, "%s acknowledged to %s as #%d at %d; #%d holds %s at %d", id, a.Client, a.Seq, a.Time, a.Seq, m.ID, m.Time)
		}
	}
}

// checkReadYourWrites checks that a read by a client that started after
// the client was acknowledged #n, and that asked for messages after a
// sequence below n, returned #n.
func (c *checker) checkReadYourWrites(sends []Send, reads []Read) {
	type ack struct {
		end time.Time
		seq uint64
	}
	byClient := make(map[string][]ack)
	for _, s := range sends {
		if s.Acked {
			byClient[s.Client] = append(byClient[s.Client], ack{s.End, s.Seq})
		}
	}
	for _, r := range reads {
		var last uint64 = r.After
		if n := len(r.Messages); n > 0 {
			last = r.Messages[n-1].Seq
		}
		for _, a := range byClient[r.Client] {
			if a.end.Before(r.Start) && a.seq > last {
				c.violate(StaleRead, "%s was acknowledged #%d, then read %s up to #%d", r.Client, a.seq, r.Replica, last)
				break
			}
		}
	}
}

// checkRealTime checks that the acknowledgements respect real time: a
// message whose ack ended before another message's first attempt began
// was stored first, so holds the lower sequence.
func (c *checker) checkRealTime(sends []Send) {
	type op struct {
		id         wire.ID
		start, end time.Time // the ID's first attempt's start, its first ack's end
		seq        uint64
	}
	first := make(map[wire.ID]time.Time)
	ended := make(map[wire.ID]time.Time)
	for _, s := range sends {
		if t, ok := first[s.ID]; !ok || s.Start.Before(t) {
			first[s.ID] = s.Start
		}
		if t, ok := ended[s.ID]; s.Acked && (!ok || s.End.Before(t)) {
			ended[s.ID] = s.End
		}
	}
	ops := make([]op, 0, len(c.acked))
	for id, a := range c.acked {
		ops = append(ops, op{id: id, start: first[id], end: ended[id], seq: a.Seq})
	}
	byEnd := slices.Clone(ops)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].end.Before(byEnd[j].end) })
	sort.Slice(ops, func(i, j int) bool { return ops[i].start.Before(ops[j].start) })
	// Sweep the ops by start, keeping the highest sequence acknowledged
	// before it.
	var top op
	reported := 0
	for _, b := range ops {
		for len(byEnd) > 0 && byEnd[0].end.Before(b.start) {
			if byEnd[0].seq > top.seq {
				top = byEnd[0]
			}
			byEnd = byEnd[1:]
		}
		if top.seq >= b.seq && reported < 5 {
			c.violate(RealTime, "%s was acknowledged as #%d at %v, before %s was first sent at %v, which was acknowledged as #%d",
				top.id, top.seq, top.end.Format(time.RFC3339Nano), b.id, b.start.Format(time.RFC3339Nano), b.seq)
			reported++
		}
	}
}

// checkWatch checks that a watch delivered the final log's messages
// After+1, After+2, ... in order, with no reset and no gap.
func (c *checker) checkWatch(w *Watch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	where := fmt.Sprintf("watch by %s on %s after #%d", w.Client, w.Replica, w.After)
	if w.resets > 0 {
		c.violate(WatchBroken, "%s reported %d resets", where, w.resets)
	}
	if w.gaps > 0 {
		c.violate(WatchBroken, "%s reported %d gaps", where, w.gaps)
	}
	c.res.Watched += len(w.events)
	next := w.After + 1
	for _, m := range w.events {
		if m.Seq != next {
			c.violate(WatchBroken, "%s delivered #%d where #%d was due", where, m.Seq, next)
		}
		next = m.Seq + 1
		held, ok := c.log[m.Seq]
		switch {
		case !ok:
			c.violate(WatchDiverged, "%s delivered #%d (ID %s), which no read holds", where, m.Seq, m.ID)
		case held.ID != m.ID || held.Time != m.Time || !bytes.Equal(held.Body, m.Body):
			c.violate(WatchDiverged, "%s delivered #%d as %s at %d; the log holds %s at %d", where, m.Seq, m.ID, m.Time, held.ID, held.Time)
		}
	}
}

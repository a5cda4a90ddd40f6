// Package history records what the clients of a group were told, operation
// by operation, and checks it the way Jepsen's checkers do: against what
// the group's replicas hold once the run is over.
//
// A fault test records into one History while it runs:
//
//   - every send attempt (Send): the message ID and body, when it started
//     and ended, and either its acknowledgement (sequence, timestamp, log
//     epoch, whether it was a duplicate) or its error. A retry of the same
//     ID is another attempt. An attempt that failed in doubt may still have
//     been stored (a timeout says nothing); one refused (Refused: its error
//     promised nothing was stored) must not be; one acknowledged must be.
//   - every fetch result (Read): which replica answered, the sequence it
//     fetched after, and the messages in order. Reads taken once the faults
//     have stopped and every replica has caught up are Final: each must
//     hold every acknowledged message.
//   - every watch (Watch): the messages it delivered in order, and any
//     reset or gap it reported.
//   - every fault it injected (Fault), so that Recoveries can say how long
//     sends took to succeed again after each.
//
// Check then verifies the guarantees of a replicated group: no
// acknowledged message lost (on every replica's final read), no refused
// message held (by any read or watch, at any time), no message
// ID held twice, the same gapless sequence on every replica, strictly
// increasing timestamps, acknowledgements that match what is held (sequence,
// timestamp, ID, body), nothing held that no client sent, one log epoch
// throughout, read-your-writes (a client acknowledged #n that then fetches
// sees #n), acknowledgements in real-time order (a message acknowledged
// before another was first sent holds the lower sequence), and every watch
// a contiguous view of the final log with no reset and no gap.
//
// The checker assumes what the fault harness sets up: retention keeps every
// message of the run, so logs start at sequence 1.
package history

import (
	"sync"
	"time"

	"github.com/huddle-chat/huddle/wire"
)

// Message is one message as a replica returned it.
type Message struct {
	Seq  uint64
	Time int64 // the server's timestamp, Unix nanoseconds
	ID   wire.ID
	Body []byte
}

// Send is one attempt to send one message, as its client saw it.
type Send struct {
	Client     string // who sent it (for read-your-writes)
	ID         wire.ID
	Body       []byte
	Start, End time.Time
	// Acked says the attempt was acknowledged: the group holds the message
	// as Seq, stamped Time, in log epoch Epoch. Duplicate says the ack was
	// for an earlier attempt with the same ID.
	Acked     bool
	Seq       uint64
	Time      int64
	Epoch     uint64
	Duplicate bool
	// Err is why an attempt that was not acknowledged failed; the message
	// may or may not have been stored, unless Refused.
	Err string
	// Refused says the attempt's error promised that nothing of it was
	// stored (a client error not in doubt: README, "A send's outcome,
	// settled"). An ID whose every attempt was refused must be held
	// nowhere, ever.
	Refused bool
}

// Read is one fetch: the messages Replica held after sequence After, in
// the order it returned them.
type Read struct {
	Client     string
	Replica    string
	After      uint64
	Start, End time.Time
	Epoch      uint64
	Messages   []Message
	// Final marks a read taken after the faults stopped and the replicas
	// caught up: it must hold every acknowledged message, and every final
	// read must be the same log.
	Final bool
}

// Fault is a fault the harness injected at At ("kill leader", "partition").
type Fault struct {
	At   time.Time
	Kind string
	What string
}

// History is a record of a run. Its methods are safe for concurrent use by
// the workload's goroutines.
type History struct {
	mu      sync.Mutex
	sends   []Send
	reads   []Read
	watches []*Watch
	faults  []Fault
}

// New returns an empty history.
func New() *History { return &History{} }

// Send records one send attempt.
func (h *History) Send(s Send) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sends = append(h.sends, s)
}

// Read records one fetch result. The history keeps r.Messages.
func (h *History) Read(r Read) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, r)
}

// Fault records a fault injected at at.
func (h *History) Fault(at time.Time, kind, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, Fault{At: at, Kind: kind, What: what})
}

// Watch starts recording a watch by client on replica that began after
// sequence after. The returned Watch records what it delivers.
func (h *History) Watch(client, replica string, after uint64) *Watch {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &Watch{Client: client, Replica: replica, After: after}
	h.watches = append(h.watches, w)
	return w
}

// Acked returns how many distinct message IDs were acknowledged so far.
func (h *History) Acked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make(map[wire.ID]bool)
	for _, s := range h.sends {
		if s.Acked {
			ids[s.ID] = true
		}
	}
	return len(ids)
}

// AckedSinceLastFault reports whether an attempt that started at or after
// the last fault was acknowledged (with no fault yet: any attempt).
func (h *History) AckedSinceLastFault() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last time.Time
	if len(h.faults) > 0 {
		last = h.faults[len(h.faults)-1].At
	}
	for _, s := range h.sends {
		if s.Acked && !s.Start.Before(last) {
			return true
		}
	}
	return false
}

// Sends returns a copy of the send attempts recorded so far.
func (h *History) Sends() []Send {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Send(nil), h.sends...)
}

// Watch is one watch's deliveries, in order. Its methods are safe for
// concurrent use.
type Watch struct {
	Client  string
	Replica string
	After   uint64

	mu     sync.Mutex
	events []Message
	resets int
	gaps   int
}

// Message records the next message the watch delivered.
func (w *Watch) Message(m Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, m)
}

// Reset records an EventReset: the watch was told the log was lost.
func (w *Watch) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.resets++
}

// Gap records an EventGap: the watch was told messages were dropped.
func (w *Watch) Gap() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gaps++
}

// Len returns how many messages the watch has delivered.
func (w *Watch) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

// Last returns the sequence of the last message delivered, 0 before any.
func (w *Watch) Last() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return w.After
	}
	return w.events[len(w.events)-1].Seq
}

// Recovery is how long sends took to succeed again after a fault: from the
// fault to the end of the first acknowledged attempt that started after
// it. Recovered is false when no attempt started after the fault was
// acknowledged.
type Recovery struct {
	Fault     Fault
	After     time.Duration
	Recovered bool
}

// Recoveries returns the recovery after each fault of the given kind, in
// the order the faults were injected.
func (h *History) Recoveries(kind string) []Recovery {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Recovery
	for _, f := range h.faults {
		if f.Kind != kind {
			continue
		}
		r := Recovery{Fault: f}
		for _, s := range h.sends {
			if !s.Acked || s.Start.Before(f.At) {
				continue
			}
			if d := s.End.Sub(f.At); !r.Recovered || d < r.After {
				r.After, r.Recovered = d, true
			}
		}
		out = append(out, r)
	}
	return out
}

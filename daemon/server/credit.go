package server

import (
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream credit.
//
// Each operation is a stream, and a finished stream gives its peer the
// credit for a new one in a MAX_STREAMS frame. quic-go sends that frame as
// soon as the stream completes, which is when the peer acknowledges the
// reply: usually in the packet that carries its next request. The frame
// then left in a packet of its own, just before the next reply, and two
// packets that need acknowledging made the peer send an ACK of its own
// instead of delaying it into its next request. A client running one
// operation after another paid two extra packets (and four syscalls) per
// operation for it.
//
// So the servers take stream credit into their own hands (quic-go's
// Config.RequireStreamCreditRelease): a finished stream's credit is held
// until the connection's next reply frame is written, and given back just
// before it, so the MAX_STREAMS frame travels in that reply's packet. It is
// given back anyway after creditHoldTime, or when maxHeldCredits are held:
// a peer waits for held credit at most that long, and never for more than
// a small part of its max_streams.

const (
	// creditHoldTime bounds how long a finished stream's credit is held.
	// It is the QUIC default max_ack_delay, the time peers already allow
	// for an acknowledgement to come back.
	creditHoldTime = 25 * time.Millisecond
	// maxHeldCredits bounds the credits a connection holds at once; at
	// most a quarter of its MaxIncomingStreams, and none under 8.
	maxHeldCredits = 16
)

// streamCredits holds the credit of one connection's finished streams.
type streamCredits struct {
	limit int // most credits held at once; 0: none are held

	mu     sync.Mutex
	held   []*quic.Stream
	timer  *time.Timer // gives held credits back after creditHoldTime
	armed  bool        // timer is set
	closed bool
}

func newStreamCredits(maxStreams int64) *streamCredits {
	limit := int(min(maxHeldCredits, maxStreams/4))
	if limit < 2 {
		limit = 0
	}
	return &streamCredits{limit: limit}
}

// hold takes the credit of a finished stream: held until the next reply on
// the connection, creditHoldTime at most.
func (sc *streamCredits) hold(str *quic.Stream) {
	sc.mu.Lock()
	if sc.closed || sc.limit == 0 {
		sc.mu.Unlock()
		str.ReleaseStreamCredit()
		return
	}
	sc.held = append(sc.held, str)
	switch {
	case len(sc.held) >= sc.limit:
		sc.releaseLocked()
	case sc.armed:
		// The timer set for an earlier credit gives this one back too,
		// sooner than creditHoldTime. Not resetting it for every stream
		// saves a timer update per operation under load.
	case sc.timer == nil:
		sc.armed = true
		sc.timer = time.AfterFunc(creditHoldTime, sc.expire)
	default:
		sc.armed = true
		sc.timer.Reset(creditHoldTime)
	}
	sc.mu.Unlock()
}

// expire is the timer's: it gives back every held credit.
func (sc *streamCredits) expire() {
	sc.mu.Lock()
	sc.armed = false
	sc.releaseLocked()
	sc.mu.Unlock()
}

// release gives back every held credit. The servers call it just before
// they write a reply frame.
func (sc *streamCredits) release() {
	sc.mu.Lock()
	sc.releaseLocked()
	sc.mu.Unlock()
}

func (sc *streamCredits) releaseLocked() {
	for i, str := range sc.held {
		str.ReleaseStreamCredit()
		sc.held[i] = nil
	}
	sc.held = sc.held[:0]
}

// close gives back every held credit and holds none after: the
// connection's accept loop has ended.
func (sc *streamCredits) close() {
	sc.mu.Lock()
	sc.closed = true
	if sc.timer != nil {
		sc.timer.Stop()
	}
	sc.releaseLocked()
	sc.mu.Unlock()
}

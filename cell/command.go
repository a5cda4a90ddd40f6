package cell

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

// Commands: what one raft entry of a cell carries (the Data of a
// raft.LogCommand entry). The first byte is the command's kind; a change
// that old readers would misread gets a new kind. Integers are
// little-endian, fixed width unless a uvarint (encoding/binary's). The
// layouts (PROTOCOL.md, "Cells"):
//
//	create: 1, group [16], epoch u64, dedup_window uvarint, private u8 (0|1),
//	        [secret_sha256 [32] if private], name_len uvarint, name
//	send:   2, group [16], term u64, count uvarint (1..maxCommandMessages),
//	        seq u64, time i64, senders uvarint, senders x (fingerprint [32], name_len
//	        uvarint, name), count x (dt uvarint, id [16], sender uvarint,
//	        body_len uvarint, body)
//	join:   3, group [16], fingerprint [32], joined i64, max uvarint,
//	        name_len uvarint, name
//	leave:  4, group [16], fingerprint [32]
//
// A send carries messages as the leader stamped them, and the raft term it
// stamped them in: an entry whose term is another was stamped by a
// leadership that ended before raft appended it, from a tail that may no
// longer be the log's, and every replica refuses it.
// It carries the first message's
// sequence number and time, then each next one's time as the difference
// dt from the one before (0 for the first, at least 1 after); its sequence
// number is one more. Its senders are a dictionary the messages index.
const (
	cmdCreate byte = 1
	cmdSend   byte = 2
	cmdJoin   byte = 3
	cmdLeave  byte = 4
)

// Limits a command's decoder checks before allocating.
const (
	maxCommandMessages = wire.MaxBatch
	maxCommandBody     = wire.MaxFrameSize
	maxCommandName     = wire.MaxNameBytes
	maxDedupWindow     = store.MaxDedupWindow
	maxMembersLimit    = 1 << 20
)

// ErrBadCommand: a raft entry's data is not a command this daemon reads.
var ErrBadCommand = errors.New("cell: malformed command")

// GroupSpec is a group of the cell as the cell created it: every replica
// hosts it under the same UUID, name, epoch and dedup window.
type GroupSpec struct {
	ID   wire.UUID
	Name string
	// Private groups keep the SHA-256 of their join secret, never the
	// secret.
	Private      bool
	SecretSHA256 [32]byte
	// Epoch names the group's history, the same on every replica.
	Epoch uint64
	// DedupWindow is how many message IDs each replica's log remembers:
	// the same on every replica, so that every replica's leader finds the
	// same duplicates.
	DedupWindow int
}

// Member is a member of a replicated group.
type Member struct {
	Fingerprint wire.Fingerprint
	Name        string
	Joined      int64 // Unix ns, the leader's clock
}

// command is one decoded command.
type command struct {
	kind  byte
	group wire.UUID
	// create
	spec GroupSpec
	// send: entries stamped in term; their bodies alias the entry's data
	term    uint64
	entries []store.Entry
	// join and leave
	member Member
	max    int
}

func appendGroup(dst []byte, id wire.UUID) []byte { return append(dst, id[:]...) }

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// encodeCreate appends a create command for spec.
func encodeCreate(dst []byte, spec GroupSpec) []byte {
	dst = append(dst, cmdCreate)
	dst = appendGroup(dst, spec.ID)
	dst = binary.LittleEndian.AppendUint64(dst, spec.Epoch)
	dst = binary.AppendUvarint(dst, uint64(spec.DedupWindow))
	if spec.Private {
		dst = append(dst, 1)
		dst = append(dst, spec.SecretSHA256[:]...)
	} else {
		dst = append(dst, 0)
	}
	return appendString(dst, spec.Name)
}

// encodeSend appends a send command of entries, stamped in term, which a Sequencer stamped
// (sequence numbers consecutive, times strictly increasing). It uses the
// encoder's sender dictionary as scratch.
func (e *encoder) encodeSend(dst []byte, group wire.UUID, term uint64, entries []store.Entry) []byte {
	dst = append(dst, cmdSend)
	dst = appendGroup(dst, group)
	dst = binary.LittleEndian.AppendUint64(dst, term)
	return e.appendEntries(dst, entries)
}

// appendEntries appends stamped entries as a send carries them, from its
// count on; catch-up streams carry them so too.
func (e *encoder) appendEntries(dst []byte, entries []store.Entry) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(entries)))
	dst = binary.LittleEndian.AppendUint64(dst, entries[0].Seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(entries[0].Time))
	clear(e.senders)
	e.order = e.order[:0]
	// Entries come in runs from one sender (each send of a proposal is
	// one client's batch): a message from the sender of the one before
	// needs no lookup.
	for i := range entries {
		s := entries[i].From
		if i > 0 && s == entries[i-1].From {
			continue
		}
		if _, ok := e.senders[s]; !ok {
			e.senders[s] = len(e.order)
			e.order = append(e.order, s)
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.order)))
	for _, s := range e.order {
		dst = append(dst, s.Fingerprint[:]...)
		dst = appendString(dst, s.Name)
	}
	prev := entries[0].Time
	from := 0
	for i := range entries {
		m := &entries[i]
		dst = binary.AppendUvarint(dst, uint64(m.Time-prev))
		prev = m.Time
		dst = append(dst, m.ID[:]...)
		if i == 0 || m.From != entries[i-1].From {
			from = e.senders[m.From]
		}
		dst = binary.AppendUvarint(dst, uint64(from))
		dst = binary.AppendUvarint(dst, uint64(len(m.Body)))
		dst = append(dst, m.Body...)
	}
	return dst
}

// encoder keeps a send's sender dictionary from one command to the next.
type encoder struct {
	senders map[store.Sender]int
	order   []store.Sender
}

func newEncoder() *encoder { return &encoder{senders: make(map[store.Sender]int)} }

// encodeJoin appends a join command.
func encodeJoin(dst []byte, group wire.UUID, m Member, max int) []byte {
	dst = append(dst, cmdJoin)
	dst = appendGroup(dst, group)
	dst = append(dst, m.Fingerprint[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Joined))
	dst = binary.AppendUvarint(dst, uint64(max))
	return appendString(dst, m.Name)
}

// encodeLeave appends a leave command.
func encodeLeave(dst []byte, group wire.UUID, fp wire.Fingerprint) []byte {
	dst = append(dst, cmdLeave)
	dst = appendGroup(dst, group)
	return append(dst, fp[:]...)
}

// reader reads a command's fields; the first error sticks.
type reader struct {
	p   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrBadCommand, fmt.Sprintf(format, args...))
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.p) {
		r.fail("%s: %d bytes, %d left", what, n, len(r.p))
		return nil
	}
	b := r.p[:n:n]
	r.p = r.p[n:]
	return b
}

func (r *reader) u8(what string) byte {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u64(what string) uint64 {
	b := r.bytes(8, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *reader) uvarint(what string, max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.p)
	if n <= 0 {
		r.fail("%s: not a uvarint", what)
		return 0
	}
	if v > max {
		r.fail("%s: %d, at most %d", what, v, max)
		return 0
	}
	r.p = r.p[n:]
	return v
}

func (r *reader) fixed(dst []byte, what string) {
	if b := r.bytes(len(dst), what); b != nil {
		copy(dst, b)
	}
}

func (r *reader) name(what string) string {
	n := r.uvarint(what+" length", maxCommandName)
	b := r.bytes(int(n), what)
	if r.err == nil && !utf8.Valid(b) {
		r.fail("%s: not UTF-8", what)
	}
	return string(b)
}

// decodeCommand decodes data, a raft entry's. A send's entries are
// appended to entries (for reuse) and their bodies alias data. It returns
// an error wrapping ErrBadCommand for anything but a whole, well-formed
// command.
func decodeCommand(data []byte, entries []store.Entry) (command, error) {
	r := reader{p: data}
	c := command{kind: r.u8("kind")}
	r.fixed(c.group[:], "group")
	switch c.kind {
	case cmdCreate:
		c.spec.ID = c.group
		c.spec.Epoch = r.u64("epoch")
		c.spec.DedupWindow = int(r.uvarint("dedup window", maxDedupWindow))
		switch r.u8("private") {
		case 0:
		case 1:
			c.spec.Private = true
			r.fixed(c.spec.SecretSHA256[:], "secret digest")
		default:
			r.fail("private: want 0 or 1")
		}
		c.spec.Name = r.name("name")
		if r.err == nil && c.spec.Epoch == 0 {
			r.fail("epoch 0")
		}
	case cmdSend:
		c.term = r.u64("term")
		c.entries = decodeEntries(&r, entries)
	case cmdJoin:
		r.fixed(c.member.Fingerprint[:], "fingerprint")
		c.member.Joined = int64(r.u64("joined"))
		c.max = int(r.uvarint("max members", maxMembersLimit))
		c.member.Name = r.name("name")
	case cmdLeave:
		r.fixed(c.member.Fingerprint[:], "fingerprint")
	default:
		if r.err == nil {
			r.fail("unknown kind %d", c.kind)
		}
	}
	if r.err == nil && len(r.p) != 0 {
		r.fail("%d bytes after the command", len(r.p))
	}
	if r.err != nil {
		return command{}, r.err
	}
	return c, nil
}

// decodeEntries reads a send's messages.
func decodeEntries(r *reader, entries []store.Entry) []store.Entry {
	count := r.uvarint("count", maxCommandMessages)
	seq := r.u64("seq")
	t := int64(r.u64("time"))
	switch {
	case r.err != nil:
	case count == 0 || seq == 0 || seq > 1<<62:
		r.fail("count %d from seq %d", count, seq)
	case t < 0 || t > 1<<62:
		r.fail("first time %d out of range", t)
	}
	// Each sender takes at least 33 bytes, each message at least 19.
	nsenders := r.uvarint("senders", min(count, uint64(len(r.p)/33)))
	if r.err == nil && (nsenders == 0 || count > uint64(len(r.p)/19)) {
		r.fail("%d senders for %d messages in %d bytes", nsenders, count, len(r.p))
	}
	if r.err != nil {
		return entries
	}
	senders := make([]store.Sender, nsenders)
	for i := range senders {
		r.fixed(senders[i].Fingerprint[:], "sender fingerprint")
		senders[i].Name = r.name("sender name")
	}
	if out, rest, ok := appendMessages(entries, r.p, count, seq, t, senders); ok {
		r.p = rest
		return out
	}
	return readMessages(r, entries, count, seq, t, senders)
}

// appendMessages is decodeEntries' loop over a send's messages for a
// well-formed send: it appends the count messages at the head of p, stamped
// from seq and t on, to entries, and returns them and what follows them.
// At the first thing amiss it returns ok false, and readMessages, which
// checks each field through a reader, says what. Both accept the same
// sends, alike (FuzzAppendMessages). Every replica decodes every message
// (3-8% of a follower's CPU in profiles); this loop takes a third less
// time than the reader's (BenchmarkDecodeSend).
func appendMessages(entries []store.Entry, p []byte, count, seq uint64, t int64, senders []store.Sender) (_ []store.Entry, rest []byte, ok bool) {
	start := len(entries)
	entries = slices.Grow(entries, int(count))
	for i := range count {
		dt, n := binary.Uvarint(p)
		if n <= 0 || (dt == 0) != (i == 0) || dt > 1<<62 || int64(dt) > 1<<62-t || len(p)-n < len(store.Entry{}.ID) {
			return entries[:start], nil, false
		}
		t += int64(dt)
		var id [16]byte
		p = p[n+copy(id[:], p[n:]):]
		s, n := binary.Uvarint(p)
		if n <= 0 || s >= uint64(len(senders)) {
			return entries[:start], nil, false
		}
		p = p[n:]
		size, n := binary.Uvarint(p)
		if n <= 0 || size > maxCommandBody || size > uint64(len(p)-n) {
			return entries[:start], nil, false
		}
		body := p[n : n+int(size) : n+int(size)]
		p = p[n+int(size):]
		// Set field by field in place: a whole Entry copied into the
		// slice takes the GC's bulk write barrier while it marks.
		entries = entries[:len(entries)+1]
		m := &entries[len(entries)-1]
		m.Seq, m.Time, m.ID = seq+i, t, id
		m.From.Fingerprint = senders[s].Fingerprint
		m.From.Name = senders[s].Name
		m.Body = body
	}
	return entries, p, true
}

// readMessages is decodeEntries' loop over a send's messages, each field
// checked as it is read: the first thing amiss fails r.
func readMessages(r *reader, entries []store.Entry, count, seq uint64, t int64, senders []store.Sender) []store.Entry {
	nsenders := uint64(len(senders))
	start := len(entries)
	for i := uint64(0); i < count && r.err == nil; i++ {
		dt := r.uvarint("dt", 1<<62)
		switch {
		case i == 0 && dt != 0:
			r.fail("first dt %d, want 0", dt)
		case i > 0 && dt == 0:
			r.fail("message %d: dt 0: times must strictly increase", i)
		case int64(dt) > 1<<62-t:
			r.fail("message %d: time overflows", i)
		}
		t += int64(dt)
		var m store.Entry
		m.Seq, m.Time = seq+i, t
		r.fixed(m.ID[:], "id")
		s := r.uvarint("sender", nsenders-1)
		if r.err == nil {
			m.From = senders[s]
		}
		m.Body = r.bytes(int(r.uvarint("body length", maxCommandBody)), "body")
		entries = append(entries, m)
	}
	if r.err != nil {
		return entries[:start]
	}
	return entries
}

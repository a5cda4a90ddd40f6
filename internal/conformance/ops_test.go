package conformance

// The operations of PROTOCOL.md §7, §8 and §13, each a request built and a
// reply read by the tables there.

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Operations (§5, §13).
const (
	opList       = 4
	opInfo       = 16
	opJoin       = 17
	opLeave      = 18
	opMembers    = 19
	opSend       = 20
	opFetch      = 21
	opWatch      = 22
	opCellStatus = 23
)

// groupEntry is a listing's entry (§7.4, §13).
type groupEntry struct {
	group     []byte
	name      string
	addrs     []string
	fp        fingerprint
	members   uint64
	lastSeq   uint64
	expiresMS uint64
	replicas  []replica
}

type groupsPage struct {
	epoch  uint64
	groups []groupEntry
	next   []byte
}

func (c *conn) list(ctx context.Context, after []byte) (groupsPage, error) {
	args := cmap{}
	if after != nil {
		args[1] = after
	}
	body, err := c.call(ctx, opList, args)
	if err != nil {
		return groupsPage{}, err
	}
	r := reader{m: body}
	p := groupsPage{epoch: r.uint(1), next: r.bytes(3, 0)}
	for _, g := range r.maps(2) {
		gr := reader{m: g}
		e := groupEntry{group: gr.bytes(1, 16), name: gr.text(2), members: gr.uint(5), lastSeq: gr.uint(6), expiresMS: gr.uint(7)}
		copy(e.fp[:], gr.bytes(4, 32))
		for _, a := range gr.array(3) {
			s, ok := a.(string)
			if !ok {
				gr.keep(fmt.Errorf("addrs: %T, want text", a))
			}
			e.addrs = append(e.addrs, s)
		}
		for _, m := range gr.maps(8) {
			rep, err := decodeReplica(m)
			gr.keep(err)
			e.replicas = append(e.replicas, rep)
		}
		r.keep(gr.err)
		p.groups = append(p.groups, e)
	}
	return p, r.err
}

// listAll reads every page (§7.4 "Paging"), bounded.
func (c *conn) listAll(ctx context.Context) ([]groupEntry, error) {
	var all []groupEntry
	var after []byte
	var epoch uint64
	for pages := 0; pages < 100; pages++ {
		p, err := c.list(ctx, after)
		if err != nil {
			return nil, err
		}
		if pages > 0 && p.epoch != epoch {
			return nil, errors.New("registry restarted while listing")
		}
		epoch = p.epoch
		all = append(all, p.groups...)
		if p.next == nil {
			return all, nil
		}
		after = p.next
	}
	return nil, errors.New("more than 100 pages")
}

// limits is info's key 7 (§8.1).
type limits struct {
	maxMessageBytes, maxBatch, maxMessages, maxBytes, maxAgeMS, fetchPage, maxMembers,
	sendRateMilli, sendBurst, heartbeatMS, maxFrameBytes, maxStreams, maxConnsPerAddr,
	requestTimeoutMS, idleTimeoutMS uint64
}

type info struct {
	group           []byte
	name            string
	epoch           uint64
	first, last     uint64
	members         uint64
	limits          limits
	private, member bool
	fp              fingerprint
	storage, fsync  string
	fsyncIntervalMS uint64
	replicas        []replica
}

func groupRef(group []byte) cmap { return cmap{1: group} }

func (c *conn) info(ctx context.Context, group []byte) (info, error) {
	body, err := c.call(ctx, opInfo, groupRef(group))
	if err != nil {
		return info{}, err
	}
	r := reader{m: body}
	in := info{group: r.bytes(1, 16), name: r.text(2), epoch: r.uint(3), first: r.uint(4), last: r.uint(5),
		members: r.uint(6), private: r.bool(8), member: r.bool(9), storage: r.text(11), fsync: r.text(12),
		fsyncIntervalMS: r.uint(13)}
	copy(in.fp[:], r.bytes(10, 32))
	l := reader{m: r.cmap(7)}
	in.limits = limits{l.uint(1), l.uint(2), l.uint(3), l.uint(4), l.uint(5), l.uint(6), l.uint(7), l.uint(8),
		l.uint(9), l.uint(10), l.uint(11), l.uint(12), l.uint(13), l.uint(14), l.uint(15)}
	r.keep(l.err)
	for _, m := range r.maps(14) {
		rep, err := decodeReplica(m)
		r.keep(err)
		in.replicas = append(in.replicas, rep)
	}
	return in, r.err
}

type joined struct {
	epoch, last uint64
	already     bool
}

func joinRequest(group []byte, name string) []byte {
	return request(opJoin, cmap{1: group, 2: name})
}

func decodeJoined(body cmap) (joined, error) {
	r := reader{m: body}
	j := joined{epoch: r.uint(1), last: r.uint(2), already: r.bool(3)}
	return j, r.err
}

func (c *conn) join(ctx context.Context, group []byte, name string) (joined, error) {
	body, err := c.roundTrip(ctx, joinRequest(group, name))
	if err != nil {
		return joined{}, err
	}
	return decodeJoined(body)
}

func (c *conn) leave(ctx context.Context, group []byte) (wasMember bool, err error) {
	body, err := c.call(ctx, opLeave, groupRef(group))
	if err != nil {
		return false, err
	}
	return body.bool(1)
}

type member struct {
	fp       fingerprint
	name     string
	joined   int64
	online   bool
	lastSeen int64
	seen     bool // last_seen present
}

func (c *conn) members(ctx context.Context, group []byte) ([]member, error) {
	body, err := c.call(ctx, opMembers, groupRef(group))
	if err != nil {
		return nil, err
	}
	r := reader{m: body}
	var out []member
	for _, m := range r.maps(1) {
		mr := reader{m: m}
		mb := member{name: mr.text(2), joined: mr.int(3), online: mr.bool(4), lastSeen: mr.int(5)}
		_, mb.seen = m[5]
		copy(mb.fp[:], mr.bytes(1, 32))
		r.keep(mr.err)
		out = append(out, mb)
	}
	return out, r.err
}

// outgoing is a message to send (§8.5).
type outgoing struct {
	id   []byte
	body []byte
}

type ack struct {
	seq       uint64
	ts        int64
	duplicate bool
}

type sent struct {
	epoch uint64
	acks  []ack
}

func sendRequest(group []byte, msgs ...outgoing) []byte {
	var a []any
	for _, m := range msgs {
		a = append(a, cmap{1: m.id, 2: m.body})
	}
	return request(opSend, cmap{1: group, 2: a})
}

func decodeSent(body cmap) (sent, error) {
	r := reader{m: body}
	s := sent{epoch: r.uint(1)}
	for _, a := range r.maps(2) {
		ar := reader{m: a}
		s.acks = append(s.acks, ack{seq: ar.uint(1), ts: ar.int(2), duplicate: ar.bool(3)})
		r.keep(ar.err)
	}
	return s, r.err
}

func (c *conn) send(ctx context.Context, group []byte, msgs ...outgoing) (sent, error) {
	body, err := c.roundTrip(ctx, sendRequest(group, msgs...))
	if err != nil {
		return sent{}, err
	}
	s, err := decodeSent(body)
	if err == nil && len(s.acks) != len(msgs) {
		err = fmt.Errorf("%d acks for %d messages", len(s.acks), len(msgs))
	}
	return s, err
}

// message is a stored message (§8.6).
type message struct {
	seq  uint64
	ts   int64
	id   []byte
	from fingerprint
	name string
	body []byte
}

func decodeMessages(body cmap) ([]message, error) {
	r := reader{m: body}
	var out []message
	for _, m := range r.maps(1) {
		mr := reader{m: m}
		msg := message{seq: mr.uint(1), ts: mr.int(2), id: mr.bytes(3, 16), name: mr.text(5), body: mr.bytes(6, 0)}
		copy(msg.from[:], mr.bytes(4, 32))
		if msg.body == nil {
			msg.body = []byte{}
		}
		r.keep(mr.err)
		out = append(out, msg)
	}
	return out, r.err
}

// query is fetch's and watch's selection (§8.6, §8.7, §13).
type query struct {
	group  []byte
	since  int64
	after  uint64
	limit  uint64
	epoch  uint64
	minSeq uint64
	// hasSince and hasAfter send the field even when zero.
	hasSince, hasAfter bool
}

func (q query) args() cmap {
	a := cmap{1: q.group}
	if q.hasSince || q.since != 0 {
		a[2] = q.since
	}
	if q.hasAfter || q.after != 0 {
		a[3] = q.after
	}
	if q.limit != 0 {
		a[4] = q.limit
	}
	if q.epoch != 0 {
		a[5] = q.epoch
	}
	if q.minSeq != 0 {
		a[6] = q.minSeq
	}
	return a
}

type end struct {
	next        uint64
	more        bool
	first, last uint64
	epoch       uint64
}

// fetch runs one fetch: Messages* then End, or an Error as *protoError
// (with the messages read before it).
func (c *conn) fetch(ctx context.Context, q query) ([]message, end, error) {
	s, _, err := c.open(ctx, request(opFetch, q.args()))
	if err != nil {
		return nil, end{}, err
	}
	var msgs []message
	for {
		rep, err := s.next()
		if err == io.EOF {
			return msgs, end{}, errors.New("fetch: stream ended without End or Error")
		}
		if err != nil {
			s.cancel()
			return msgs, end{}, err
		}
		switch rep.kind {
		case kindMessages:
			m, err := decodeMessages(rep.body)
			if err != nil {
				s.cancel()
				return msgs, end{}, err
			}
			msgs = append(msgs, m...)
			continue
		case kindEnd:
			r := reader{m: rep.body}
			e := end{next: r.uint(1), more: r.bool(2), first: r.uint(3), last: r.uint(4), epoch: r.uint(5)}
			if r.err == nil {
				r.err = expectEOF(s)
			}
			return msgs, e, r.err
		case kindError:
			pe, err := decodeError(rep.body)
			if err == nil {
				err = expectEOF(s)
			}
			if err != nil {
				return msgs, end{}, err
			}
			return msgs, end{}, pe
		default:
			s.cancel()
			return msgs, end{}, fmt.Errorf("fetch: reply of kind %d", rep.kind)
		}
	}
}

// expectEOF checks that the stream ends after the last frame.
func expectEOF(s *stream) error {
	if _, err := s.next(); err != io.EOF {
		s.cancel()
		return fmt.Errorf("a frame (or %v) after the last frame, want the end of the stream", err)
	}
	return nil
}

// watchEvent is one frame of a watch after its Start.
type watchEvent struct {
	kind     uint64
	messages []message
	gapFrom  uint64 // Gap
	gapTo    uint64
	last     uint64 // Heartbeat
	now      int64
	err      *protoError
}

type start struct {
	epoch, first, last, heartbeatMS uint64
}

type watch struct {
	s     *stream
	start start
}

// watch opens a watch and reads its Start; an Error instead is returned
// as *protoError.
func (c *conn) watch(ctx context.Context, q query) (*watch, error) {
	s, _, err := c.open(ctx, request(opWatch, q.args()))
	if err != nil {
		return nil, err
	}
	rep, err := s.next()
	if err != nil {
		s.cancel()
		return nil, err
	}
	switch rep.kind {
	case kindStart:
		r := reader{m: rep.body}
		st := start{epoch: r.uint(1), first: r.uint(2), last: r.uint(3), heartbeatMS: r.uint(4)}
		if r.err != nil {
			s.cancel()
			return nil, r.err
		}
		return &watch{s: s, start: st}, nil
	case kindError:
		pe, err := decodeError(rep.body)
		if err == nil {
			err = expectEOF(s)
		}
		if err != nil {
			return nil, err
		}
		return nil, pe
	default:
		s.cancel()
		return nil, fmt.Errorf("watch: first reply of kind %d, want Start", rep.kind)
	}
}

// next reads the watch's next frame. An Error ends the watch: the event
// carries it once the stream has ended.
func (w *watch) next() (watchEvent, error) {
	rep, err := w.s.next()
	if err != nil {
		return watchEvent{}, err
	}
	ev := watchEvent{kind: rep.kind}
	r := reader{m: rep.body}
	switch rep.kind {
	case kindMessages:
		ev.messages, err = decodeMessages(rep.body)
		r.keep(err)
	case kindGap:
		ev.gapFrom, ev.gapTo = r.uint(1), r.uint(2)
	case kindHeartbeat:
		ev.last, ev.now = r.uint(1), r.int(2)
	case kindError:
		ev.err, err = decodeError(rep.body)
		r.keep(err)
		if r.err == nil {
			r.keep(expectEOF(w.s))
		}
	default:
		r.keep(fmt.Errorf("watch: reply of kind %d", rep.kind))
	}
	if r.err != nil {
		w.s.cancel()
	}
	return ev, r.err
}

// messagesUntil reads the watch's Messages until it holds seq last, and
// fails on anything else (an Error, a Gap).
func (w *watch) messagesUntil(last uint64) ([]message, error) {
	var out []message
	for len(out) == 0 || out[len(out)-1].seq < last {
		ev, err := w.next()
		if err != nil {
			return out, err
		}
		switch ev.kind {
		case kindMessages:
			out = append(out, ev.messages...)
		case kindHeartbeat:
		default:
			return out, fmt.Errorf("watch: event of kind %d (%v) waiting for message %d", ev.kind, ev.err, last)
		}
	}
	return out, nil
}

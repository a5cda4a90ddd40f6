package web

import (
	"context"
	"errors"
	"iter"
	"time"
	"unicode/utf8"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// This file is the thin layer between the web server and the Go client
// API: the only one that speaks in the client's types, so that when the
// client package's vocabulary changes, this is what changes with it.

// messageJSON is a message as the API shows it: the fields of `huddle
// fetch --json`.
type messageJSON struct {
	Seq  uint64 `json:"seq"`
	TS   string `json:"ts"` // RFC 3339, nanoseconds, UTC
	ID   string `json:"id"`
	From string `json:"from"`
	Name string `json:"name"`
	Text string `json:"text"`
}

// jsonTime formats a server timestamp as `huddle --json` does: RFC 3339 in
// UTC with all nine digits, so that the strings sort as the times do.
func jsonTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") }

func toMessage(m client.Message) messageJSON {
	text := string(m.Body)
	if !utf8.ValidString(text) {
		text = string([]rune(text)) // invalid bytes become U+FFFD
	}
	return messageJSON{Seq: m.Seq, TS: jsonTime(m.Time), ID: m.ID.String(), From: m.From.String(), Name: m.Name, Text: text}
}

// memberJSON is a member with its presence.
type memberJSON struct {
	Fingerprint string  `json:"fingerprint"`
	Short       string  `json:"short"`
	Name        string  `json:"name"`
	Joined      string  `json:"joined"`
	Online      bool    `json:"online"`
	LastSeen    *string `json:"last_seen"` // null: not seen since the daemon started
	You         bool    `json:"you"`
}

func members(ctx context.Context, g *client.Group, me wire.Fingerprint) ([]memberJSON, error) {
	ms, err := g.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]memberJSON, len(ms))
	for i, m := range ms {
		out[i] = memberJSON{Fingerprint: m.Fingerprint.String(), Short: m.Fingerprint.Short(), Name: m.Name,
			Joined: jsonTime(m.Joined), Online: m.Online, You: m.Fingerprint == me}
		if !m.LastSeen.IsZero() {
			s := jsonTime(m.LastSeen)
			out[i].LastSeen = &s
		}
	}
	return out, nil
}

// page is a run of messages and where they sit in the group's log.
type page struct {
	Messages []messageJSON `json:"messages"`
	Epoch    uint64        `json:"epoch,string"` // a string: it does not fit a JavaScript number
	First    uint64        `json:"first"`        // first sequence the group holds
	Last     uint64        `json:"last"`         // last sequence assigned
	// More: messages remain before the page (for before=) or after it.
	More bool `json:"more"`
}

// position returns the group's last sequence and log epoch now.
func position(ctx context.Context, g *client.Group) (last, epoch uint64, err error) {
	info, err := g.Info(ctx)
	return info.Last, info.Epoch, err
}

// pageBefore returns up to limit messages before seq before (0: the last
// messages), in order. Sequence numbers have no gaps, so the page is
// fetched after before-1-limit.
func pageBefore(ctx context.Context, g *client.Group, before uint64, limit int, epoch uint64) (page, error) {
	if before == 0 {
		info, err := g.Info(ctx)
		if err != nil {
			return page{}, err
		}
		if epoch != 0 && info.Epoch != epoch {
			return page{}, &wire.Error{Code: wire.CodeEpochMismatch, Epoch: info.Epoch, Message: "the group's history was reset"}
		}
		before, epoch = info.Last+1, info.Epoch
	}
	after := uint64(0)
	if before > uint64(limit)+1 {
		after = before - 1 - uint64(limit)
	}
	p := page{Messages: []messageJSON{}}
	cur, err := g.Fetch(ctx, client.Query{After: after, Epoch: epoch, Limit: limit}, func(m client.Message) bool {
		// Past before only when retention dropped the start of the page:
		// the fetch then begins at the first message held.
		if m.Seq < before {
			p.Messages = append(p.Messages, toMessage(m))
		}
		return true
	})
	if err != nil {
		return page{}, err
	}
	p.Epoch, p.First, p.Last = cur.Epoch, cur.First, cur.Last
	if p.Epoch == 0 {
		p.Epoch = epoch
	}
	lowest := before
	if len(p.Messages) > 0 {
		lowest = p.Messages[0].Seq
	}
	p.More = cur.First > 0 && lowest > cur.First
	return p, nil
}

// pageAfter returns up to limit messages after seq after, in order.
func pageAfter(ctx context.Context, g *client.Group, after uint64, limit int, epoch uint64) (page, error) {
	p := page{Messages: []messageJSON{}}
	cur, err := g.Fetch(ctx, client.Query{After: after, Epoch: epoch, Limit: limit}, func(m client.Message) bool {
		p.Messages = append(p.Messages, toMessage(m))
		return true
	})
	if err != nil {
		return page{}, err
	}
	p.Epoch, p.First, p.Last, p.More = cur.Epoch, cur.First, cur.Last, cur.More
	return p, nil
}

// sentJSON is a message's acknowledgment.
type sentJSON struct {
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	ID        string `json:"id"`
	Epoch     uint64 `json:"epoch,string"` // a string: it does not fit a JavaScript number
	Duplicate bool   `json:"duplicate"`
}

// send sends text as one message with the given ID (a fresh one if zero),
// so that a page retrying after a lost reply never stores it twice. after,
// if its epoch is known, is where the page saw the log stand before its
// first try of the message, which ended in doubt (client.SendMessagesAfter).
func send(ctx context.Context, g *client.Group, id wire.ID, text string, after client.Position) (sentJSON, error) {
	if id.IsZero() {
		id = wire.NewID()
	}
	var a client.Ack
	var err error
	if after.Epoch != 0 {
		var acks []client.Ack
		if acks, err = g.SendMessagesAfter(ctx, []client.Outgoing{{ID: id, Body: []byte(text)}}, after); err == nil {
			a = acks[0]
		}
	} else {
		a, err = g.SendWithID(ctx, id, []byte(text))
	}
	if err != nil {
		return sentJSON{}, err
	}
	return sentJSON{Seq: a.Seq, TS: jsonTime(a.Time), ID: id.String(), Epoch: a.Epoch, Duplicate: a.Duplicate}, nil
}

// event is one thing an event stream reports about a group's watch.
type event struct {
	kind    string // "message", "gap", "reset", "status"
	epoch   uint64
	message messageJSON
	from    uint64 // gap
	to      uint64
	state   string // status: "live", "reconnecting", "ended"
	err     error  // status reconnecting or ended: why
}

// watch follows g after seq after of epoch (epoch 0: of the current log)
// and yields what happens, including the watch's own state.
func watch(ctx context.Context, g *client.Group, after, epoch uint64) iter.Seq[event] {
	return func(yield func(event) bool) {
		for ev, err := range g.Watch(ctx, client.Query{After: after, Epoch: epoch, Status: true}) {
			if err != nil {
				if ctx.Err() == nil {
					yield(event{kind: "status", state: "ended", err: err})
				}
				return
			}
			var e event
			switch ev.Kind {
			case client.EventMessage:
				e = event{kind: "message", epoch: ev.Epoch, message: toMessage(ev.Message)}
			case client.EventGap:
				e = event{kind: "gap", epoch: ev.Epoch, from: ev.From, to: ev.To}
			case client.EventReset:
				e = event{kind: "reset", epoch: ev.Epoch}
			case client.EventLive:
				e = event{kind: "status", epoch: ev.Epoch, state: "live"}
			case client.EventInterrupted:
				e = event{kind: "status", epoch: ev.Epoch, state: "reconnecting", err: ev.Err}
			default:
				continue
			}
			if !yield(e) {
				return
			}
		}
	}
}

// isUnreachable reports whether err means a server could not be reached.
func isUnreachable(err error) bool {
	return errors.Is(err, client.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)
}

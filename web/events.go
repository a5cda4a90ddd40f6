package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// Bounds and timings of event streams.
const (
	// maxWatches bounds the groups one event stream follows.
	maxWatches = 256
	// pingEvery is how often an idle stream sends a comment, so that the
	// page and proxies see it alive.
	pingEvery = 15 * time.Second
	// streamWriteTimeout bounds each write to the browser: a page that
	// stops reading loses its stream (it reconnects, resuming by cursor).
	streamWriteTimeout = 30 * time.Second
	// streamQueue is how many events may wait for the browser before the
	// watches feeding them wait in turn.
	streamQueue = 1024
	// streamQueueBytes bounds the bytes of messages (their texts and
	// names) waiting for the browser on one stream, for the same: 1024
	// messages of 1 MiB, which a daemon may send (its frames' bound, past
	// its own message limit), were 1 GiB a stream while a page did not
	// read. A message larger than the bound waits until the queue is
	// empty.
	streamQueueBytes = 16 << 20
)

// eventQueue holds the events of one stream waiting for the browser,
// bounded in number (its channel) and in the bytes of their messages.
type eventQueue struct {
	ch     chan streamEvent
	max    int
	queued *atomic.Int64 // the Server's, of every stream
	wait   func()        // test hook: called when an event waits for room

	mu    sync.Mutex
	bytes int
	freed chan struct{} // closed and replaced when bytes are given back
}

func (s *Server) newEventQueue() *eventQueue {
	return &eventQueue{ch: make(chan streamEvent, streamQueue), max: s.queueBytes, queued: &s.queued, wait: s.queueWait,
		freed: make(chan struct{})}
}

// put queues ev, waiting while the queue is full (in events or in bytes)
// or until ctx ends; it reports whether ev was queued.
func (q *eventQueue) put(ctx context.Context, ev streamEvent) bool {
	for waited := false; ; waited = true {
		q.mu.Lock()
		fits := ev.size == 0 || q.bytes == 0 || q.bytes+ev.size <= q.max
		if fits {
			q.bytes += ev.size
		}
		freed := q.freed
		q.mu.Unlock()
		if fits {
			break
		}
		if !waited && q.wait != nil {
			q.wait()
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
	q.queued.Add(int64(ev.size))
	select {
	case q.ch <- ev:
		return true
	case <-ctx.Done():
		q.done(ev)
		return false
	}
}

// done gives back what ev held once it was written (or dropped).
func (q *eventQueue) done(ev streamEvent) {
	if ev.size == 0 {
		return
	}
	q.queued.Add(-int64(ev.size))
	q.mu.Lock()
	q.bytes -= ev.size
	close(q.freed)
	q.freed = make(chan struct{})
	q.mu.Unlock()
}

// watchSpec is one group an event stream follows and where it resumes.
type watchSpec struct {
	group  wire.UUID
	cursor bool   // after and epoch given
	after  uint64 // resume after this sequence...
	epoch  uint64 // ...of this log epoch (0: the current one)
}

// parseWatch reads a watch parameter: UUID (new messages only) or
// UUID:EPOCH:SEQ (after SEQ of EPOCH; EPOCH 0 means the current log, so
// UUID:0:0 is every message held).
func parseWatch(s string) (watchSpec, error) {
	parts := strings.Split(s, ":")
	id, err := uuid.Parse(parts[0])
	if err != nil {
		return watchSpec{}, badRequest("watch=%q: %q is not a group UUID", s, parts[0])
	}
	w := watchSpec{group: id}
	switch len(parts) {
	case 1:
		return w, nil
	case 3:
		e, err1 := strconv.ParseUint(parts[1], 10, 64)
		a, err2 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil {
			return watchSpec{}, badRequest("watch=%q: want UUID:EPOCH:SEQ with numbers", s)
		}
		w.cursor, w.epoch, w.after = true, e, a
		return w, nil
	}
	return watchSpec{}, badRequest("watch=%q: want UUID or UUID:EPOCH:SEQ", s)
}

// streamEvent is one event for the browser: its SSE name and JSON data,
// and the bytes of its message's text and name that an eventQueue counts.
type streamEvent struct {
	name string
	data any
	size int
}

// apiEvents is GET /api/events: a text/event-stream of the group list
// ("groups", at the start and on each change) and, for each group named by
// a watch parameter, its messages and watch state ("message", "gap",
// "reset", "status"). See README.md, "huddle web's API".
func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	var specs []watchSpec
	seen := map[wire.UUID]bool{}
	for _, v := range r.URL.Query()["watch"] {
		for _, one := range strings.Split(v, ",") {
			if one == "" {
				continue
			}
			ws, err := parseWatch(one)
			if err != nil {
				writeError(w, toAPIError(err))
				return
			}
			if seen[ws.group] {
				writeError(w, badRequest("group %s is watched twice", ws.group))
				return
			}
			seen[ws.group] = true
			specs = append(specs, ws)
		}
	}
	if len(specs) > maxWatches {
		writeError(w, badRequest("%d groups to watch; at most %d per stream", len(specs), maxWatches))
		return
	}
	select {
	case s.stream <- struct{}{}:
		defer func() { <-s.stream }()
	default:
		writeError(w, apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Message: fmt.Sprintf("%d event streams are open, the most this server serves", cap(s.stream))})
		return
	}
	defer s.dir.stream()()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)

	ctx, cancel := context.WithCancel(r.Context())
	q := s.newEventQueue()
	defer func() { // last: once every watch has ended, what it queued goes
		for len(q.ch) > 0 {
			q.done(<-q.ch)
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, below: every watch ends first
	defer cancel()
	events := q.ch
	for _, ws := range specs {
		wg.Go(func() { s.follow(ctx, ws, q) })
	}

	write := func(ev streamEvent) error {
		defer q.done(ev)
		b, err := json.Marshal(ev.data)
		if err != nil {
			return err
		}
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, b)
		return err
	}
	flush := func() error {
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		return rc.Flush()
	}
	if write(streamEvent{name: "hello", data: s.me()}) != nil {
		return
	}
	_, list, changed := s.dir.current(ctx)
	if write(streamEvent{name: "groups", data: json.RawMessage(list)}) != nil || flush() != nil {
		return
	}
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			err = write(ev)
			// Write what else is waiting, then flush once.
			for more := true; more && err == nil; {
				select {
				case ev := <-events:
					err = write(ev)
				default:
					more = false
				}
			}
		case <-changed:
			list, changed = s.dir.watchList()
			err = write(streamEvent{name: "groups", data: json.RawMessage(list)})
		case <-ping.C:
			rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			_, err = fmt.Fprint(w, ": ping\n\n")
		}
		if err == nil {
			err = flush()
		}
		if err != nil {
			return
		}
	}
}

// follow runs one group's watch for an event stream until ctx ends or the
// watch ends for good, queueing what happens on out.
func (s *Server) follow(ctx context.Context, ws watchSpec, out *eventQueue) {
	id := ws.group.String()
	emit := func(name string, data map[string]any) bool {
		data["group"] = id
		size := 0
		if name == "message" {
			text, _ := data["text"].(string)
			from, _ := data["name"].(string)
			size = len(text) + len(from)
		}
		return out.put(ctx, streamEvent{name: name, data: data, size: size})
	}
	status := func(state string, epoch uint64, err error) bool {
		d := map[string]any{"state": state}
		if epoch != 0 {
			d["epoch"] = epochString(epoch)
		}
		if err != nil {
			d["error"] = toAPIError(err)
		}
		return emit("status", d)
	}
	for {
		g, ok := s.acquire(ctx, &ws, status)
		if !ok {
			return
		}
		// From here on the cursor is known: where the watch began, then
		// the last event it delivered.
		ws.cursor = true
		if !s.watchHandle(ctx, g, &ws, emit, status) {
			return
		}
		// The directory holds another handle on the group now (it came
		// back under another key, or at another address after it was
		// unlisted): watch through that one, from the cursor.
	}
}

// acquire returns the directory's handle on ws's group, waiting with
// backoff (and saying "reconnecting") while no registry lists it or its
// daemon cannot be reached, and sets ws's cursor to the log's end now if
// it has none. It reports false once ctx ends or the group is gone for
// good (said as "ended").
func (s *Server) acquire(ctx context.Context, ws *watchSpec, status func(string, uint64, error) bool) (*client.Group, bool) {
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		g, err := s.dir.group(ctx, ws.group)
		if err == nil && !ws.cursor {
			// New messages only: from the log's end now.
			ws.after, ws.epoch, err = position(ctx, g)
		}
		if err == nil {
			return g, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		ae := toAPIError(err)
		if ae.Code != "unreachable" && ae.Code != "unavailable" && ae.Code != "not_found" {
			status("ended", 0, err)
			return nil, false
		}
		if !status("reconnecting", 0, err) || !sleep(ctx, backoff) {
			return nil, false
		}
	}
}

// watchHandle runs the watch of ws's group through g from ws's cursor,
// moving the cursor past each event it passes on. It reports true when it
// stopped because the directory's handle on the group is no longer g (the
// watch should go on through the new one), false when ctx ended, the page
// went away or the watch ended for good.
func (s *Server) watchHandle(ctx context.Context, g *client.Group, ws *watchSpec, emit func(string, map[string]any) bool, status func(string, uint64, error) bool) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the watch when the loop below leaves it early
	// dropped: the watch lost its stream and has not resumed since.
	dropped := false
	for e := range watch(ctx, g, ws.after, ws.epoch) {
		var ok bool
		switch e.kind {
		case "message":
			ws.after, ws.epoch = e.message.Seq, e.epoch
			ok = emit("message", map[string]any{"epoch": epochString(e.epoch), "seq": e.message.Seq, "ts": e.message.TS,
				"id": e.message.ID, "from": e.message.From, "name": e.message.Name, "text": e.message.Text})
		case "gap":
			ws.after, ws.epoch = e.to, e.epoch
			ok = emit("gap", map[string]any{"epoch": epochString(e.epoch), "from": e.from, "to": e.to})
		case "reset":
			ws.after, ws.epoch = 0, e.epoch
			ok = emit("reset", map[string]any{"epoch": epochString(e.epoch)})
		case "status":
			if e.state == "live" && ws.epoch == 0 {
				ws.epoch = e.epoch
			}
			// A watch that drops, and one that resumes after, has the
			// group's info asked at once (askAgain), as a send that
			// cannot reach the daemon has: the list said the daemon
			// reachable, with what it said of retries (send_after), until
			// its next info, up to infoEvery later, and a daemon killed
			// within its lease and an older one back in its place were
			// one to the page meanwhile. Once each way: a watch says
			// "reconnecting" at each try while the daemon is away.
			if e.state == "reconnecting" && !dropped || e.state == "live" && dropped {
				dropped = e.state == "reconnecting"
				s.dir.askAgain(ws.group, g)
			}
			if e.state == "ended" && errors.Is(e.err, client.ErrClosed) && ctx.Err() == nil {
				// The directory closed g as the group left the listings
				// just before the watch began on it: wait for the group
				// as any unlisted one.
				return true
			}
			ok = status(e.state, e.epoch, e.err)
			// A watch that cannot reach the daemon it was opened on follows
			// it by its key (client.Group.Watch); a group the registries now
			// list under another key, or that was unlisted meanwhile, has a
			// new handle in the directory.
			if ok && e.state == "reconnecting" {
				if h := s.dir.handle(ws.group); h != nil && h != g {
					return true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return false
}

// epochString writes a log epoch for JSON as a string: epochs are random
// 64-bit numbers, and JavaScript's numbers hold 53 bits.
func epochString(e uint64) string { return strconv.FormatUint(e, 10) }

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

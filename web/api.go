package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// Bounds of the API.
const (
	// callTimeout bounds each request the server makes of a daemon for one
	// API call.
	callTimeout = 15 * time.Second
	// maxBody bounds a request body: a message of the protocol's largest
	// frame, escaped in JSON.
	maxBody = 8 << 20
	// defaultPage and maxPage bound a page of messages.
	defaultPage = 200
	maxPage     = 10_000
)

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("/", staticHandler())
	m.HandleFunc("GET /api/me", s.apiMe)
	m.HandleFunc("GET /api/groups", s.apiGroups)
	m.HandleFunc("GET /api/groups/{id}", s.apiGroup)
	m.HandleFunc("POST /api/groups/{id}/join", s.apiJoin)
	m.HandleFunc("POST /api/groups/{id}/leave", s.apiLeave)
	m.HandleFunc("GET /api/groups/{id}/members", s.apiMembers)
	m.HandleFunc("GET /api/groups/{id}/messages", s.apiMessages)
	m.HandleFunc("POST /api/groups/{id}/messages", s.apiSend)
	m.HandleFunc("GET /api/events", s.apiEvents)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no such API route: " + r.Method + " " + r.URL.Path})
	})
	return m
}

// apiError is an error as the API reports it.
type apiError struct {
	Status       int    `json:"-"`
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS uint64 `json:"retry_after_ms,omitempty"`
	Epoch        uint64 `json:"epoch,string,omitempty"`
	// InDoubt, for a send, says its outcome is unknown (client.ErrInDoubt:
	// the daemon may have stored it), whatever Code says; ID is then the
	// message's ID, a retry with which is stored once.
	InDoubt bool   `json:"in_doubt,omitempty"`
	ID      string `json:"id,omitempty"`
}

func (e apiError) Error() string { return e.Code + ": " + e.Message }

// toAPIError maps an error to the API's vocabulary: the protocol's codes
// for what a daemon said, unreachable for what could not be asked.
func toAPIError(err error) apiError {
	var ae apiError
	if errors.As(err, &ae) {
		return ae
	}
	code, ok := protocolCode(err)
	if ok {
		e := apiError{Code: code.String(), Message: err.Error()}
		var we *wire.Error
		if errors.As(err, &we) {
			e.RetryAfterMS, e.Epoch = we.RetryAfterMS, we.Epoch
		}
		switch code {
		case wire.CodeBadRequest:
			e.Status = http.StatusBadRequest
		case wire.CodeUnauthorized, wire.CodeNotMember:
			e.Status = http.StatusForbidden
		case wire.CodeNotFound:
			e.Status = http.StatusNotFound
		case wire.CodeTooLarge:
			e.Status = http.StatusRequestEntityTooLarge
		case wire.CodeRateLimited:
			e.Status = http.StatusTooManyRequests
		case wire.CodeUnavailable:
			e.Status = http.StatusServiceUnavailable
		case wire.CodeEpochMismatch, wire.CodeWindowPassed:
			e.Status = http.StatusConflict
		default:
			e.Status = http.StatusInternalServerError
		}
		return e
	}
	var mm *identity.MismatchError
	if errors.As(err, &mm) {
		// Before unreachable: the daemon answered, with another key than
		// the listing's, which no retry at once mends.
		return apiError{Status: http.StatusBadGateway, Code: "wrong_key", Message: err.Error() +
			"; the daemon's key is not the one the registry lists: the listing may be stale (the daemon was reinstalled or moved; try again in a few seconds) or someone is impersonating it"}
	}
	if isUnreachable(err) {
		return apiError{Status: http.StatusBadGateway, Code: "unreachable", Message: err.Error()}
	}
	if errors.Is(err, client.ErrClosed) {
		// The directory closed the handle the request had just taken: no
		// registry lists the group any more (or huddle web is stopping).
		return apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no registry lists the group any more"}
	}
	if errors.Is(err, context.Canceled) {
		return apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "huddle web is shutting down"}
	}
	return apiError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

// protocolCode returns the protocol error code err matches, if any.
func protocolCode(err error) (wire.Code, bool) {
	for c := wire.CodeInternal; c <= wire.CodeWindowPassed; c++ {
		if errors.Is(err, c.Sentinel()) {
			return c, true
		}
	}
	return 0, false
}

func writeError(w http.ResponseWriter, e apiError) {
	if e.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatUint((e.RetryAfterMS+999)/1000, 10))
	}
	writeJSON(w, e.Status, map[string]apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode reply"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func badRequest(format string, args ...any) apiError {
	return apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf(format, args...)}
}

// groupOf finds the {id} of a request's path among the listed groups.
func (s *Server) groupOf(ctx context.Context, r *http.Request) (*client.Group, wire.UUID, error) {
	g, _, id, err := s.listedOf(ctx, r)
	return g, id, err
}

// listedOf is groupOf, and also returns the group's state as the
// directory holds it now (directory.listed), for joinedAt.
func (s *Server) listedOf(ctx context.Context, r *http.Request) (*client.Group, *groupState, wire.UUID, error) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return nil, nil, id, badRequest("group %q is not a UUID", r.PathValue("id"))
	}
	g, gs, err := s.dir.listed(ctx, id)
	return g, gs, id, err
}

// readJSON decodes a request body of at most maxBody bytes into v. A body
// that is not UTF-8 is refused: encoding/json would put U+FFFD in place of
// the bytes it cannot read, and a name or message would be stored other
// than as it was sent.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return badRequest("send the body as application/json, not %s", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("request body over %d bytes", maxBody)}
		}
		return badRequest("read the body: %v", err)
	}
	if !utf8.Valid(body) {
		return badRequest("the body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("read the body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("the body holds more than one JSON value")
	}
	return nil
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.me())
}

// me is who the server acts as: its key, and the name the join form
// offers (Config.Name, absent if none).
func (s *Server) me() map[string]string {
	fp := s.cfg.Client.Fingerprint()
	me := map[string]string{"fingerprint": fp.String(), "short": fp.Short()}
	if s.cfg.Name != "" {
		me["name"] = s.cfg.Name
	}
	return me
}

func (s *Server) apiGroups(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	l, _, _ := s.dir.current(ctx)
	writeJSON(w, http.StatusOK, l)
}

// apiGroup returns one listed group, its info asked again now.
func (s *Server) apiGroup(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	_, id, err := s.groupOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.dir.refreshGroup(ctx, id)
	l, _, _ := s.dir.current(ctx)
	for _, g := range l.Groups {
		if g.UUID == id.String() {
			writeJSON(w, http.StatusOK, g)
			return
		}
	}
	writeError(w, toAPIError(fmt.Errorf("group %s: %w: no registry lists it now", id, wire.ErrNotFound)))
}

func (s *Server) apiJoin(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	var req struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if err := wire.CheckName(req.Name); err != nil {
		writeError(w, badRequest("name %q: %v", req.Name, err))
		return
	}
	g, gs, id, err := s.listedOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if s.dir.unresolvedClash(id, g) {
		writeError(w, apiError{Status: http.StatusConflict, Code: "clash", Message: "registries list this group under two daemon keys " +
			"(someone registered a group under another's UUID), and you joined it under neither: the page joins neither. " +
			"Ask its owner which daemon is theirs, then give that registry alone: huddle web --registry ADDR"})
		return
	}
	var secret []byte
	if req.Secret != "" {
		secret = []byte(req.Secret)
	}
	j, err := g.Join(ctx, req.Name, secret)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.dir.refreshGroup(ctx, id) // first: joinedAt records the name its daemon gives
	out := map[string]any{"epoch": strconv.FormatUint(j.Epoch, 10), "last_seq": j.Last, "already": j.Already}
	if err := s.dir.joinedAt(id, gs, false); err != nil {
		out["unrecorded"] = unrecorded("join", err)
	}
	writeJSON(w, http.StatusOK, out)
}

// unrecorded says, for the page, that a join or leave (what) made through
// it could not be recorded in Config.Joined (err): it is done, and what
// the record gives (the group's name and key preferred by the commands
// and the page) waits for the next one. The page says it in a notice
// (the join's or leave's answer, unrecorded); until session 17 only
// huddle web's log said it, once until a record was written again.
func unrecorded(what string, err error) string {
	return fmt.Sprintf("Your %s is done, but huddle could not record it in your joined file (%v): until it is recorded, the commands and this page do not prefer this group's name and key. The next join or leave here tries again.", what, err)
}

func (s *Server) apiLeave(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	g, gs, id, err := s.listedOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	was, err := g.Leave(ctx)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	out := map[string]any{"was_member": was}
	if err := s.dir.joinedAt(id, gs, true); err != nil {
		out["unrecorded"] = unrecorded("leave", err)
	}
	s.dir.refreshGroup(ctx, id)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiMembers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	g, id, err := s.groupOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	ms, err := members(ctx, g, s.cfg.Client.Fingerprint())
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	s.dir.countMembers(id, len(ms))
	writeJSON(w, http.StatusOK, map[string]any{"members": ms})
}

// apiMessages returns a page of messages: ?before=SEQ (the page that ends
// just before SEQ; absent: the last messages) or ?after=SEQ, with
// ?limit=N (default 200, at most 10,000) and ?epoch=E (the page must be
// of that log, or 409 epoch_mismatch).
func (s *Server) apiMessages(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	q := r.URL.Query()
	num := func(name string, def uint64) (uint64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, badRequest("%s=%q is not a number", name, v)
		}
		return n, nil
	}
	before, err1 := num("before", 0)
	after, err2 := num("after", 0)
	limit, err3 := num("limit", defaultPage)
	epoch, err4 := num("epoch", 0)
	if err := firstErr(err1, err2, err3, err4); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if q.Has("before") && q.Has("after") {
		writeError(w, badRequest("give before or after, not both"))
		return
	}
	if limit == 0 || limit > maxPage {
		writeError(w, badRequest("limit=%d: want 1..%d", limit, maxPage))
		return
	}
	g, _, err := s.groupOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	var p page
	if q.Has("after") {
		p, err = pageAfter(ctx, g, after, int(limit), epoch)
	} else {
		p, err = pageBefore(ctx, g, before, int(limit), epoch)
	}
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// apiSend sends {"text": ..., "id": a random UUID (optional)}: a page that
// retries with the same id after a lost reply gets the first ack back. A
// retry of a message in doubt may say where the page had seen the log
// stand before its first try ("after_epoch", a string, and "after_seq"):
// a daemon whose dedup window no longer reaches back there refuses it,
// storing nothing (window_passed, PROTOCOL.md §8.5).
func (s *Server) apiSend(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	var req struct {
		Text       string `json:"text"`
		ID         string `json:"id"`
		AfterEpoch uint64 `json:"after_epoch,string,omitempty"`
		AfterSeq   uint64 `json:"after_seq,omitempty"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		writeError(w, badRequest("the message is empty"))
		return
	}
	id := wire.NewID() // drawn here, to name in an answer in doubt
	if req.ID != "" {
		u, err := uuid.Parse(req.ID)
		if err != nil || u == (uuid.UUID{}) {
			writeError(w, badRequest("id %q is not a UUID", req.ID))
			return
		}
		id = wire.ID(u)
	}
	g, gid, err := s.groupOf(ctx, r)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	ack, err := send(ctx, g, id, req.Text, client.Position{Epoch: req.AfterEpoch, Seq: req.AfterSeq})
	if err != nil {
		e := toAPIError(err)
		if e.Code == "unreachable" || errors.Is(err, client.ErrInDoubt) {
			s.dir.askAgain(gid, g)
		}
		if errors.Is(err, client.ErrInDoubt) {
			// The daemon may have stored it: a caller that gave no id
			// could not otherwise retry it safely, and one told only
			// the code (not_member, say, to a retry after a lost
			// connection) would take it for refused (until session 19).
			e.InDoubt, e.ID = true, id.String()
		}
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, ack)
}

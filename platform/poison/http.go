package poison

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/millrace/millrace/platform/adminapi"
)

// problemBase is the prefix of the admin API's problem types, shared with
// the gateway's.
const problemBase = "https://millrace.dev/problems/"

// AdminHandler serves the poison queue's admin API, JSON in and out, errors
// as RFC 9457 problems (application/problem+json):
//
//	GET  /admin/poison                ?topic= &handler= &key= &status= &after= &limit=
//	                                  → {"entries": [entry…]} (no metadata, payload, history)
//	GET  /admin/poison/{id}           → entry with metadata, payload and history
//	POST /admin/poison/{id}/requeue   → the entry, now requeued
//	POST /admin/poison/requeue        {"handler": h, "key": k} requeues that sequence,
//	                                  {"all": true} every open entry
//	                                  → {"requeued": [ids], "waiting": n}
//	POST /admin/poison/{id}/drop      {"reason": "…"} → the entry, now dropped
//
// Statuses: 400 for a malformed request, 404 for an unknown entry, 409 when
// the entry's state forbids the operation (the detail names what to do
// instead), 500 otherwise. The API has no authentication of its own: serve
// it where only operators reach it (millrace dev listens on loopback). A nil
// logger logs nothing.
func AdminHandler(s *Store, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &admin{store: s, logger: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/poison", a.list)
	mux.HandleFunc("GET /admin/poison/{id}", a.get)
	mux.HandleFunc("POST /admin/poison/{id}/requeue", a.requeueOne)
	mux.HandleFunc("POST /admin/poison/requeue", a.requeueMany)
	mux.HandleFunc("POST /admin/poison/{id}/drop", a.drop)
	// Everything else under /admin/poison is answered with a problem too.
	mux.HandleFunc("/admin/poison", a.notFound)
	mux.HandleFunc("/admin/poison/", a.notFound)
	return mux
}

type admin struct {
	store  *Store
	logger *slog.Logger
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Topic: q.Get("topic"), Handler: q.Get("handler"), Key: q.Get("key"), Status: Status(q.Get("status"))}
	for _, p := range []struct {
		name string
		set  func(int64)
	}{
		{"after", func(v int64) { f.After = v }},
		{"limit", func(v int64) { f.Limit = int(v) }},
	} {
		if s := q.Get(p.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				a.problem(w, r, opErr(ErrInvalid, "query parameter %s=%q: want a non-negative whole number", p.name, s))
				return
			}
			p.set(v)
		}
	}
	entries, err := a.store.List(r.Context(), f)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, struct {
		Entries []Entry `json:"entries"`
	}{entries})
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	id, ok := a.id(w, r)
	if !ok {
		return
	}
	e, err := a.store.Get(r.Context(), id)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, e)
}

func (a *admin) requeueOne(w http.ResponseWriter, r *http.Request) {
	id, ok := a.id(w, r)
	if !ok {
		return
	}
	e, err := a.store.Requeue(r.Context(), id)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, e)
}

// RequeueRequest is the body of POST /admin/poison/requeue: a sequence
// (Handler and Key) or All.
type RequeueRequest struct {
	Handler string `json:"handler,omitempty"`
	Key     string `json:"key,omitempty"`
	All     bool   `json:"all,omitempty"`
}

func (a *admin) requeueMany(w http.ResponseWriter, r *http.Request) {
	var req RequeueRequest
	if !a.decode(w, r, &req) {
		return
	}
	var res RequeueResult
	var err error
	switch {
	case req.All && (req.Handler != "" || req.Key != ""):
		err = opErr(ErrInvalid, `send either {"all": true} or {"handler": …, "key": …}, not both`)
	case req.All:
		res, err = a.store.RequeueAll(r.Context())
	case req.Handler == "" || req.Key == "":
		err = opErr(ErrInvalid, `name the sequence with {"handler": …, "key": …}, or requeue everything with {"all": true}`)
	default:
		res, err = a.store.RequeueSequence(r.Context(), req.Handler, req.Key)
	}
	if err != nil {
		a.problem(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, res)
}

// DropRequest is the body of POST /admin/poison/{id}/drop.
type DropRequest struct {
	Reason string `json:"reason"`
}

func (a *admin) drop(w http.ResponseWriter, r *http.Request) {
	id, ok := a.id(w, r)
	if !ok {
		return
	}
	var req DropRequest
	if !a.decode(w, r, &req) {
		return
	}
	e, err := a.store.Drop(r.Context(), id, req.Reason)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, e)
}

func (a *admin) notFound(w http.ResponseWriter, r *http.Request) {
	a.problem(w, r, opErr(ErrNotFound, "no admin route %s %s; see GET /admin/poison", r.Method, r.URL.Path))
}

func (a *admin) id(w http.ResponseWriter, r *http.Request) (int64, bool) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		a.problem(w, r, opErr(ErrInvalid, "entry id %q: want a positive whole number, as millrace poison list shows", s))
		return 0, false
	}
	return id, true
}

// decode reads a JSON body of at most 64 KiB into v, refusing unknown fields.
func (a *admin) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		a.problem(w, r, &opError{kind: errMalformed, detail: "request body: " + err.Error()})
		return false
	}
	return true
}

// errMalformed: the request body is not the JSON the route takes.
var errMalformed = errors.New("malformed json")

// problem is an RFC 9457 problem document.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
}

func (a *admin) problem(w http.ResponseWriter, r *http.Request, err error) {
	p := problem{Instance: r.URL.Path, Detail: err.Error()}
	switch {
	case errors.Is(err, ErrNotFound):
		p.Type, p.Title, p.Status = problemBase+"not-found", "Not found", http.StatusNotFound
	case errors.Is(err, ErrConflict):
		p.Type, p.Title, p.Status = problemBase+"conflict", "Conflict with the entry's state", http.StatusConflict
	case errors.Is(err, errMalformed):
		p.Type, p.Title, p.Status = problemBase+"malformed-json", "Malformed JSON", http.StatusBadRequest
	case errors.Is(err, ErrInvalid):
		p.Type, p.Title, p.Status = problemBase+"invalid-request", "Invalid request", http.StatusBadRequest
	default:
		a.logger.ErrorContext(r.Context(), "poison admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		p.Type, p.Title, p.Status = problemBase+"internal", "Internal error", http.StatusInternalServerError
		p.Detail = fmt.Sprintf("the poison store failed: %v", err)
	}
	adminapi.WriteProblem(w, p.Status, p)
}

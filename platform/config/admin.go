package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/adminapi"
)

// AdminOptions tune AdminHandler.
type AdminOptions struct {
	// Wait bounds how long a PUT or a rollback waits for the change to be
	// in force and recorded before it answers. Default 10s.
	Wait time.Duration
	// Logger receives a record per failed request. Default: discard.
	Logger *slog.Logger
	// Who names the author of a change from the request and the name the
	// client gave (SetRequest.Who): the authenticated caller, say. Nil
	// takes the name given.
	Who func(r *http.Request, claimed string) string
}

// ConfigView is the answer of GET /admin/config: the configuration in
// force, every setting included, secrets redacted.
type ConfigView struct {
	// Version, AppliedAt, Refused and RefusedAt are the Live's Status.
	Version   uint64     `json:"version"`
	AppliedAt time.Time  `json:"applied_at"`
	Refused   string     `json:"refused,omitempty"`
	RefusedAt *time.Time `json:"refused_at,omitempty"`
	// Source names the layers.
	Source string `json:"source"`
	// Layers are the documents in force, lowest first, without their data.
	Layers []Document `json:"layers"`
	// Writable is the ID of the document config set writes, if any.
	Writable string `json:"writable,omitempty"`
	// States is the health of the layers that talk to a remote store.
	States []SourceState `json:"states,omitempty"`
	// Secrets lists the secret settings.
	Secrets []string `json:"secrets,omitempty"`
	// Key is the setting asked for, if one was; Config and YAML are then
	// its value.
	Key string `json:"key,omitempty"`
	// Config is the configuration (or the setting) as JSON, YAML as YAML.
	Config json.RawMessage `json:"config"`
	YAML   string          `json:"yaml"`
}

// SetRequest is the body of PUT /admin/config.
type SetRequest struct {
	// Key is the path of the setting; Value its new value in YAML.
	Key   string `json:"key"`
	Value string `json:"value"`
	// Unset removes the setting from the writable document instead.
	Unset bool `json:"unset,omitempty"`
	// Who makes the change, and why.
	Who    string `json:"who"`
	Reason string `json:"reason,omitempty"`
}

// RollbackRequest is the body of POST /admin/config/rollback.
type RollbackRequest struct {
	// Version of the document to go back to, as the history lists it.
	Version uint64 `json:"version"`
	// Document is the ID of the document; default the writable one.
	Document string `json:"document,omitempty"`
	Who      string `json:"who"`
	Reason   string `json:"reason,omitempty"`
}

// ChangeResult is the answer of a PUT or a rollback.
type ChangeResult struct {
	Written Written `json:"written"`
	// Applied is true once the change is in force in this process;
	// Version is then the configuration version in force.
	Applied bool   `json:"applied"`
	Version uint64 `json:"version,omitempty"`
	// Recorded is the history record of the change, once recorded.
	Recorded *Change `json:"recorded,omitempty"`
	// Detail says what happened, in words.
	Detail string `json:"detail"`
}

// HistoryView is the answer of GET /admin/config/history.
type HistoryView struct {
	// Document is the document listed; Documents every document with a
	// history in this process.
	Document  string   `json:"document"`
	Documents []string `json:"documents"`
	// Changes are the versions of Document, oldest first.
	Changes []Change `json:"changes"`
}

// AdminHandler serves the configuration of a process, JSON in and out,
// errors as RFC 9457 problems (application/problem+json):
//
//	GET  /admin/config            ?key=gateway.max_in_flight   → ConfigView
//	PUT  /admin/config            SetRequest                   → ChangeResult
//	GET  /admin/config/history    ?document=ID                 → HistoryView
//	POST /admin/config/rollback   RollbackRequest              → ChangeResult
//
// A PUT or rollback is checked with every layer before anything is
// written: 422 with every problem (in "problems") when it would be
// refused, 409 when the document changed meanwhile or there is nothing to
// write to, 502 when the source cannot be written (Consul unreachable,
// 403). It answers once the change is in force and recorded, or after
// AdminOptions.Wait with Applied false. history may be nil: there is then
// no history and no rollback (404). The API has no authentication of its
// own: serve it where only operators reach it, or behind a token check.
func AdminHandler[T any](live *Live[T], history *History, opts AdminOptions) http.Handler {
	if opts.Wait <= 0 {
		opts.Wait = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &admin[T]{live: live, history: history, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/config", a.get)
	mux.HandleFunc("PUT /admin/config", a.set)
	mux.HandleFunc("GET /admin/config/history", a.list)
	mux.HandleFunc("POST /admin/config/rollback", a.rollback)
	mux.HandleFunc("/admin/config", a.notFound)
	mux.HandleFunc("/admin/config/", a.notFound)
	return mux
}

type admin[T any] struct {
	live    *Live[T]
	history *History
	opts    AdminOptions
}

// apiError is a failure of a request, with its status.
type apiError struct {
	status   int
	kind     string
	title    string
	detail   string
	problems []Problem
}

func (e *apiError) Error() string { return e.detail }

func (a *admin[T]) get(w http.ResponseWriter, r *http.Request) {
	st := a.live.Status()
	snap := a.live.Snapshot()
	v := ConfigView{
		Version: st.Version, AppliedAt: st.AppliedAt, Refused: st.Refused, Source: st.Source,
		Layers: snap.Documents, States: a.live.States(), Secrets: a.live.Secrets(),
	}
	if v.Layers == nil {
		v.Layers = []Document{}
	}
	if !st.RefusedAt.IsZero() {
		at := st.RefusedAt
		v.RefusedAt = &at
	}
	if wr, ok := a.live.Writable(); ok {
		v.Writable = wr.ID()
	}
	n, err := a.live.Effective()
	if err != nil {
		a.problem(w, r, err)
		return
	}
	if key := r.URL.Query().Get("key"); key != "" {
		path, err := ParsePath(key)
		if err != nil {
			a.problem(w, r, &apiError{status: http.StatusBadRequest, kind: "invalid-request", title: "Invalid request", detail: err.Error()})
			return
		}
		sub, ok := lookup(n, path)
		if !ok {
			a.problem(w, r, &apiError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
				detail: fmt.Sprintf("%s is not a setting; millrace config get lists every one", FormatPath(path))})
			return
		}
		v.Key, n = FormatPath(path), sub
	}
	if v.Config, err = nodeJSON(n, false); err != nil {
		a.problem(w, r, err)
		return
	}
	text, err := encodeYAML(n)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	v.YAML = string(text)
	adminapi.WriteJSON(w, http.StatusOK, v)
}

func (a *admin[T]) set(w http.ResponseWriter, r *http.Request) {
	var req SetRequest
	if !a.decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Key) == "" {
		a.problem(w, r, &apiError{status: http.StatusBadRequest, kind: "invalid-request", title: "Invalid request",
			detail: `name the setting: {"key": "gateway.max_in_flight", "value": "64", "who": "…"}`})
		return
	}
	written, err := a.live.Set(r.Context(), Edit{Path: req.Key, Value: req.Value, Unset: req.Unset}, Note{Who: a.who(r, req.Who), Reason: req.Reason})
	a.answer(w, r, written, err)
}

func (a *admin[T]) list(w http.ResponseWriter, r *http.Request) {
	if a.history == nil {
		a.problem(w, r, errNoHistory)
		return
	}
	doc := r.URL.Query().Get("document")
	if doc == "" {
		doc = a.defaultDocument()
	}
	v := HistoryView{Document: doc, Documents: a.history.Documents(), Changes: a.history.List(doc)}
	if v.Changes == nil {
		v.Changes = []Change{}
	}
	adminapi.WriteJSON(w, http.StatusOK, v)
}

// defaultDocument is the writable document, else the only one with a
// history.
func (a *admin[T]) defaultDocument() string {
	if wr, ok := a.live.Writable(); ok {
		return wr.ID()
	}
	if docs := a.history.Documents(); len(docs) == 1 {
		return docs[0]
	}
	return ""
}

var errNoHistory = &apiError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
	detail: "this process keeps no history of configuration changes"}

func (a *admin[T]) rollback(w http.ResponseWriter, r *http.Request) {
	if a.history == nil {
		a.problem(w, r, errNoHistory)
		return
	}
	var req RollbackRequest
	if !a.decode(w, r, &req) {
		return
	}
	doc := req.Document
	if doc == "" {
		doc = a.defaultDocument()
	}
	c, ok := a.history.Get(doc, req.Version)
	if !ok {
		n := len(a.history.List(doc))
		a.problem(w, r, &apiError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
			detail: fmt.Sprintf("%s has no version %d (it has %d); millrace config history lists them", orNone(doc), req.Version, n)})
		return
	}
	written, err := a.live.Rollback(r.Context(), c, Note{Who: a.who(r, req.Who), Reason: req.Reason})
	a.answer(w, r, written, err)
}

// answer waits for a change written to be in force and recorded, and
// says so.
func (a *admin[T]) answer(w http.ResponseWriter, r *http.Request, written Written, err error) {
	if err != nil {
		a.problem(w, r, err)
		return
	}
	res := ChangeResult{Written: written}
	if !written.Changed {
		res.Applied, res.Version = true, a.live.Status().Version
		res.Detail = fmt.Sprintf("%s says so already; nothing was written", written.Source)
		adminapi.WriteJSON(w, http.StatusOK, res)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.Wait)
	defer cancel()
	snap, err := a.live.AwaitApplied(ctx, written)
	switch {
	case errors.Is(err, ErrRefusedAfterWrite):
		a.problem(w, r, &apiError{status: http.StatusUnprocessableEntity, kind: "config-refused", title: "Configuration refused", detail: err.Error()})
		return
	case err != nil:
		res.Detail = fmt.Sprintf("written to %s (revision %s); not in force yet after %s: it is applied when the watch sees it", written.Source, written.Revision, a.opts.Wait)
		adminapi.WriteJSON(w, http.StatusAccepted, res)
		return
	}
	res.Applied, res.Version = true, snap.Version
	res.Detail = fmt.Sprintf("written to %s (revision %s); in force as configuration version %d", written.Source, written.Revision, snap.Version)
	if a.history != nil {
		// A document that reads as the version the history holds last (its
		// content written again) is recorded only if a secret changed:
		// wait a moment for that, not the whole wait.
		for _, d := range snap.Documents {
			if d.ID != written.Document {
				continue
			}
			text, _, _ := a.live.redactDoc(d)
			if latest, ok := a.history.Latest(d.ID); ok && latest.New == string(text) && latest.NewAbsent == d.Absent {
				var cancelShort context.CancelFunc
				ctx, cancelShort = context.WithTimeout(ctx, time.Second)
				defer cancelShort()
			}
		}
		var rec Change
		_ = a.history.Wait(ctx, func(h *History) bool {
			for _, c := range h.List(written.Document) {
				if c.Revision == written.Revision {
					rec = c
					return true
				}
			}
			return false
		})
		if rec.ID != "" {
			res.Recorded = &rec
			res.Detail += fmt.Sprintf("; recorded as version %d of %s", rec.Version, rec.Document)
		} else if latest, ok := a.history.Latest(written.Document); ok {
			res.Detail += fmt.Sprintf("; the same settings as version %d of the history", latest.Version)
		}
	}
	adminapi.WriteJSON(w, http.StatusOK, res)
}

// who names the author of a change.
func (a *admin[T]) who(r *http.Request, claimed string) string {
	claimed = strings.TrimSpace(claimed)
	if a.opts.Who != nil {
		return a.opts.Who(r, claimed)
	}
	return claimed
}

func (a *admin[T]) notFound(w http.ResponseWriter, r *http.Request) {
	a.problem(w, r, &apiError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
		detail: fmt.Sprintf("no admin route %s %s; see GET /admin/config", r.Method, r.URL.Path)})
}

// decode reads a JSON body of at most 1 MiB into v, refusing unknown
// fields.
func (a *admin[T]) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxDocumentBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		a.problem(w, r, &apiError{status: http.StatusBadRequest, kind: "malformed-json", title: "Malformed JSON", detail: "request body: " + err.Error()})
		return false
	}
	return true
}

// problemBase is the prefix of problem types, shared with the gateway's.
const problemBase = "https://millrace.dev/problems/"

// problemDoc is an RFC 9457 problem document, with the problems of a
// refused configuration.
type problemDoc struct {
	Type     string    `json:"type"`
	Title    string    `json:"title"`
	Status   int       `json:"status"`
	Detail   string    `json:"detail"`
	Instance string    `json:"instance"`
	Problems []Problem `json:"problems,omitempty"`
}

func (a *admin[T]) problem(w http.ResponseWriter, r *http.Request, err error) {
	p := problemDoc{Instance: r.URL.Path, Detail: err.Error()}
	var ae *apiError
	var ce *Error
	switch {
	case errors.As(err, &ae):
		p.Type, p.Title, p.Status, p.Problems = problemBase+ae.kind, ae.title, ae.status, ae.problems
	case errors.As(err, &ce):
		p.Type, p.Title, p.Status, p.Problems = problemBase+"config-refused", "Configuration refused", http.StatusUnprocessableEntity, ce.Problems
		p.Detail = "refused; nothing was written:\n" + ce.Error()
	case errors.Is(err, ErrConflict):
		p.Type, p.Title, p.Status = problemBase+"conflict", "The document changed meanwhile", http.StatusConflict
		p.Detail += "; read it again and retry"
	case errors.Is(err, ErrNotWritable), errors.Is(err, errWrongDocument):
		p.Type, p.Title, p.Status = problemBase+"not-writable", "Nothing to write to", http.StatusConflict
	default:
		a.opts.Logger.ErrorContext(r.Context(), "config admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		p.Type, p.Title, p.Status = problemBase+"source-failed", "The configuration source failed", http.StatusBadGateway
	}
	adminapi.WriteProblem(w, p.Status, p)
}

// Client talks to the admin API AdminHandler serves; `millrace config` is
// built on it. It is safe for concurrent use.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the admin API at baseURL (scheme, host and
// port). A nil hc uses a client with a 30 s timeout.
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	if !strings.HasPrefix(baseURL, "http://") && !strings.HasPrefix(baseURL, "https://") || len(strings.TrimRight(baseURL, "/")) <= len("https://") {
		return nil, fmt.Errorf("admin url %q: want http://host:port, e.g. http://127.0.0.1:8080", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: hc}, nil
}

// APIError is a problem the admin API answered with.
type APIError struct {
	Status int
	Type   string
	Detail string
	// Problems are those of a refused configuration.
	Problems []Problem
}

func (e *APIError) Error() string { return e.Detail }

// Get returns the configuration in force, or one setting of it.
func (c *Client) Get(ctx context.Context, key string) (ConfigView, error) {
	var v ConfigView
	path := "/admin/config"
	if key != "" {
		path += "?key=" + url.QueryEscape(key)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &v)
	return v, err
}

// Set changes one setting.
func (c *Client) Set(ctx context.Context, req SetRequest) (ChangeResult, error) {
	var res ChangeResult
	err := c.do(ctx, http.MethodPut, "/admin/config", req, &res)
	return res, err
}

// History lists the versions of a document; "" for the writable one.
func (c *Client) History(ctx context.Context, document string) (HistoryView, error) {
	var v HistoryView
	path := "/admin/config/history"
	if document != "" {
		path += "?document=" + url.QueryEscape(document)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &v)
	return v, err
}

// Rollback goes back to a version.
func (c *Client) Rollback(ctx context.Context, req RollbackRequest) (ChangeResult, error) {
	var res ChangeResult
	err := c.do(ctx, http.MethodPost, "/admin/config/rollback", req, &res)
	return res, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	err := adminapi.Client{HTTP: c.http, Base: c.base, Unreachable: "is millrace running there? set --admin-url or MILLRACE_ADMIN_URL"}.Do(ctx, method, path, body, out)
	var re *adminapi.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	apiErr := &APIError{Status: re.Status, Type: re.Type, Detail: re.Detail}
	if re.Type != "" {
		var p problemDoc
		if json.Unmarshal(re.Body, &p) == nil {
			apiErr.Problems = p.Problems
		}
	}
	return apiErr
}

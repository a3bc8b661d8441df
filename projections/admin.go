package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// AdminHandler serves the projections' admin API, which `millrace replay`
// and `millrace projections` talk to, and the ops console reads:
//
//	GET    /admin/projections                 every projection's Status
//	GET    /admin/projections/{name}          one projection's Status
//	POST   /admin/projections/{name}/rebuild  start a rebuild (202 + Status)
//	DELETE /admin/projections/{name}/rebuild  cancel the rebuild under way
//
// The rebuild body is optional JSON: {"from_time": "<RFC 3339>"} or
// {"from_offsets": [{"topic": "orders.events", "partition": 0, "offset": 42}]}.
// Errors are RFC 9457 problems (application/problem+json): 404 for an
// unknown projection, 409 for a rebuild already under way (or none to
// cancel), 400 for a bad body.
//
// The admin API changes what the platform does: serve it to operators only
// (millrace dev listens on loopback).
func (m *Manager) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/projections", m.adminList)
	mux.HandleFunc("GET /admin/projections/{name}", m.adminGet)
	mux.HandleFunc("POST /admin/projections/{name}/rebuild", m.adminRebuild)
	mux.HandleFunc("DELETE /admin/projections/{name}/rebuild", m.adminCancel)
	return mux
}

// RebuildRequest is the body of POST /admin/projections/{name}/rebuild.
type RebuildRequest struct {
	// FromTime starts every partition at its first event at or after it.
	FromTime *time.Time `json:"from_time,omitempty"`
	// FromOffsets start the partitions they name at the given offsets.
	FromOffsets []Position `json:"from_offsets,omitempty"`
}

// List is the body of GET /admin/projections.
type List struct {
	Projections []Status `json:"projections"`
}

func (m *Manager) adminList(w http.ResponseWriter, r *http.Request) {
	all, err := m.Statuses(r.Context())
	if err != nil {
		m.adminError(w, r, err)
		return
	}
	writeAdminJSON(w, http.StatusOK, List{Projections: all})
}

func (m *Manager) adminGet(w http.ResponseWriter, r *http.Request) {
	s, err := m.Status(r.Context(), r.PathValue("name"))
	if err != nil {
		m.adminError(w, r, err)
		return
	}
	writeAdminJSON(w, http.StatusOK, s)
}

func (m *Manager) adminRebuild(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		m.adminError(w, r, fmt.Errorf("%w: read body: %v", ErrBadFrom, err))
		return
	}
	var req RebuildRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			m.adminError(w, r, fmt.Errorf("%w: the body is not a rebuild request: %v; send {} or {\"from_time\": \"2025-01-31T00:00:00Z\"} or {\"from_offsets\": [{\"topic\": \"orders.events\", \"partition\": 0, \"offset\": 42}]}", ErrBadFrom, err))
			return
		}
	}
	from := From{Offsets: req.FromOffsets}
	if req.FromTime != nil {
		from.Time = *req.FromTime
	}
	s, err := m.Rebuild(r.Context(), r.PathValue("name"), from)
	if err != nil {
		m.adminError(w, r, err)
		return
	}
	w.Header().Set("Location", "/admin/projections/"+s.Name)
	writeAdminJSON(w, http.StatusAccepted, s)
}

func (m *Manager) adminCancel(w http.ResponseWriter, r *http.Request) {
	s, err := m.CancelRebuild(r.Context(), r.PathValue("name"))
	if err != nil {
		m.adminError(w, r, err)
		return
	}
	writeAdminJSON(w, http.StatusOK, s)
}

// Problem is an RFC 9457 problem, as the admin API answers errors.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance,omitempty"`
}

// Problem types of the admin API.
const (
	ProblemUnknownProjection = "https://millrace.dev/problems/unknown-projection"
	ProblemRebuildInProgress = "https://millrace.dev/problems/rebuild-in-progress"
	ProblemNoRebuild         = "https://millrace.dev/problems/no-rebuild"
	ProblemBadRequest        = "https://millrace.dev/problems/bad-request"
	ProblemInternal          = "https://millrace.dev/problems/internal"
)

func (m *Manager) adminError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		unknown    *UnknownProjectionError
		inProgress *RebuildInProgressError
		p          Problem
	)
	switch {
	case errors.As(err, &unknown):
		p = Problem{Type: ProblemUnknownProjection, Title: "Unknown projection", Status: http.StatusNotFound, Detail: unknown.Error()}
	case errors.As(err, &inProgress):
		p = Problem{Type: ProblemRebuildInProgress, Title: "Rebuild already in progress", Status: http.StatusConflict, Detail: inProgress.Error()}
	case errors.Is(err, ErrNoRebuild):
		p = Problem{Type: ProblemNoRebuild, Title: "No rebuild to cancel", Status: http.StatusConflict, Detail: err.Error()}
	case errors.Is(err, ErrBadFrom):
		p = Problem{Type: ProblemBadRequest, Title: "Bad request", Status: http.StatusBadRequest, Detail: err.Error()}
	default:
		m.logger.ErrorContext(r.Context(), "admin request failed", slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Any("error", err))
		p = Problem{Type: ProblemInternal, Title: "Internal server error", Status: http.StatusInternalServerError, Detail: err.Error()}
	}
	p.Instance = r.URL.Path
	body, _ := json.Marshal(p) // a Problem always encodes
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, `{"type":%q,"title":"Internal server error","status":500}`+"\n", ProblemInternal)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

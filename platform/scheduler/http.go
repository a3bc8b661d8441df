package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Run is one run as the run history knows it.
type Run struct {
	RunID       string     `json:"run_id"`
	Job         string     `json:"job"`
	Trigger     string     `json:"trigger"`
	ScheduledAt time.Time  `json:"scheduled_at"`
	FiredAt     *time.Time `json:"fired_at,omitempty"`
	// Lateness is FiredAt − ScheduledAt.
	Lateness string `json:"lateness,omitempty"`
	// Outcome is running, succeeded, rejected, timed_out, failed or skipped.
	Outcome    string     `json:"outcome"`
	Attempts   int        `json:"attempts"`
	CommandIDs []string   `json:"command_ids,omitempty"`
	Code       string     `json:"code,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Duration is FinishedAt − FiredAt.
	Duration string `json:"duration,omitempty"`
	// Missed and LastScheduledAt describe skipped times.
	Missed          int        `json:"missed,omitempty"`
	LastScheduledAt *time.Time `json:"last_scheduled_at,omitempty"`
	Instance        string     `json:"instance,omitempty"`
}

// History reads the run history. Implementations are safe for concurrent
// use.
type History interface {
	// Runs returns the job's latest runs, newest first, at most limit.
	Runs(ctx context.Context, job string, limit int) ([]Run, error)
	// Run returns one run, and false when the history does not know it.
	Run(ctx context.Context, runID string) (Run, bool, error)
}

// AdminOptions tune the admin API.
type AdminOptions struct {
	// Who names the caller of a manual trigger, for the run's record.
	// Nil records no one.
	Who func(r *http.Request) string
	// MaxWait bounds the wait parameter of a trigger. Default 5m.
	MaxWait time.Duration
	// Logger receives a record per failed request. Default: discard.
	Logger *slog.Logger
}

// AdminHandler serves the scheduler's admin API, JSON in and out, errors
// as RFC 9457 problems:
//
//	GET  /admin/jobs                      → {"instance", "leading", "jobs": [JobStatus + "last_run"]}
//	GET  /admin/jobs/{name}               → JobStatus + "last_run"
//	GET  /admin/jobs/{name}/history       ?limit=20 → {"job", "runs": [Run…]} newest first
//	POST /admin/jobs/{name}/trigger       ?wait=30s; Idempotency-Key → 202 TriggerReceipt,
//	                                      or with wait 200 {…receipt, "run": Run} once the run finished
//	                                      (202 when the wait ran out first)
//
// Any instance answers: the status and the history come from the store and
// the history, and a trigger is recorded for whichever instance leads.
// Statuses: 400 for a malformed request, 404 for an unknown job, 500
// otherwise. The API has no authentication of its own.
func AdminHandler(s *Scheduler, h History, opts AdminOptions) http.Handler {
	if opts.MaxWait == 0 {
		opts.MaxWait = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &admin{s: s, h: h, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/jobs", a.list)
	mux.HandleFunc("GET /admin/jobs/{name}", a.get)
	mux.HandleFunc("GET /admin/jobs/{name}/history", a.history)
	mux.HandleFunc("POST /admin/jobs/{name}/trigger", a.trigger)
	mux.HandleFunc("/admin/jobs", a.notFound)
	mux.HandleFunc("/admin/jobs/", a.notFound)
	return mux
}

type admin struct {
	s    *Scheduler
	h    History
	opts AdminOptions
}

// JobView is a job's status with its latest run.
type JobView struct {
	JobStatus
	LastRun *Run `json:"last_run,omitempty"`
}

// JobList is the answer of GET /admin/jobs.
type JobList struct {
	Instance string    `json:"instance"`
	Leading  bool      `json:"leading"`
	Jobs     []JobView `json:"jobs"`
}

// HistoryPage is the answer of GET /admin/jobs/{name}/history.
type HistoryPage struct {
	Job  string `json:"job"`
	Runs []Run  `json:"runs"`
}

// TriggerAnswer is the answer of POST /admin/jobs/{name}/trigger with wait.
type TriggerAnswer struct {
	TriggerReceipt
	Run *Run `json:"run,omitempty"`
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	all, err := a.s.Status(r.Context())
	if err != nil {
		a.problem(w, r, err)
		return
	}
	out := JobList{Instance: a.s.Instance(), Leading: a.s.Leading(), Jobs: []JobView{}}
	for _, st := range all {
		v, err := a.view(r.Context(), st)
		if err != nil {
			a.problem(w, r, err)
			return
		}
		out.Jobs = append(out.Jobs, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) view(ctx context.Context, st JobStatus) (JobView, error) {
	v := JobView{JobStatus: st}
	if a.h == nil {
		return v, nil
	}
	runs, err := a.h.Runs(ctx, st.Name, 1)
	if err != nil {
		return v, fmt.Errorf("read the history of job %s: %w", st.Name, err)
	}
	if len(runs) > 0 {
		v.LastRun = &runs[0]
	}
	return v, nil
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	st, err := a.s.JobStatus(r.Context(), r.PathValue("name"))
	if err != nil {
		a.problem(w, r, err)
		return
	}
	v, err := a.view(r.Context(), st)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *admin) history(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := a.s.Job(name); err != nil {
		a.problem(w, r, err)
		return
	}
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			a.problem(w, r, badRequest("query parameter limit=%q: want a whole number from 1 to 1000", s))
			return
		}
		limit = n
	}
	page := HistoryPage{Job: name, Runs: []Run{}}
	if a.h != nil {
		runs, err := a.h.Runs(r.Context(), name, limit)
		if err != nil {
			a.problem(w, r, fmt.Errorf("read the history of job %s: %w", name, err))
			return
		}
		page.Runs = append(page.Runs, runs...)
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *admin) trigger(w http.ResponseWriter, r *http.Request) {
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > a.opts.MaxWait {
			a.problem(w, r, badRequest("query parameter wait=%q: want a duration from 0s to %s, such as 30s", s, a.opts.MaxWait))
			return
		}
		wait = d
	}
	by := ""
	if a.opts.Who != nil {
		by = a.opts.Who(r)
	}
	rc, err := a.s.Trigger(r.Context(), r.PathValue("name"), by, r.Header.Get("Idempotency-Key"))
	if err != nil {
		a.problem(w, r, err)
		return
	}
	if wait == 0 || a.h == nil {
		writeJSON(w, http.StatusAccepted, rc)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var latest *Run
	for {
		run, ok, err := a.h.Run(ctx, rc.RunID)
		if err != nil && ctx.Err() == nil {
			a.problem(w, r, fmt.Errorf("read run %s: %w", rc.RunID, err))
			return
		}
		if ok {
			latest = &run
			if run.Outcome != RunRunning {
				writeJSON(w, http.StatusOK, TriggerAnswer{TriggerReceipt: rc, Run: latest})
				return
			}
		}
		select {
		case <-ctx.Done():
			writeJSON(w, http.StatusAccepted, TriggerAnswer{TriggerReceipt: rc, Run: latest})
			return
		case <-tick.C:
		}
	}
}

func (a *admin) notFound(w http.ResponseWriter, r *http.Request) {
	a.problem(w, r, &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("%s %s: no such route; see GET /admin/jobs", r.Method, r.URL.Path)})
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// problem writes err as an RFC 9457 problem.
func (a *admin) problem(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		status = he.status
	case errors.Is(err, ErrUnknownJob):
		status = http.StatusNotFound
	}
	if status >= 500 {
		a.opts.Logger.ErrorContext(r.Context(), "scheduler admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":   "https://millrace.dev/problems/" + problemType(status),
		"title":  http.StatusText(status),
		"status": status,
		"detail": err.Error(),
	})
}

func problemType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad-request"
	case http.StatusNotFound:
		return "job-not-found"
	default:
		return "internal"
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

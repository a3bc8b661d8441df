package scheduler_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/scheduler"
)

// succeedAll is a command log in which every command succeeded.
type succeedAll struct{}

func (succeedAll) Outcome(context.Context, string) (scheduler.Outcome, error) {
	return scheduler.Outcome{Status: scheduler.OutcomeSucceeded}, nil
}

// sent remembers the commands published.
type sent struct {
	mu  sync.Mutex
	ids []string
}

func (s *sent) Send(_ context.Context, c scheduler.Command) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, c.ID)
	return nil
}

// memHistory is a run history folded in memory from the journal, as
// projections/jobs folds it from the topic.
type memHistory struct {
	mu   sync.Mutex
	runs map[string]scheduler.Run
	jobs map[string][]string
}

func (h *memHistory) Record(_ context.Context, r scheduler.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	run, ok := h.runs[r.RunID]
	if !ok {
		h.jobs[r.Job] = append([]string{r.RunID}, h.jobs[r.Job]...)
	}
	run.RunID, run.Job, run.Trigger, run.ScheduledAt, run.Outcome, run.Attempts = r.RunID, r.Job, r.Trigger, r.ScheduledAt, r.Outcome, r.Attempt
	h.runs[r.RunID] = run
	return nil
}

func (h *memHistory) Runs(_ context.Context, job string, limit int) ([]scheduler.Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []scheduler.Run
	for _, id := range h.jobs[job] {
		if len(out) < limit {
			out = append(out, h.runs[id])
		}
	}
	return out, nil
}

func (h *memHistory) Run(_ context.Context, id string) (scheduler.Run, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.runs[id]
	return r, ok, nil
}

func TestAdminAPI(t *testing.T) {
	hist := &memHistory{runs: map[string]scheduler.Run{}, jobs: map[string][]string{}}
	report := job(func(j *scheduler.Job) {
		j.Cron, j.Enabled, j.Command = "0 5 0 * * *", false, "orders.close-sales-day.v1"
		j.Payload = `{"date": "{{ .FireTime | days -1 | date }}"}`
	})
	commands := &sent{}
	s, err := scheduler.New(scheduler.Config{
		Leader: leader.NewLocal(nil).Lock("scheduler"), Store: newSQLiteStore(t), Sender: commands,
		Outcomes: succeedAll{}, Journal: hist, Instance: "test-1", PollInterval: 10 * time.Millisecond,
	}, map[string]scheduler.Job{"daily-sales-report": report})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	srv := httptest.NewServer(scheduler.AdminHandler(s, hist, scheduler.AdminOptions{
		Who: func(*http.Request) string { return "ops" },
	}))
	t.Cleanup(srv.Close)

	call := func(method, path string, header map[string]string, out any) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if out != nil {
			if err := json.NewDecoder(res.Body).Decode(out); err != nil {
				t.Fatalf("%s %s: decode: %v", method, path, err)
			}
		}
		return res.StatusCode
	}

	var ans scheduler.TriggerAnswer
	if st := call("POST", "/admin/jobs/daily-sales-report/trigger?wait=10s", map[string]string{"Idempotency-Key": "k-1"}, &ans); st != http.StatusOK {
		t.Fatalf("trigger with wait: status %d, want 200 once the run finished", st)
	}
	if ans.Run == nil || ans.Run.Outcome != scheduler.RunSucceeded || ans.Run.Trigger != scheduler.TriggerManual || ans.Run.RunID != ans.RunID {
		t.Fatalf("trigger answer %+v, want the manual run, succeeded", ans)
	}
	var again scheduler.TriggerReceipt
	if st := call("POST", "/admin/jobs/daily-sales-report/trigger", map[string]string{"Idempotency-Key": "k-1"}, &again); st != http.StatusAccepted || again.RunID != ans.RunID {
		t.Errorf("the same key again: status %d, run %s; want 202 and the same run %s", st, again.RunID, ans.RunID)
	}

	var list scheduler.JobList
	if st := call("GET", "/admin/jobs", nil, &list); st != http.StatusOK {
		t.Fatalf("list: status %d", st)
	}
	if !list.Leading || list.Instance != "test-1" || len(list.Jobs) != 1 {
		t.Fatalf("list %+v, want this instance leading one job", list)
	}
	if j := list.Jobs[0]; j.Enabled || j.Next != nil || j.Schedule != "cron 0 5 0 * * *" || j.LastRun == nil || j.LastRun.RunID != ans.RunID {
		t.Errorf("job %+v, want disabled, no next firing, the manual run as last run", j)
	}

	var page scheduler.HistoryPage
	if st := call("GET", "/admin/jobs/daily-sales-report/history?limit=5", nil, &page); st != http.StatusOK || len(page.Runs) != 1 {
		t.Errorf("history: status %d, %d runs; want 200 and the one run", st, len(page.Runs))
	}

	cases := []struct {
		name, method, path string
		status             int
		detail             string
	}{
		{"unknown job", "GET", "/admin/jobs/nope", http.StatusNotFound, `job "nope": no such job`},
		{"history of an unknown job", "GET", "/admin/jobs/nope/history", http.StatusNotFound, "no such job"},
		{"trigger of an unknown job", "POST", "/admin/jobs/nope/trigger", http.StatusNotFound, "no such job"},
		{"bad limit", "GET", "/admin/jobs/daily-sales-report/history?limit=0", http.StatusBadRequest, "limit"},
		{"bad wait", "POST", "/admin/jobs/daily-sales-report/trigger?wait=forever", http.StatusBadRequest, "wait"},
		{"unknown route", "DELETE", "/admin/jobs/daily-sales-report", http.StatusNotFound, "no such route"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p struct {
				Detail string `json:"detail"`
			}
			if st := call(c.method, c.path, nil, &p); st != c.status || !strings.Contains(p.Detail, c.detail) {
				t.Errorf("%s %s: status %d, detail %q; want %d saying %q", c.method, c.path, st, p.Detail, c.status, c.detail)
			}
		})
	}
	commands.mu.Lock()
	defer commands.mu.Unlock()
	if len(commands.ids) != 1 {
		t.Errorf("%d commands published, want 1: the same idempotency key is the same run", len(commands.ids))
	}
}

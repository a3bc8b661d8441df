package projections_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
)

func adminDo(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAdminAPI(t *testing.T) {
	b := startBroker(t, 1)
	db := projectiontest.OpenDB(t)
	b.produce(t, recordsOf(t, ordersPlaced("o", 50))...)
	src, reached, release := hold(batchSource(t, b), "ledger", 2, 10)
	defer release()
	m := newManagerWith(t, b, src, db, newLedger("ledger"))
	run(t, m)
	caughtUp(t, m, "ledger", 1)
	h := m.AdminHandler()

	tests := []struct {
		name, method, path, body string
		status                   int
		problem                  string // problem type, or "" for JSON
		check                    func(t *testing.T, body []byte)
	}{
		{name: "list", method: "GET", path: "/admin/projections", status: 200, check: func(t *testing.T, body []byte) {
			var l projections.List
			if err := json.Unmarshal(body, &l); err != nil || len(l.Projections) != 1 || l.Projections[0].Name != "ledger" {
				t.Errorf("list = %s (%v)", body, err)
			}
		}},
		{name: "one", method: "GET", path: "/admin/projections/ledger", status: 200, check: func(t *testing.T, body []byte) {
			var s projections.Status
			if err := json.Unmarshal(body, &s); err != nil || s.Version != 1 || s.State != projections.StateLive || s.Lag != 0 {
				t.Errorf("status = %s (%v)", body, err)
			}
		}},
		{name: "unknown", method: "GET", path: "/admin/projections/nope", status: 404, problem: projections.ProblemUnknownProjection},
		{name: "bad body", method: "POST", path: "/admin/projections/ledger/rebuild", body: `{"from": "yesterday"}`, status: 400,
			problem: projections.ProblemBadRequest},
		{name: "bad offsets", method: "POST", path: "/admin/projections/ledger/rebuild", body: `{"from_offsets": [{"topic": "users.events", "partition": 0, "offset": 1}]}`,
			status: 400, problem: projections.ProblemBadRequest},
		{name: "cancel without a rebuild", method: "DELETE", path: "/admin/projections/ledger/rebuild", status: 409, problem: projections.ProblemNoRebuild},
		{name: "rebuild", method: "POST", path: "/admin/projections/ledger/rebuild", body: `{}`, status: 202, check: func(t *testing.T, body []byte) {
			var s projections.Status
			if err := json.Unmarshal(body, &s); err != nil || s.Rebuild == nil || s.Rebuild.Version != 2 || s.State != projections.StateRebuilding {
				t.Errorf("status = %s (%v)", body, err)
			}
			await(t, reached, 30*time.Second, "version 2 held")
		}},
		{name: "a second rebuild", method: "POST", path: "/admin/projections/ledger/rebuild", status: 409, problem: projections.ProblemRebuildInProgress,
			check: func(t *testing.T, body []byte) {
				if !strings.Contains(string(body), "version 2 has been building") {
					t.Errorf("refusal does not name the rebuild under way: %s", body)
				}
			}},
		{name: "cancel", method: "DELETE", path: "/admin/projections/ledger/rebuild", status: 200, check: func(t *testing.T, body []byte) {
			var s projections.Status
			if err := json.Unmarshal(body, &s); err != nil || s.Version != 1 || s.Rebuild.State != projections.RebuildCancelled {
				t.Errorf("status = %s (%v)", body, err)
			}
		}},
		{name: "rebuild from a time", method: "POST", path: "/admin/projections/ledger/rebuild",
			body: fmt.Sprintf(`{"from_time": %q}`, time.Now().Add(time.Hour).Format(time.RFC3339)), status: 202,
			check: func(t *testing.T, body []byte) {
				var s projections.Status
				if err := json.Unmarshal(body, &s); err != nil || s.Rebuild.Version != 3 || s.Rebuild.Total != 0 ||
					!strings.HasPrefix(s.Rebuild.From, "time ") {
					t.Errorf("status = %s (%v)", body, err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := adminDo(h, tt.method, tt.path, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, rec.Code, rec.Body, tt.status)
			}
			if tt.problem != "" {
				var p projections.Problem
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Type != tt.problem || p.Status != tt.status ||
					p.Detail == "" || rec.Header().Get("Content-Type") != "application/problem+json" {
					t.Errorf("problem = %s %s, want type %s", rec.Header().Get("Content-Type"), rec.Body, tt.problem)
				}
			}
			if tt.check != nil {
				tt.check(t, rec.Body.Bytes())
			}
		})
	}
	release()
}

package poison_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/platform/poison"
)

func adminServer(t *testing.T, f *fixture) (*httptest.Server, *poison.Client) {
	t.Helper()
	srv := httptest.NewServer(poison.AdminHandler(f.store, nil))
	t.Cleanup(srv.Close)
	c, err := poison.NewClient(srv.URL, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func TestAdminAPI(t *testing.T) {
	f := newFixture(t)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `{"n":1}`, 1), true)
	arrive(t, f.store, "orders", consumed("orders", "o-1", "not json", 2), false)
	arrive(t, f.store, "orders", consumed("orders", "o-2", `{"n":3}`, 3), true)
	srv, c := adminServer(t, f)
	ctx := context.Background()

	t.Run("list filters", func(t *testing.T) {
		got, err := c.List(ctx, poison.Filter{Key: "o-1", Status: poison.StatusParked})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != 2 || got[0].BlockedBy != 1 {
			t.Errorf("list = %+v, want entry 2 parked behind 1", got)
		}
	})
	t.Run("show has payload, metadata and history", func(t *testing.T) {
		e, err := c.Get(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Payload) != `{"n":1}` || e.Metadata["ce_type"] != "orders.place-order.v1" || len(e.History) != 1 {
			t.Errorf("entry = payload %s, metadata %v, history %v", e.Payload, e.Metadata, e.History)
		}
		e, err = c.Get(ctx, 2)
		if err != nil || string(e.Payload) != "not json" {
			t.Errorf("a payload that is not JSON comes back as %q, %v", e.Payload, err)
		}
	})
	t.Run("requeue one behind the head is a conflict", func(t *testing.T) {
		_, err := c.Requeue(ctx, 2)
		if !errors.Is(err, poison.ErrConflict) || !strings.Contains(err.Error(), "requeue entry 1 first") {
			t.Errorf("requeue 2 = %v, want a conflict that names entry 1", err)
		}
	})
	t.Run("requeue a sequence", func(t *testing.T) {
		res, err := c.RequeueSequence(ctx, "orders", "o-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Requeued) != 1 || res.Requeued[0] != 1 || res.Waiting != 1 {
			t.Errorf("result = %+v, want head 1 requeued, 1 waiting", res)
		}
		if m := f.next(t, "orders"); m.Metadata.Get(poison.HeaderRequeueEntry) != "1" {
			t.Errorf("published %v, want entry 1 requeued", m.Metadata)
		}
	})
	t.Run("drop records the reason", func(t *testing.T) {
		e, err := c.Drop(ctx, 3, "duplicate of order o-9")
		if err != nil {
			t.Fatal(err)
		}
		if e.Status != poison.StatusDropped || e.DropReason != "duplicate of order o-9" {
			t.Errorf("dropped = %s %q", e.Status, e.DropReason)
		}
	})
	t.Run("requeue all", func(t *testing.T) {
		res, err := c.RequeueAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Entry 1 is requeued already (its head may be requeued again);
		// entry 3 is dropped.
		if len(res.Requeued) != 1 || res.Requeued[0] != 1 {
			t.Errorf("requeue all = %+v, want entry 1 again", res)
		}
	})

	problems := []struct {
		name, method, path, body string
		status                   int
		typ, detail              string
	}{
		{"unknown entry", "GET", "/admin/poison/42", "", 404, "not-found", "poison entry 42 not found"},
		{"bad id", "GET", "/admin/poison/x", "", 400, "invalid-request", `entry id "x": want a positive whole number`},
		{"drop without reason", "POST", "/admin/poison/2/drop", `{}`, 400, "invalid-request", "needs a reason"},
		{"malformed body", "POST", "/admin/poison/2/drop", `{"reason": 1}`, 400, "malformed-json", "request body"},
		{"unknown field", "POST", "/admin/poison/requeue", `{"handler": "orders", "kee": "o-1"}`, 400, "malformed-json", `unknown field "kee"`},
		{"requeue without a sequence", "POST", "/admin/poison/requeue", `{"handler": "orders"}`, 400, "invalid-request", "name the sequence"},
		{"no open sequence", "POST", "/admin/poison/requeue", `{"handler": "orders", "key": "o-404"}`, 404, "not-found", "no open entries for key o-404"},
		{"unknown route", "DELETE", "/admin/poison/1", "", 404, "not-found", "no admin route DELETE /admin/poison/1"},
		{"bad limit", "GET", "/admin/poison?limit=-1", "", 400, "invalid-request", "limit"},
	}
	for _, tc := range problems {
		t.Run("problem: "+tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			var p struct {
				Type, Detail string
				Status       int
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("body %s: %v", raw, err)
			}
			if res.StatusCode != tc.status || p.Status != tc.status || res.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("status %d (%d in body), %s; want %d, application/problem+json", res.StatusCode, p.Status, res.Header.Get("Content-Type"), tc.status)
			}
			if p.Type != "https://millrace.dev/problems/"+tc.typ || !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("problem %s: %q; want type %s, detail containing %q", p.Type, p.Detail, tc.typ, tc.detail)
			}
		})
	}
}

package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
)

func TestGetOrder(t *testing.T) {
	e := newEnv(t)
	assertProblem(t, e.do(http.MethodGet, "/v1/orders/"+existingOrder, "", ""), http.StatusNotFound, gateway.ProblemNotFound)

	placedAt := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: placedAt})
	e.mustFeed(t, events.OrderPlaced{OrderID: existingOrder, UserID: someUser, Currency: "EUR", TotalCents: 2500, PlacedAt: placedAt,
		Lines: []events.PricedLine{{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500}}})

	var o orders.Order
	decodeJSON(t, e.do(http.MethodGet, "/v1/orders/"+existingOrder, "", ""), http.StatusOK, &o)
	if o.OrderID != existingOrder || o.UserID != someUser || o.Status != orders.StatusPlaced || o.TotalCents != 2500 ||
		len(o.Lines) != 1 || !o.PlacedAt.Equal(placedAt) {
		t.Errorf("order = %+v", o)
	}
}

func TestGetUserOrders(t *testing.T) {
	e := newEnv(t)
	p := assertProblem(t, e.do(http.MethodGet, "/v1/users/"+someUser+"/orders", "", ""), http.StatusNotFound, gateway.ProblemNotFound)
	if !strings.Contains(p.Detail, someUser) {
		t.Errorf("detail does not name the user: %s", p.Detail)
	}

	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: time.Now()})
	var body struct {
		UserID string           `json:"user_id"`
		Orders []orders.Summary `json:"orders"`
	}
	rec := e.do(http.MethodGet, "/v1/users/"+someUser+"/orders", "", "")
	decodeJSON(t, rec, http.StatusOK, &body)
	if body.UserID != someUser || body.Orders == nil || len(body.Orders) != 0 {
		t.Errorf("body = %s, want the user with an empty list of orders", rec.Body)
	}

	e.mustFeed(t, events.OrderPlaced{OrderID: existingOrder, UserID: someUser, Currency: "EUR", TotalCents: 700, PlacedAt: time.Now(),
		Lines: []events.PricedLine{{SKU: "PEN", Quantity: 1, UnitPriceCents: 700, LineTotalCents: 700}}})
	decodeJSON(t, e.do(http.MethodGet, "/v1/users/"+someUser+"/orders", "", ""), http.StatusOK, &body)
	if len(body.Orders) != 1 || body.Orders[0].OrderID != existingOrder || body.Orders[0].TotalCents != 700 {
		t.Errorf("orders = %+v", body.Orders)
	}
}

func TestGetSalesReport(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, query string }{
		{"missing", ""},
		{"empty", "?date="},
		{"twice", "?date=2025-03-14&date=2025-03-15"},
		{"not a date", "?date=yesterday"},
		{"no such month", "?date=2025-13-01"},
		{"no leading zeros", "?date=2025-3-4"},
		{"with a time", "?date=2025-03-14T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.do(http.MethodGet, "/v1/reports/sales"+tc.query, "", "")
			p := assertProblem(t, rec, http.StatusBadRequest, gateway.ProblemBadParameter)
			if p.Parameter != "date" || !strings.Contains(p.Detail, "date") || !strings.Contains(p.Detail, "YYYY-MM-DD") {
				t.Errorf("problem = %+v, want it to name the date parameter and its format", p)
			}
		})
	}

	t.Run("a day with sales", func(t *testing.T) {
		paidAt := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
		e.mustFeed(t, events.OrderPaid{OrderID: existingOrder, UserID: someUser, AmountCents: 2500, Currency: "EUR",
			PaymentRef: "psp-1", PaidAt: paidAt})
		var day sales.Day
		decodeJSON(t, e.do(http.MethodGet, "/v1/reports/sales?date=2025-03-14", "", ""), http.StatusOK, &day)
		if day.Date != "2025-03-14" || len(day.Currencies) != 1 || day.Currencies[0].Currency != "EUR" ||
			day.Currencies[0].GrossCents != 2500 || day.Currencies[0].OrdersPaid != 1 {
			t.Errorf("day = %+v", day)
		}
	})
	t.Run("a day without sales", func(t *testing.T) {
		var day sales.Day
		decodeJSON(t, e.do(http.MethodGet, "/v1/reports/sales?date=2024-02-29", "", ""), http.StatusOK, &day)
		if day.Date != "2024-02-29" || len(day.Currencies) != 0 {
			t.Errorf("day = %+v", day)
		}
	})
}

func TestGetCommandUnknown(t *testing.T) {
	e := newEnv(t)
	p := assertProblem(t, e.do(http.MethodGet, "/v1/commands/"+existingOrder, "", ""), http.StatusNotFound, gateway.ProblemNotFound)
	if p.Instance != "/v1/commands/"+existingOrder {
		t.Errorf("instance = %q", p.Instance)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	rec := e.do(http.MethodGet, "/healthz", "", "")
	var body map[string]string
	decodeJSON(t, rec, http.StatusOK, &body)
	if body["status"] != "ok" || rec.Body.String() != "{\"status\":\"ok\"}\n" {
		t.Errorf("body = %q", rec.Body)
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
		problemType  string
		allow        string
	}{
		{http.MethodGet, "/", http.StatusNotFound, gateway.ProblemNotFound, ""},
		{http.MethodGet, "/v1/nothing", http.StatusNotFound, gateway.ProblemNotFound, ""},
		{http.MethodPost, "/v1/orders/" + existingOrder + "/refund", http.StatusNotFound, gateway.ProblemNotFound, ""},
		{http.MethodDelete, "/v1/orders/" + existingOrder, http.StatusMethodNotAllowed, gateway.ProblemMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/v1/users", http.StatusMethodNotAllowed, gateway.ProblemMethodNotAllowed, "POST"},
		{http.MethodGet, "/v1/orders", http.StatusMethodNotAllowed, gateway.ProblemMethodNotAllowed, "POST"},
		{http.MethodPut, "/v1/orders/" + existingOrder + "/pay", http.StatusMethodNotAllowed, gateway.ProblemMethodNotAllowed, "POST"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, gateway.ProblemMethodNotAllowed, "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := e.do(tc.method, tc.path, "application/json", "{}")
			p := assertProblem(t, rec, tc.status, tc.problemType)
			if got := rec.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if p.Instance != tc.path {
				t.Errorf("instance = %q, want %q", p.Instance, tc.path)
			}
		})
	}
	e.assertNothingPublished(t)
}

func TestInternalErrorIsLoggedAndHidden(t *testing.T) {
	e := newEnv(t)
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	rec := e.do(http.MethodGet, "/v1/orders/"+existingOrder, "", "")
	assertProblem(t, rec, http.StatusInternalServerError, gateway.ProblemInternal)
	for _, internal := range []string{"sql", "database", "closed", "read order"} {
		if strings.Contains(strings.ToLower(rec.Body.String()), internal) {
			t.Errorf("problem reveals internals (%q): %s", internal, rec.Body)
		}
	}

	records := e.logRecords(t)
	if len(records) != 1 {
		t.Fatalf("logged %d records, want 1: %+v", len(records), records)
	}
	r := records[0]
	if r["level"] != "ERROR" || r["method"] != "GET" || r["path"] != "/v1/orders/"+existingOrder ||
		r["status"] != float64(500) || !strings.Contains(r["error"].(string), "closed") {
		t.Errorf("log record = %+v", r)
	}

	// Bad input is never logged as an error.
	e.post("/v1/users", `{`)
	if n := len(e.logRecords(t)); n != 1 {
		t.Errorf("bad input was logged: %d records", n)
	}
}

func TestNew(t *testing.T) {
	_, err := gateway.New(gateway.Config{MaxBodyBytes: -1, MaxWait: -time.Second, DefaultCurrency: "euro"}, gateway.Deps{})
	if err == nil {
		t.Fatal("New accepted a bad config and no dependencies")
	}
	for _, want := range []string{"max body bytes", "max wait", "default currency", "publisher", "validator",
		"command log", "order queries", "sales queries", "notifications"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}

	e := newEnv(t)
	if _, err := gateway.New(gateway.Config{}, e.deps()); err != nil {
		t.Errorf("New with the zero Config: %v", err)
	}
}

func TestGetNotifications(t *testing.T) {
	e := newEnv(t)
	var body struct {
		UserID        string                       `json:"user_id"`
		Notifications []notifications.Notification `json:"notifications"`
	}
	rec := e.do(http.MethodGet, "/v1/users/"+someUser+"/notifications", "", "")
	decodeJSON(t, rec, http.StatusOK, &body)
	if body.UserID != someUser || body.Notifications == nil || len(body.Notifications) != 0 {
		t.Errorf("body = %s, want an empty list", rec.Body)
	}

	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: time.Now()})
	e.mustFeed(t, events.OrderShipped{OrderID: existingOrder, UserID: someUser, Carrier: "DHL", ShippedAt: time.Now()})
	decodeJSON(t, e.do(http.MethodGet, "/v1/users/"+someUser+"/notifications", "", ""), http.StatusOK, &body)
	var kinds []string
	for _, n := range body.Notifications {
		if n.UserID != someUser {
			t.Errorf("notification of another user: %+v", n)
		}
		kinds = append(kinds, n.Kind)
	}
	if strings.Join(kinds, ",") != notifications.KindOrderShipped+","+notifications.KindWelcome {
		t.Errorf("kinds = %v, want the shipping then the welcome, newest first", kinds)
	}
}

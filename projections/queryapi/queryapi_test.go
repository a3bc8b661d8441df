package queryapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/queryapi"
	"github.com/millrace/millrace/projections/queryapi/queryapitest"
)

const (
	user    = "7f1c2c7e-1f40-4a1b-9d1e-0a1b2c3d4e5f"
	order   = "0b8e4d8a-5c55-4c36-9a2e-1d2b3c4d5e6f"
	command = "5d2a7c1e-8b9f-4e3d-a1c2-b3d4e5f60718"
)

var day = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func fixture(t *testing.T) (*queryapitest.ReadModels, *queryapitest.Edge) {
	m := queryapitest.NewReadModels(t)
	m.Feed(t, events.UserRegistered{UserID: user, Email: "ada@example.com", FullName: "Ada", RegisteredAt: day})
	m.Feed(t, events.OrderPlaced{OrderID: order, UserID: user, Currency: "EUR", TotalCents: 2500, PlacedAt: day,
		Lines: []events.PricedLine{{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500}}})
	m.Feed(t, events.OrderPaid{OrderID: order, UserID: user, AmountCents: 2500, Currency: "EUR", PaymentRef: "p-1", PaidAt: day})
	if _, _, err := m.Commands.Accept(context.Background(), commands.Accepted{
		CommandID: command, Type: "orders.ship-order.v1", AggregateID: order, RequestHash: "h1", AcceptedAt: day,
	}); err != nil {
		t.Fatal(err)
	}
	return m, queryapitest.StartEdge(t, m)
}

func TestRoutes(t *testing.T) {
	_, edge := fixture(t)
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string // of an error answer
		contains                 []string
	}{
		{"order", "GET", queryapi.OrderPath(order), "", 200, "", []string{`"status":"paid"`, `"total_cents":2500`}},
		{"unknown order", "GET", queryapi.OrderPath("nope"), "", 404, queryapi.CodeOrderNotFound, nil},
		{"user's orders", "GET", queryapi.UserOrdersPath(user), "", 200, "", []string{`"user_id":"` + user, `"order_id":"` + order}},
		{"unknown user's orders", "GET", queryapi.UserOrdersPath("nobody"), "", 404, queryapi.CodeUserNotFound, nil},
		{"sales", "GET", queryapi.SalesPath("2025-03-14"), "", 200, "", []string{`"orders_paid":1`, `"gross_cents":2500`}},
		{"sales of a day without any", "GET", queryapi.SalesPath("2025-03-15"), "", 200, "", []string{`"currencies":[]`}},
		{"sales on a malformed date", "GET", queryapi.SalesPath("14.03.2025"), "", 400, queryapi.CodeBadDate, nil},
		{"sales without a date", "GET", queryapi.Prefix + "reports/sales", "", 400, queryapi.CodeBadRequest, nil},
		{"notifications", "GET", queryapi.NotificationsPath(user), "", 200, "", []string{`"kind":"welcome"`, `"kind":"order_paid"`}},
		{"notifications of a stranger", "GET", queryapi.NotificationsPath("nobody"), "", 200, "", []string{`"notifications":[]`}},
		{"command, with its request digest", "GET", queryapi.CommandPath(command, 0), "", 200, "", []string{`"status":"pending"`, `"request_hash":"h1"`}},
		{"unknown command", "GET", queryapi.CommandPath("nope", 0), "", 404, queryapi.CodeCommandNotFound, nil},
		{"unknown command, waited for", "GET", queryapi.CommandPath("nope", 50*time.Millisecond), "", 404, queryapi.CodeCommandNotFound, nil},
		{"pending command, waited for: still pending", "GET", queryapi.CommandPath(command, 50*time.Millisecond), "", 200, "", []string{`"status":"pending"`}},
		{"malformed wait", "GET", queryapi.Prefix + "commands/" + command + "?wait=soon", "", 400, queryapi.CodeBadRequest, nil},
		{"accept a new command", "PUT", queryapi.CommandPath("c-2", 0),
			`{"type":"orders.pay-order.v1","aggregate_id":"` + order + `","request_hash":"h2","accepted_at":"2025-03-14T10:00:00Z"}`,
			201, "", []string{`"command_id":"c-2"`, `"request_hash":"h2"`, `"status":"pending"`}},
		{"accept a known command: what is known", "PUT", queryapi.CommandPath(command, 0),
			`{"type":"orders.ship-order.v1","aggregate_id":"` + order + `","request_hash":"h9","accepted_at":"2025-03-14T10:00:00Z"}`,
			200, "", []string{`"request_hash":"h1"`}},
		{"accept with an unknown field", "PUT", queryapi.CommandPath("c-3", 0), `{"typo":1}`, 400, queryapi.CodeBadRequest, nil},
		{"projection reached the position", "GET", queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Partition: 0, Offset: 1}}, 0), "", 200, "", []string{`"projection":"orders"`, `"reached":true`}},
		{"projection not at the position yet", "GET", queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Offset: 1}, {Topic: "orders.events", Offset: 7}}, 0), "", 200, "", []string{`"reached":false`}},
		{"not at the position after a wait", "GET", queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Offset: 7}}, 30*time.Millisecond), "", 200, "", []string{`"reached":false`}},
		{"a partition never consumed", "GET", queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Partition: 2, Offset: 0}}, 0), "", 200, "", []string{`"reached":false`}},
		{"a topic the projection does not consume is no obstacle", "GET", queryapi.ReachedPath("sales", []projections.Position{{Topic: "users.events", Offset: 99}, {Topic: "orders.events", Offset: 1}}, 0), "", 200, "", []string{`"reached":true`}},
		{"unknown projection", "GET", queryapi.ReachedPath("invoices", []projections.Position{{Topic: "orders.events", Offset: 1}}, 0), "", 404, queryapi.CodeProjectionNotFound, nil},
		{"progress without a position", "GET", queryapi.Prefix + "projections/orders/reached", "", 400, queryapi.CodeBadRequest, nil},
		{"progress with a malformed position", "GET", queryapi.Prefix + "projections/orders/reached?position=orders.events:zero:1", "", 400, queryapi.CodeBadRequest, nil},
		{"progress with a negative offset", "GET", queryapi.Prefix + "projections/orders/reached?position=orders.events:0:-1", "", 400, queryapi.CodeBadRequest, nil},
		{"progress with a malformed wait", "GET", queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Offset: 1}}, 0) + "&wait=soon", "", 400, queryapi.CodeBadRequest, nil},
		{"no such route", "GET", queryapi.Prefix + "invoices/1", "", 404, queryapi.CodeNoRoute, nil},
		{"a method the edge does not serve", "DELETE", queryapi.OrderPath(order), "", 404, queryapi.CodeNoRoute, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, edge.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s = %d %s, want %d", c.method, c.path, resp.StatusCode, b, c.status)
			}
			if c.code != "" {
				var e queryapi.Error
				if err := json.Unmarshal(b, &e); err != nil || e.Code != c.code || e.Message == "" {
					t.Fatalf("error body %s, want code %s and a message", b, c.code)
				}
			}
			for _, s := range c.contains {
				if !strings.Contains(string(b), s) {
					t.Errorf("body %s lacks %s", b, s)
				}
			}
		})
	}
}

// getLater sends GET url in the background and decodes its answer into v;
// the channel gives the error once it is done.
func getLater(url string, v any) <-chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		done <- json.NewDecoder(resp.Body).Decode(v)
	}()
	return done
}

// TestWaitAnswersOnCompletion: a waiting command query answers as soon as
// the command's event arrives, with the outcome.
func TestWaitAnswersOnCompletion(t *testing.T) {
	m, edge := fixture(t)
	var cmd queryapi.Command
	done := getLater(edge.URL+queryapi.CommandPath(command, 20*time.Second), &cmd)
	m.Feed(t, events.OrderShipped{OrderID: order, UserID: user, Carrier: "DHL", ShippedAt: day}, projectiontest.CausedBy(command))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cmd.Status != commands.StatusSucceeded || len(cmd.EventTypes) != 1 || cmd.RequestHash != "h1" {
		t.Fatalf("waited outcome = %+v, want succeeded with one event and its digest", cmd)
	}
}

// TestReachedWaitsForTheEvent: a waiting progress query answers reached as
// soon as the projection handled the position asked for.
func TestReachedWaitsForTheEvent(t *testing.T) {
	m, edge := fixture(t)
	var r queryapi.Reached
	// orders.events offsets 0 and 1 were fed by the fixture; 2 is next.
	done := getLater(edge.URL+queryapi.ReachedPath("orders", []projections.Position{{Topic: "orders.events", Offset: 2}}, 20*time.Second), &r)
	m.Feed(t, events.OrderShipped{OrderID: order, UserID: user, Carrier: "DHL", ShippedAt: day})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !r.Reached || r.Projection != "orders" {
		t.Fatalf("waited progress = %+v, want orders reached", r)
	}
}

func TestNewRequiresEveryPart(t *testing.T) {
	_, err := queryapi.New(queryapi.Config{}, queryapi.Deps{})
	if err == nil {
		t.Fatal("New accepted no read models")
	}
	for _, w := range []string{"order reader", "sales reader", "notification reader", "command log", "projection progress"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name the missing %s", err, w)
		}
	}
}

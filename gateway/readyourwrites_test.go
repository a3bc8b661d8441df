package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
)

// runnerProgress answers Reached from the positions the env's real runners
// stored, as projections.Manager does from the same table.
type runnerProgress struct{ e *env }

func (p runnerProgress) Reached(ctx context.Context, projection string, at []projections.Position) (bool, error) {
	r := p.e.runners[projection]
	have, err := r.Positions(ctx)
	if err != nil {
		return false, err
	}
	for _, want := range at {
		if !containsTopic(r.Topics(), want.Topic) {
			continue
		}
		reached := false
		for _, h := range have {
			if h.Topic == want.Topic && h.Partition == want.Partition && h.Offset >= want.Offset {
				reached = true
			}
		}
		if !reached {
			return false, nil
		}
	}
	return true, nil
}

func containsTopic(topics []string, t string) bool {
	for _, x := range topics {
		if x == t {
			return true
		}
	}
	return false
}

// readAfterGateway is the env's gateway with read-your-writes wired.
func readAfterGateway(t *testing.T, e *env, progress gateway.Progress) http.Handler {
	t.Helper()
	deps := e.deps()
	deps.Progress = progress
	g, err := gateway.New(gateway.Config{MaxWait: 5 * time.Second}, deps)
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	return g.Handler()
}

func get(h http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestReadYourWrites(t *testing.T) {
	e := newEnv(t)
	h := readAfterGateway(t, e, runnerProgress{e})
	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: time.Now()})

	// The client places an order and gets 202 with the command id.
	var a acceptedBody
	decodeJSON(t, e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":2,"unit_price_cents":5}]}`),
		http.StatusAccepted, &a)
	orderID := strings.TrimPrefix(a.Links.Resource, "/v1/orders/")
	placed := events.OrderPlacedV2{OrderID: orderID, UserID: someUser, Currency: "EUR", TotalCents: 10, ItemCount: 2, PlacedAt: time.Now(),
		Lines: []events.PricedLine{{SKU: "A", Quantity: 2, UnitPriceCents: 5, LineTotalCents: 10}}}
	msg := projectiontest.Message(t, placed, projectiontest.CausedBy(a.CommandID))

	// Without after, the order is not there yet.
	assertProblem(t, get(h, "/v1/orders/"+orderID), http.StatusNotFound, gateway.ProblemNotFound)

	// The command log saw the event, the orders read model not yet: a
	// short wait runs out.
	if err := e.feed(msg, events.TopicOrderEvents, "commands"); err != nil {
		t.Fatalf("feed the command log: %v", err)
	}
	p := assertProblem(t, get(h, "/v1/orders/"+orderID+"?after="+a.CommandID, "Prefer", "wait=1"),
		http.StatusServiceUnavailable, gateway.ProblemNotYetVisible)
	if p.CommandID != a.CommandID || !strings.Contains(p.Detail, "orders read model") {
		t.Errorf("problem = %+v, want it to name the command and the read model", p)
	}

	// A query that waits is answered as soon as the read model gets there.
	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		answered <- get(h, "/v1/orders/"+orderID, gateway.AfterHeader, a.CommandID, "Prefer", "wait=5")
	}()
	// The orders runner gets the event at the offset the command log saw.
	if err := e.runners["orders"].Handle(projectiontest.Delivered(msg, events.TopicOrderEvents, 0, 0)); err != nil {
		t.Fatalf("feed the orders read model: %v", err)
	}
	select {
	case rec := <-answered:
		var o orders.Order
		decodeJSON(t, rec, http.StatusOK, &o)
		if o.OrderID != orderID || o.TotalCents != 10 {
			t.Errorf("order = %+v", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting query was not answered once the read model had the order")
	}

	// The user's list of orders reads after the same command at once.
	rec := get(h, "/v1/users/"+someUser+"/orders?after="+a.CommandID)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), orderID) {
		t.Errorf("user orders = %d %s, want the order", rec.Code, rec.Body)
	}
}

func TestReadAfterRefusals(t *testing.T) {
	e := newEnv(t)
	h := readAfterGateway(t, e, runnerProgress{e})
	var a acceptedBody
	decodeJSON(t, e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`),
		http.StatusAccepted, &a)
	orderID := strings.TrimPrefix(a.Links.Resource, "/v1/orders/")
	e.mustFeed(t, events.CommandRejected{CommandID: a.CommandID, CommandType: "orders.place-order.v1", AggregateID: orderID,
		Code: events.CodeUnknownUser, Reason: "user is not registered", RejectedAt: time.Now()}, projectiontest.CausedBy(a.CommandID))

	tests := []struct {
		name    string
		h       http.Handler
		path    string
		header  []string
		status  int
		problem string
	}{
		{"a rejected command has nothing to wait for", h, "/v1/orders/" + orderID + "?after=" + a.CommandID, nil,
			http.StatusNotFound, gateway.ProblemNotFound},
		{"an unknown command", h, "/v1/orders/" + orderID + "?after=no-such-command", nil,
			http.StatusBadRequest, gateway.ProblemBadParameter},
		{"an empty command id", h, "/v1/orders/" + orderID + "?after=", nil, http.StatusBadRequest, gateway.ProblemBadParameter},
		{"two different commands", h, "/v1/orders/" + orderID + "?after=" + a.CommandID, []string{gateway.AfterHeader, "other"},
			http.StatusBadRequest, gateway.ProblemBadParameter},
		{"the parameter twice", h, "/v1/orders/" + orderID + "?after=a&after=b", nil, http.StatusBadRequest, gateway.ProblemBadParameter},
		{"a gateway without progress", e.handler, "/v1/orders/" + orderID + "?after=" + a.CommandID, nil,
			http.StatusBadRequest, gateway.ProblemBadParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := assertProblem(t, get(tt.h, tt.path, tt.header...), tt.status, tt.problem)
			if tt.status == http.StatusBadRequest && p.Parameter != "after" {
				t.Errorf("parameter = %q, want after", p.Parameter)
			}
		})
	}
}

// A read after a command this gateway accepted a moment ago, which the
// command log has not consumed yet: the command is known (pending), not
// refused as unknown, and the query waits for it up to its bound.
func TestReadAfterACommandTheLogHasNotConsumed(t *testing.T) {
	e := newEnv(t)
	e.handler = readAfterGateway(t, e, runnerProgress{e})
	var a acceptedBody
	decodeJSON(t, e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`),
		http.StatusAccepted, &a)
	orderID := strings.TrimPrefix(a.Links.Resource, "/v1/orders/")
	p := assertProblem(t, get(e.handler, "/v1/orders/"+orderID+"?after="+a.CommandID, "Prefer", "wait=1"),
		http.StatusServiceUnavailable, gateway.ProblemNotYetVisible)
	if p.CommandID != a.CommandID || !strings.Contains(p.Detail, "has not been handled yet") {
		t.Errorf("problem = %+v, want the command named as not handled yet", p)
	}
}

// A read after a command another gateway accepted a moment ago, before the
// command log consumed it: this gateway never saw the command, but its id
// is fresh (a UUIDv7 of the last minute), so the query waits for it instead
// of refusing it as unknown, and is answered once the read model has it.
// An old id, or one that carries no time, is refused at once.
func TestReadAfterACommandAcceptedElsewhere(t *testing.T) {
	e, a, orderID := orderAccepted(t)
	other := readAfterGateway(t, e, runnerProgress{e}) // its own record of accepted commands: empty

	p := assertProblem(t, get(other, "/v1/orders/"+orderID+"?after="+a.CommandID, "Prefer", "wait=1"),
		http.StatusServiceUnavailable, gateway.ProblemNotYetVisible)
	if !strings.Contains(p.Detail, "has not been handled yet") {
		t.Errorf("problem = %+v, want the command named as not handled yet", p)
	}

	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		answered <- get(other, "/v1/orders/"+orderID+"?after="+a.CommandID, "Prefer", "wait=20")
	}()
	placed := events.OrderPlacedV2{OrderID: orderID, UserID: someUser, Currency: "EUR", TotalCents: 5, ItemCount: 1, PlacedAt: time.Now(),
		Lines: []events.PricedLine{{SKU: "A", Quantity: 1, UnitPriceCents: 5, LineTotalCents: 5}}}
	e.mustFeed(t, placed, projectiontest.CausedBy(a.CommandID))
	select {
	case rec := <-answered:
		var o orders.Order
		decodeJSON(t, rec, http.StatusOK, &o)
		if o.OrderID != orderID {
			t.Errorf("order = %+v", o)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting query was not answered once the read model had the order")
	}

	for name, id := range map[string]string{
		"an id minted an hour ago":      uuidV7At(t, time.Now().Add(-time.Hour)),
		"an id from an idempotency key": uuid.NewSHA1(uuid.NameSpaceURL, []byte("k")).String(),
	} {
		t.Run(name, func(t *testing.T) {
			assertProblem(t, get(other, "/v1/orders/"+orderID+"?after="+id, "Prefer", "wait=5"),
				http.StatusBadRequest, gateway.ProblemBadParameter)
		})
	}
}

// orderAccepted is an env with a registered user and an order of one item
// accepted by the env's gateway: its 202 and the order's id.
func orderAccepted(t *testing.T) (*env, acceptedBody, string) {
	t.Helper()
	e := newEnv(t)
	e.mustFeed(t, events.UserRegistered{UserID: someUser, Email: "ada@example.com", FullName: "Ada", RegisteredAt: time.Now()})
	var a acceptedBody
	decodeJSON(t, e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`),
		http.StatusAccepted, &a)
	return e, a, strings.TrimPrefix(a.Links.Resource, "/v1/orders/")
}

// uuidV7At is a UUIDv7 with the time at.
func uuidV7At(t *testing.T, at time.Time) string {
	t.Helper()
	u, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	ms := uint64(at.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (8 * (5 - i)))
	}
	return u.String()
}

// GET /v1/commands/{id} with Prefer: wait waits for the outcome, on any
// gateway: one that never saw the command waits for a fresh id to become
// known; an unknown id that is not fresh is 404 at once.
func TestGetCommandWaits(t *testing.T) {
	e, a, orderID := orderAccepted(t)
	other := readAfterGateway(t, e, runnerProgress{e}) // never saw the command, MaxWait 5 s
	// Before the log has it, the other gateway does not know it.
	assertProblem(t, get(other, "/v1/commands/"+a.CommandID), http.StatusNotFound, gateway.ProblemNotFound)

	answered := make(chan *httptest.ResponseRecorder, 2)
	go func() { answered <- get(e.handler, "/v1/commands/"+a.CommandID, "Prefer", "wait=20") }()
	go func() { answered <- get(other, "/v1/commands/"+a.CommandID, "Prefer", "wait=20") }()
	placed := events.OrderPlacedV2{OrderID: orderID, UserID: someUser, Currency: "EUR", TotalCents: 5, ItemCount: 1, PlacedAt: time.Now(),
		Lines: []events.PricedLine{{SKU: "A", Quantity: 1, UnitPriceCents: 5, LineTotalCents: 5}}}
	e.mustFeed(t, placed, projectiontest.CausedBy(a.CommandID))
	for range 2 {
		select {
		case rec := <-answered:
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"status":"succeeded"`) ||
				!strings.HasPrefix(rec.Header().Get("Preference-Applied"), "wait=") {
				t.Errorf("GET with Prefer: wait = %d %s (Preference-Applied %q), want 200 succeeded",
					rec.Code, rec.Body, rec.Header().Get("Preference-Applied"))
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the waiting GETs were not answered once the command succeeded")
		}
	}

	for name, tc := range map[string]struct{ id, wait string }{
		"a fresh id never accepted, after its wait": {uuidV7At(t, time.Now()), "wait=1"},
		"an id minted an hour ago":                  {uuidV7At(t, time.Now().Add(-time.Hour)), "wait=20"},
		"not a command id":                          {"no-such-command", "wait=20"},
	} {
		t.Run(name, func(t *testing.T) {
			assertProblem(t, get(other, "/v1/commands/"+tc.id, "Prefer", tc.wait), http.StatusNotFound, gateway.ProblemNotFound)
		})
	}
}

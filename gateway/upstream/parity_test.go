package upstream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/gateway/upstream"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/queryapi/queryapitest"
	"github.com/millrace/millrace/projections/sales"
	"github.com/millrace/millrace/schemas"
)

// The client implements every read interface of the gateway.
var (
	_ gateway.OrderQueries  = (*upstream.Client)(nil)
	_ gateway.SalesQueries  = (*upstream.Client)(nil)
	_ gateway.Notifications = (*upstream.Client)(nil)
	_ gateway.CommandLog    = (*upstream.Client)(nil)
	_ gateway.Progress      = (*upstream.Client)(nil)
)

// TestGatewayParity builds two gateways on the same read models, one
// reading them in-process and one through a query edge found by
// discovery, and asks both the same questions: the answers are the same,
// byte for byte, errors included.
func TestGatewayParity(t *testing.T) {
	m := readModels(t)
	m.Feed(t, events.OrderPaid{OrderID: someOrder, UserID: someUser, AmountCents: 2500, Currency: "EUR", PaymentRef: "p-1", PaidAt: someDay})
	rejected := "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
	m.Feed(t, events.CommandRejected{CommandID: rejected, CommandType: "orders.ship-order.v1", AggregateID: someOrder,
		Code: events.CodeOrderNotFound, Reason: "no such order", RejectedAt: someDay}, projectiontest.CausedBy(rejected))

	validator, err := schema.New(schemas.FS())
	if err != nil {
		t.Fatal(err)
	}
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil)
	commandsSent := record(t, pubsub, events.TopicOrderCommands)

	local, err := gateway.New(gateway.Config{}, gateway.Deps{
		Publisher: pubsub, Validator: validator,
		Commands: m.Commands, Orders: m.Orders, Sales: m.Sales, Notifications: m.Notifications, Progress: m,
	})
	if err != nil {
		t.Fatal(err)
	}

	reg := discovery.NewMemory(discovery.MemoryConfig{})
	t.Cleanup(func() { _ = reg.Close() })
	register(t, reg, upstream.DefaultService, queryapitest.StartEdge(t, m), 1, 0)
	register(t, reg, upstream.DefaultService, queryapitest.StartEdge(t, m), 1, 0)
	client := start(t, upstream.Config{Resolver: reg})
	remote, err := gateway.New(gateway.Config{}, gateway.Deps{
		Publisher: pubsub, Validator: validator,
		Commands: client, Orders: client, Sales: client, Notifications: client, Progress: client,
	})
	if err != nil {
		t.Fatal(err)
	}

	do := func(h http.Handler, method, path, body string, header ...string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}

	for _, path := range []string{
		"/v1/orders/" + someOrder,
		"/v1/orders/no-such-order",
		"/v1/users/" + someUser + "/orders",
		"/v1/users/no-such-user/orders",
		"/v1/users/" + someUser + "/notifications",
		"/v1/reports/sales?date=2025-03-14",
		"/v1/reports/sales?date=2025-02-30",
		"/v1/commands/" + rejected,
		"/v1/commands/no-such-command",
		"/v1/orders/" + someOrder + "?after=" + rejected, // a rejected command caused nothing to wait for
		"/v1/orders/" + someOrder + "?after=no-such-command",
		"/v1/orders/" + someOrder + "?after=",
	} {
		t.Run("GET "+path, func(t *testing.T) {
			ls, lb := do(local.Handler(), http.MethodGet, path, "")
			rs, rb := do(remote.Handler(), http.MethodGet, path, "")
			if ls != rs || lb != rb {
				t.Fatalf("in-process: %d %s\nremote:     %d %s", ls, lb, rs, rb)
			}
		})
	}

	t.Run("a command accepted remotely is known locally, and its retry is recognised", func(t *testing.T) {
		body := `{"user_id":"` + someUser + `","lines":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`
		rs, rb := do(remote.Handler(), http.MethodPost, "/v1/orders", body, "Idempotency-Key", "parity-1")
		if rs != http.StatusAccepted {
			t.Fatalf("POST through the remote gateway: %d %s", rs, rb)
		}
		// The retry, through the in-process gateway, finds the command
		// with the request digest the remote gateway recorded.
		ls, lb := do(local.Handler(), http.MethodPost, "/v1/orders", body, "Idempotency-Key", "parity-1")
		if ls != rs || lb != rb {
			t.Fatalf("retry in-process: %d %s\nfirst, remote:    %d %s", ls, lb, rs, rb)
		}
		other := `{"user_id":"` + someUser + `","lines":[{"sku":"B","quantity":1,"unit_price_cents":5}]}`
		if s, b := do(remote.Handler(), http.MethodPost, "/v1/orders", other, "Idempotency-Key", "parity-1"); s != http.StatusUnprocessableEntity {
			t.Fatalf("key reused with another body through the remote gateway: %d %s, want 422", s, b)
		}
	})

	t.Run("Prefer: wait through the remote gateway answers once the command completes", func(t *testing.T) {
		body := `{"user_id":"` + someUser + `","lines":[{"sku":"C","quantity":1,"unit_price_cents":5}]}`
		type reply struct {
			status int
			body   string
		}
		got := make(chan reply, 1)
		go func() {
			s, b := do(remote.Handler(), http.MethodPost, "/v1/orders", body, "Idempotency-Key", "parity-2", "Prefer", "wait=20")
			got <- reply{s, b}
		}()
		// Play the command handler: once the command is in the log, its
		// event arrives.
		var commandID string
		deadline := time.Now().Add(20 * time.Second)
		for commandID == "" {
			for _, msg := range commandsSent() {
				if strings.Contains(string(msg.Payload), `"sku":"C"`) {
					commandID = msg.UUID
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("command not published")
			}
			time.Sleep(10 * time.Millisecond)
		}
		m.Feed(t, events.OrderPlaced{OrderID: "c-order", UserID: someUser, Currency: "EUR", TotalCents: 5, PlacedAt: someDay,
			Lines: []events.PricedLine{{SKU: "C", Quantity: 1, UnitPriceCents: 5, LineTotalCents: 5}}}, projectiontest.CausedBy(commandID))
		r := <-got
		if r.status != http.StatusCreated || !strings.Contains(r.body, `"status":"succeeded"`) {
			t.Fatalf("POST with Prefer: wait = %d %s, want 201 with the succeeded outcome", r.status, r.body)
		}
	})

	t.Run("read-your-writes through the remote gateway waits for the read model", func(t *testing.T) {
		body := `{"user_id":"` + someUser + `","lines":[{"sku":"D","quantity":1,"unit_price_cents":7}]}`
		s, b := do(remote.Handler(), http.MethodPost, "/v1/orders", body, "Idempotency-Key", "parity-3")
		if s != http.StatusAccepted {
			t.Fatalf("POST through the remote gateway: %d %s", s, b)
		}
		commandID := between(b, `"command_id":"`, `"`)
		read := "/v1/orders/d-order?after=" + commandID

		// Before the command is handled, a short wait runs out: 503
		// not-yet-visible. (The gateway that accepted the command knows
		// it from its own record until the log has it.)
		if s, b := do(remote.Handler(), http.MethodGet, read, "", "Prefer", "wait=1"); s != http.StatusServiceUnavailable ||
			!strings.Contains(b, "not-yet-visible") {
			t.Fatalf("read after a pending command through the remote gateway: %d %s, want 503 not-yet-visible", s, b)
		}

		got := make(chan [2]any, 1)
		go func() {
			s, b := do(remote.Handler(), http.MethodGet, read, "", "Prefer", "wait=20")
			got <- [2]any{s, b}
		}()
		m.Feed(t, events.OrderPlaced{OrderID: "d-order", UserID: someUser, Currency: "EUR", TotalCents: 7, PlacedAt: someDay,
			Lines: []events.PricedLine{{SKU: "D", Quantity: 1, UnitPriceCents: 7, LineTotalCents: 7}}}, projectiontest.CausedBy(commandID))
		r := <-got
		if r[0] != http.StatusOK || !strings.Contains(r[1].(string), `"order_id":"d-order"`) {
			t.Fatalf("read after the command through the remote gateway = %v %v, want 200 with the order", r[0], r[1])
		}
	})
}

// between returns what s holds between the first prefix and the next suffix.
func between(s, prefix, suffix string) string {
	_, after, _ := strings.Cut(s, prefix)
	v, _, _ := strings.Cut(after, suffix)
	return v
}

// record keeps every message published to topic, until the test ends.
func record(t *testing.T, pubsub *gochannel.GoChannel, topic string) func() []*message.Message {
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := pubsub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		msgs []*message.Message
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for msg := range ch {
			mu.Lock()
			msgs = append(msgs, msg)
			mu.Unlock()
			msg.Ack()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = pubsub.Close()
		wg.Wait()
	})
	return func() []*message.Message {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(msgs)
	}
}

// TestSentinels: the client's errors are the read models' own, and its
// command waits keep the command log's promises.
func TestSentinels(t *testing.T) {
	m := readModels(t)
	if _, _, err := m.Commands.Accept(t.Context(), commands.Accepted{
		CommandID: "pending-1", Type: "orders.pay-order.v1", AggregateID: someOrder, RequestHash: "h", AcceptedAt: someDay,
	}); err != nil {
		t.Fatal(err)
	}
	reg := discovery.NewMemory(discovery.MemoryConfig{})
	t.Cleanup(func() { _ = reg.Close() })
	register(t, reg, upstream.DefaultService, queryapitest.StartEdge(t, m), 1, 0)
	c := start(t, upstream.Config{Resolver: reg})

	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"unknown order", func() error { _, err := c.Order(t.Context(), "nope"); return err }, orders.ErrNotFound},
		{"unknown user", func() error { _, err := c.UserOrders(t.Context(), "nope"); return err }, orders.ErrUserNotFound},
		{"malformed date", func() error { _, err := c.SalesOn(t.Context(), "14.03.2025"); return err }, sales.ErrBadDate},
		{"unknown command", func() error { _, err := c.Get(t.Context(), "nope"); return err }, commands.ErrNotFound},
		{"waiting for an unknown command until the deadline", func() error { _, err := c.Wait(short(), "nope"); return err }, commands.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("waiting for a pending command until the deadline answers pending", func(t *testing.T) {
		o, err := c.Wait(short(), "pending-1")
		if err != nil || o.Status != commands.StatusPending || o.RequestHash != "h" {
			t.Fatalf("Wait = %+v, %v; want the pending outcome with its digest and no error", o, err)
		}
	})
	t.Run("accepting twice creates once", func(t *testing.T) {
		a := commands.Accepted{CommandID: "new-1", Type: "orders.pay-order.v1", AggregateID: someOrder, RequestHash: "h1", AcceptedAt: someDay}
		o, created, err := c.Accept(t.Context(), a)
		if err != nil || !created || o.RequestHash != "h1" || o.Status != commands.StatusPending {
			t.Fatalf("first Accept = %+v, %v, %v", o, created, err)
		}
		a.RequestHash = "h2"
		o, created, err = c.Accept(t.Context(), a)
		if err != nil || created || o.RequestHash != "h1" {
			t.Fatalf("second Accept = %+v, %v, %v; want the first digest, not created", o, created, err)
		}
	})
}

package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/projections/commands"
)

const (
	existingOrder = "0f8fad5b-d9cb-469f-a165-70867728950e"
	someUser      = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

// route describes one command POST for the table tests.
type route struct {
	name string
	path string
	// valid is a body the gateway accepts.
	valid map[string]any
	// required is a field of valid the schema requires.
	required string
	// wrongType is a field of valid, and a value of the wrong type for it.
	wrongType      string
	wrongTypeValue any
	// assigned is the field the server assigns.
	assigned string
	// wireName is the command's ce_type.
	wireName string
}

func routes() []route {
	return []route{
		{
			name: "register user", path: "/v1/users",
			valid:    map[string]any{"email": "ada@example.com", "name": "Ada Lovelace"},
			required: "email", wrongType: "name", wrongTypeValue: 42,
			assigned: "user_id", wireName: "users.register-user.v1",
		},
		{
			name: "place order", path: "/v1/orders",
			valid: map[string]any{"user_id": someUser, "currency": "EUR", "lines": []any{
				map[string]any{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1250},
			}},
			required: "lines", wrongType: "user_id", wrongTypeValue: true,
			assigned: "order_id", wireName: "orders.place-order.v1",
		},
		{
			name: "pay order", path: "/v1/orders/" + existingOrder + "/pay",
			valid:    map[string]any{"amount_cents": 2500, "payment_ref": "psp-1"},
			required: "payment_ref", wrongType: "amount_cents", wrongTypeValue: "lots",
			assigned: "order_id", wireName: "orders.pay-order.v1",
		},
		{
			name: "cancel order", path: "/v1/orders/" + existingOrder + "/cancel",
			valid:    map[string]any{"reason": "changed my mind"},
			required: "reason", wrongType: "reason", wrongTypeValue: []any{"no"},
			assigned: "order_id", wireName: "orders.cancel-order.v1",
		},
		{
			name: "ship order", path: "/v1/orders/" + existingOrder + "/ship",
			valid:    map[string]any{"carrier": "DHL"},
			required: "carrier", wrongType: "carrier", wrongTypeValue: 7,
			assigned: "order_id", wireName: "orders.ship-order.v1",
		},
	}
}

// with returns a copy of doc with field set to v.
func with(doc map[string]any, field string, v any) map[string]any {
	c := maps.Clone(doc)
	c[field] = v
	return c
}

// without returns a copy of doc without field.
func without(doc map[string]any, field string) map[string]any {
	c := maps.Clone(doc)
	delete(c, field)
	return c
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return string(b)
}

func TestCommandBadInputIsRejectedBeforePublishing(t *testing.T) {
	type badInput struct {
		name        string
		contentType string // "" for application/json, "-" for none
		path        string // "" for the route's path
		body        string
		status      int
		problemType string
		// violation, when set, must be among the problem's errors.
		violation *schema.Violation
		// offset, when >= 0, is the byte offset a malformed-json problem names.
		offset int64
	}
	for _, rt := range routes() {
		valid := mustJSON(t, rt.valid)
		cases := []badInput{
			{name: "malformed JSON", body: `{"x": tru}`, status: 400, problemType: gateway.ProblemMalformedJSON, offset: 9},
			{name: "empty body", body: ``, status: 400, problemType: gateway.ProblemMalformedJSON, offset: 0},
			{name: "trailing garbage", body: valid + ` {"again": 1}`, status: 400, problemType: gateway.ProblemMalformedJSON,
				offset: int64(len(valid) + 1)},
			{name: "wrong content type", contentType: "text/plain", body: valid, status: 415,
				problemType: gateway.ProblemUnsupportedMediaType, offset: -1},
			{name: "no content type", contentType: "-", body: valid, status: 415,
				problemType: gateway.ProblemUnsupportedMediaType, offset: -1},
			{name: "wrong charset", contentType: "application/json; charset=latin1", body: valid, status: 415,
				problemType: gateway.ProblemUnsupportedMediaType, offset: -1},
			{name: "oversize body", body: mustJSON(t, with(rt.valid, "pad", padding(2000))), status: 413,
				problemType: gateway.ProblemBodyTooLarge, offset: -1},
			{name: "unknown field", body: mustJSON(t, with(rt.valid, "colour", "red")), status: 422,
				problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "/colour", Rule: "additionalProperties"}},
			{name: "missing required field", body: mustJSON(t, without(rt.valid, rt.required)), status: 422,
				problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "/" + rt.required, Rule: "required"}},
			{name: "wrong type", body: mustJSON(t, with(rt.valid, rt.wrongType, rt.wrongTypeValue)), status: 422,
				problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "/" + rt.wrongType, Rule: "type"}},
			{name: "not an object", body: `[1, 2]`, status: 422, problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "", Rule: "type"}},
			{name: "server-assigned field", body: mustJSON(t, with(rt.valid, rt.assigned, uuid.NewString())), status: 422,
				problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "/" + rt.assigned, Rule: "server-assigned"}},
		}
		if rt.path == "/v1/orders" {
			zero := with(rt.valid, "lines", []any{map[string]any{"sku": "BOOK-1", "quantity": 0, "unit_price_cents": 1250}})
			cases = append(cases,
				badInput{name: "quantity 0", body: mustJSON(t, zero), status: 422, problemType: gateway.ProblemSchemaViolation,
					offset: -1, violation: &schema.Violation{Field: "/lines/0/quantity", Rule: "minimum"}},
				badInput{name: "quantity with a fraction", body: strings.Replace(valid, `"quantity":2`, `"quantity":2.5`, 1),
					status: 422, problemType: gateway.ProblemSchemaViolation, offset: -1,
					violation: &schema.Violation{Field: "/lines/0/quantity", Rule: "type"}},
			)
		} else if strings.Contains(rt.path, existingOrder) {
			cases = append(cases, badInput{name: "order id in path not a UUID", body: valid, status: 422,
				path:        strings.Replace(rt.path, existingOrder, "not-a-uuid", 1),
				problemType: gateway.ProblemSchemaViolation, offset: -1,
				violation: &schema.Violation{Field: "/order_id", Rule: "format"}})
		}

		t.Run(rt.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e := newEnv(t)
					ct := "application/json"
					switch tc.contentType {
					case "":
					case "-":
						ct = ""
					default:
						ct = tc.contentType
					}
					path := rt.path
					if tc.path != "" {
						path = tc.path
					}
					rec := e.do(http.MethodPost, path, ct, tc.body, "Prefer", "wait=1")
					p := assertProblem(t, rec, tc.status, tc.problemType)
					e.assertNothingPublished(t)
					if p.Instance != path {
						t.Errorf("instance = %q, want %q", p.Instance, path)
					}
					if tc.offset >= 0 {
						if p.Offset == nil || *p.Offset != tc.offset {
							t.Errorf("offset = %v, want %d; detail: %s", p.Offset, tc.offset, p.Detail)
						}
					}
					if tc.violation != nil {
						found := false
						for _, v := range p.Errors {
							if v.Field == tc.violation.Field && v.Rule == tc.violation.Rule && v.Message != "" {
								found = true
							}
						}
						if !found {
							t.Errorf("errors = %+v, want one with field %q and rule %q", p.Errors, tc.violation.Field, tc.violation.Rule)
						}
					}
				})
			}
		})
	}
}

func TestCommandSchemaViolationListsEveryViolation(t *testing.T) {
	e := newEnv(t)
	rec := e.post("/v1/orders", `{"user_id":"nope","lines":[{"sku":"","quantity":0,"unit_price_cents":-1}],"currency":"euro"}`)
	p := assertProblem(t, rec, http.StatusUnprocessableEntity, gateway.ProblemSchemaViolation)
	e.assertNothingPublished(t)
	want := map[string]string{
		"/user_id":                  "format",
		"/lines/0/sku":              "pattern",
		"/lines/0/quantity":         "minimum",
		"/lines/0/unit_price_cents": "minimum",
		"/currency":                 "pattern",
	}
	got := map[string]string{}
	for _, v := range p.Errors {
		got[v.Field] = v.Rule
	}
	for field, rule := range want {
		if got[field] != rule {
			t.Errorf("violation of %s = %q, want %q (all: %+v)", field, got[field], rule, p.Errors)
		}
	}
	for field := range want {
		if !strings.Contains(p.Detail, field) {
			t.Errorf("detail does not name %s: %s", field, p.Detail)
		}
	}
}

func TestCommandAccepted(t *testing.T) {
	for _, rt := range routes() {
		t.Run(rt.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.post(rt.path, mustJSON(t, rt.valid))
			var body acceptedBody
			decodeJSON(t, rec, http.StatusAccepted, &body)

			if _, err := uuid.Parse(body.CommandID); err != nil {
				t.Fatalf("command_id %q is not a UUID: %v", body.CommandID, err)
			}
			commandURL := "/v1/commands/" + body.CommandID
			if got := rec.Header().Get("Location"); got != commandURL {
				t.Errorf("Location = %q, want %q", got, commandURL)
			}
			if body.Status != "pending" || body.Links.Command != commandURL {
				t.Errorf("body = %+v, want status pending and links.command %s", body, commandURL)
			}
			// Byte for byte the JSON of its fields in order, one line, its
			// length declared.
			if want := mustJSON(t, body) + "\n"; rec.Body.String() != want {
				t.Errorf("body = %q, want %q", rec.Body.String(), want)
			}
			if got, want := rec.Header().Get("Content-Length"), strconv.Itoa(rec.Body.Len()); got != want {
				t.Errorf("Content-Length = %s, want %s", got, want)
			}
			if rec.Header().Get("Preference-Applied") != "" {
				t.Errorf("Preference-Applied set without a Prefer header")
			}

			msgs := e.publishedMessages()
			if len(msgs) != 1 {
				t.Fatalf("published %d messages, want 1", len(msgs))
			}
			msg := msgs[0]
			if msg.UUID != body.CommandID {
				t.Errorf("message UUID = %q, want the command id %q", msg.UUID, body.CommandID)
			}
			md := msg.Metadata
			for key, want := range map[string]string{
				cloudevents.Type:          rt.wireName,
				cloudevents.Source:        events.SourceGateway,
				cloudevents.SpecVersion:   "1.0",
				cloudevents.ContentType:   "application/json",
				cloudevents.CorrelationID: body.CommandID,
			} {
				if got := md.Get(key); got != want {
					t.Errorf("metadata %s = %q, want %q", key, got, want)
				}
			}

			typ, _ := events.Lookup(rt.wireName)
			cmd := typ.New()
			if err := json.Unmarshal(msg.Payload, cmd); err != nil {
				t.Fatalf("decode payload %s: %v", msg.Payload, err)
			}
			key := md.Get(cloudevents.PartitionKey)
			if key != cmd.Key() || md.Get(cloudevents.Subject) != key {
				t.Errorf("partition key %q, subject %q, want the aggregate id %q", key, md.Get(cloudevents.Subject), cmd.Key())
			}
			wantResource := "/v1/orders/" + key
			switch c := cmd.(type) {
			case *events.RegisterUser:
				want := events.RegisterUser{UserID: key, Email: "ada@example.com", FullName: "Ada Lovelace"}
				if *c != want {
					t.Errorf("payload = %+v, want %+v", *c, want)
				}
				wantResource = "/v1/users/" + key + "/orders"
			case *events.PlaceOrder:
				if c.UserID != someUser || c.Currency != "EUR" || len(c.Lines) != 1 ||
					c.Lines[0] != (events.OrderLine{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250}) {
					t.Errorf("payload = %+v", *c)
				}
			case *events.PayOrder:
				want := events.PayOrder{OrderID: existingOrder, AmountCents: 2500, PaymentRef: "psp-1"}
				if *c != want {
					t.Errorf("payload = %+v, want %+v", *c, want)
				}
			case *events.CancelOrder:
				want := events.CancelOrder{OrderID: existingOrder, Reason: "changed my mind"}
				if *c != want {
					t.Errorf("payload = %+v, want %+v", *c, want)
				}
			case *events.ShipOrder:
				want := events.ShipOrder{OrderID: existingOrder, Carrier: "DHL"}
				if *c != want {
					t.Errorf("payload = %+v, want %+v", *c, want)
				}
			}
			if body.Links.Resource != wantResource {
				t.Errorf("links.resource = %q, want %q", body.Links.Resource, wantResource)
			}
			if _, err := uuid.Parse(key); err != nil {
				t.Errorf("aggregate id %q is not a UUID", key)
			}

			// The message carries the request's digest and its acceptance time.
			hash := md.Get(cloudevents.RequestHash)
			if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
				t.Errorf("metadata %s = %q, want a hex SHA-256", cloudevents.RequestHash, hash)
			}
			acceptedAt, err := time.Parse(time.RFC3339Nano, md.Get(cloudevents.Time))
			if err != nil {
				t.Fatalf("metadata %s: %v", cloudevents.Time, err)
			}

			// Nothing was written to the command log: the gateway answers
			// for the command until the log consumed it.
			if _, err := e.commands.Get(context.Background(), body.CommandID); !errors.Is(err, commands.ErrNotFound) {
				t.Errorf("command log before consuming the command: %v, want not found", err)
			}
			assertPending := func(when string) {
				t.Helper()
				var got commands.Outcome
				decodeJSON(t, e.do(http.MethodGet, commandURL, "", ""), http.StatusOK, &got)
				if got.CommandID != body.CommandID || got.Status != commands.StatusPending ||
					got.Type != rt.wireName || got.AggregateID != key || !got.AcceptedAt.Equal(acceptedAt) {
					t.Errorf("GET %s %s = %+v, want pending %s of %s accepted at %s",
						commandURL, when, got, rt.wireName, key, acceptedAt)
				}
			}
			assertPending("at once")

			// The log learns all of it from the command message.
			if err := e.feed(msg, typ.Topic, "commands"); err != nil {
				t.Fatal(err)
			}
			o, err := e.commands.Get(context.Background(), body.CommandID)
			if err != nil {
				t.Fatalf("command log: %v", err)
			}
			if o.Status != commands.StatusPending || o.Type != rt.wireName || o.AggregateID != key ||
				o.RequestHash != hash || !o.AcceptedAt.Equal(acceptedAt) {
				t.Errorf("outcome = %+v, want pending %s of %s, digest %s, accepted at %s", o, rt.wireName, key, hash, acceptedAt)
			}
			assertPending("once the log has it")
		})
	}
}

func TestCommandDefaultCurrency(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.DefaultCurrency = "USD" })
	rec := e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body: %s", rec.Code, rec.Body)
	}
	var cmd events.PlaceOrder
	if err := json.Unmarshal(e.publishedMessages()[0].Payload, &cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.Currency != "USD" {
		t.Errorf("currency = %q, want the configured default USD", cmd.Currency)
	}
}

func TestCommandContentTypes(t *testing.T) {
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
		"application/vnd.millrace+json"} {
		t.Run(ct, func(t *testing.T) {
			e := newEnv(t)
			rec := e.do(http.MethodPost, "/v1/orders/"+existingOrder+"/ship", ct, `{"carrier":"UPS"}`)
			if rec.Code != http.StatusAccepted {
				t.Errorf("status = %d, want 202; body: %s", rec.Code, rec.Body)
			}
			if n := len(e.publishedMessages()); n != 1 {
				t.Errorf("published %d, want 1", n)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	body := mustJSON(t, routes()[1].valid)

	t.Run("retry publishes once and names the same command and order", func(t *testing.T) {
		e := newEnv(t)
		first := e.post("/v1/orders", body, "Idempotency-Key", "order-42")
		second := e.post("/v1/orders", body, "Idempotency-Key", "order-42")
		var a, b acceptedBody
		decodeJSON(t, first, http.StatusAccepted, &a)
		decodeJSON(t, second, http.StatusAccepted, &b)
		if a != b {
			t.Errorf("retry answered %+v, first answer %+v", b, a)
		}
		if n := len(e.publishedMessages()); n != 1 {
			t.Errorf("published %d messages, want 1", n)
		}
	})

	t.Run("same key on another gateway instance names the same command", func(t *testing.T) {
		e := newEnv(t)
		other, err := gateway.New(gateway.Config{}, e.deps())
		if err != nil {
			t.Fatal(err)
		}
		var a, b acceptedBody
		decodeJSON(t, e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Idempotency-Key", "k1"), http.StatusAccepted, &a)
		// The broker delivers the command to the command log.
		if err := e.feed(e.publishedMessages()[0], events.TopicUserCommands, "commands"); err != nil {
			t.Fatal(err)
		}
		e.handler = other.Handler()
		decodeJSON(t, e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Idempotency-Key", "k1"), http.StatusAccepted, &b)
		if a.CommandID != b.CommandID || a.Links.Resource != b.Links.Resource {
			t.Errorf("instances disagree: %+v vs %+v", a, b)
		}
		if n := len(e.publishedMessages()); n != 1 {
			t.Errorf("published %d messages, want 1", n)
		}
		// The log has the first request's digest: another body is refused there too.
		assertProblem(t, e.post("/v1/users", `{"email":"b@example.com","name":"B"}`, "Idempotency-Key", "k1"),
			http.StatusUnprocessableEntity, gateway.ProblemIdempotencyKeyReused)
		if n := len(e.publishedMessages()); n != 1 {
			t.Errorf("published %d messages, want 1", n)
		}
	})

	t.Run("retry on another instance before the log has the command publishes the same command again", func(t *testing.T) {
		// The race command.go documents: harmless, as both messages carry
		// the same command id, which the command handler's inbox lets
		// through once.
		e := newEnv(t)
		other, err := gateway.New(gateway.Config{}, e.deps())
		if err != nil {
			t.Fatal(err)
		}
		var a, b acceptedBody
		decodeJSON(t, e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Idempotency-Key", "k1"), http.StatusAccepted, &a)
		e.handler = other.Handler()
		decodeJSON(t, e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Idempotency-Key", "k1"), http.StatusAccepted, &b)
		msgs := e.publishedMessages()
		if len(msgs) != 2 || msgs[0].UUID != a.CommandID || msgs[1].UUID != a.CommandID || b.CommandID != a.CommandID {
			t.Errorf("published %d messages (answers %s, %s), want the command %s twice", len(msgs), a.CommandID, b.CommandID, a.CommandID)
		}
	})

	t.Run("same key on another path is another command", func(t *testing.T) {
		e := newEnv(t)
		var a, b acceptedBody
		decodeJSON(t, e.post("/v1/orders/"+existingOrder+"/ship", `{"carrier":"DHL"}`, "Idempotency-Key", "k"), http.StatusAccepted, &a)
		decodeJSON(t, e.post("/v1/orders/"+existingOrder+"/cancel", `{"reason":"late"}`, "Idempotency-Key", "k"), http.StatusAccepted, &b)
		if a.CommandID == b.CommandID {
			t.Errorf("two paths share command id %s", a.CommandID)
		}
		if n := len(e.publishedMessages()); n != 2 {
			t.Errorf("published %d messages, want 2", n)
		}
	})

	t.Run("without a key every request is a new command", func(t *testing.T) {
		e := newEnv(t)
		var a, b acceptedBody
		decodeJSON(t, e.post("/v1/orders", body), http.StatusAccepted, &a)
		decodeJSON(t, e.post("/v1/orders", body), http.StatusAccepted, &b)
		if a.CommandID == b.CommandID || a.Links.Resource == b.Links.Resource {
			t.Errorf("two requests without a key share an id: %+v, %+v", a, b)
		}
		if n := len(e.publishedMessages()); n != 2 {
			t.Errorf("published %d messages, want 2", n)
		}
	})

	t.Run("key reused with another body", func(t *testing.T) {
		e := newEnv(t)
		first := e.post("/v1/orders", body, "Idempotency-Key", "k2")
		if first.Code != http.StatusAccepted {
			t.Fatalf("first: %d %s", first.Code, first.Body)
		}
		other := strings.Replace(body, `"quantity":2`, `"quantity":3`, 1)
		rec := e.post("/v1/orders", other, "Idempotency-Key", "k2")
		assertProblem(t, rec, http.StatusUnprocessableEntity, gateway.ProblemIdempotencyKeyReused)
		if n := len(e.publishedMessages()); n != 1 {
			t.Errorf("published %d messages, want only the first", n)
		}
	})

	t.Run("retry of a completed command answers its outcome", func(t *testing.T) {
		e := newEnv(t)
		var a acceptedBody
		decodeJSON(t, e.post("/v1/orders/"+existingOrder+"/ship", `{"carrier":"DHL"}`, "Idempotency-Key", "k3"), http.StatusAccepted, &a)
		e.mustFeed(t, events.CommandRejected{CommandID: a.CommandID, CommandType: "orders.ship-order.v1",
			AggregateID: existingOrder, Code: events.CodeOrderNotPaid, Reason: "the order is not paid"})
		rec := e.post("/v1/orders/"+existingOrder+"/ship", `{"carrier":"DHL"}`, "Idempotency-Key", "k3")
		p := assertProblem(t, rec, http.StatusConflict, gateway.ProblemCommandRejected)
		if p.CommandID != a.CommandID || p.Code != events.CodeOrderNotPaid {
			t.Errorf("problem = %+v", p)
		}
		if n := len(e.publishedMessages()); n != 1 {
			t.Errorf("published %d messages, want 1", n)
		}
	})

	for _, tc := range []struct{ name, key string }{
		{"empty", ""},
		{"too long", strings.Repeat("k", 256)},
		{"control character", "abc\x01"},
		{"not ASCII", "clé"},
	} {
		t.Run("bad key "+tc.name, func(t *testing.T) {
			e := newEnv(t)
			rec := e.post("/v1/orders", body, "Idempotency-Key", tc.key)
			p := assertProblem(t, rec, http.StatusBadRequest, gateway.ProblemBadParameter)
			if p.Parameter != "Idempotency-Key" {
				t.Errorf("parameter = %q, want Idempotency-Key", p.Parameter)
			}
			e.assertNothingPublished(t)
		})
	}
	t.Run("longest key", func(t *testing.T) {
		e := newEnv(t)
		rec := e.post("/v1/orders", body, "Idempotency-Key", strings.Repeat("k", 255))
		if rec.Code != http.StatusAccepted {
			t.Errorf("status = %d, want 202; body: %s", rec.Code, rec.Body)
		}
	})
}

func TestCommandPublishFailure(t *testing.T) {
	e := newEnv(t)
	if err := e.pubsub.Close(); err != nil {
		t.Fatal(err)
	}
	rec := e.post("/v1/users", `{"email":"a@example.com","name":"A"}`)
	assertProblem(t, rec, http.StatusServiceUnavailable, gateway.ProblemUnavailable)
	if rec.Header().Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	e.assertNothingPublished(t)
}

// completeWith answers the next published command by feeding, through the
// real projections, the command and what results returns for it. It runs in
// a goroutine of its own; the returned func waits for it and reports errors.
func (e *env) completeWith(t *testing.T, results func(cmd *message.Message) []events.Message) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		var cmd *message.Message
		select {
		case cmd = <-e.publishedCh:
		case <-ctx.Done():
			return
		}
		commandTopic, _ := events.Lookup(cmd.Metadata.Get(cloudevents.Type))
		if err := e.feed(cmd, commandTopic.Topic, "commands"); err != nil {
			errs <- err
			return
		}
		for _, result := range results(cmd) {
			m := cloudevents.Marshaler{Source: events.SourceOrders}
			msg, err := m.Marshal(result)
			if err != nil {
				errs <- err
				return
			}
			msg.Metadata.Set(cloudevents.CausationID, cmd.UUID)
			msg.Metadata.Set(cloudevents.CorrelationID, cmd.UUID)
			if err := e.feed(msg, events.EventTopicFor(commandTopic.Topic), "commands", "orders", "sales"); err != nil {
				errs <- err
				return
			}
		}
	}()
	return func() {
		t.Helper()
		cancel()
		wg.Wait()
		select {
		case err := <-errs:
			t.Errorf("complete command: %v", err)
		default:
		}
	}
}

func TestPreferWait(t *testing.T) {
	placed := func(cmd *message.Message) []events.Message {
		var c events.PlaceOrder
		_ = json.Unmarshal(cmd.Payload, &c)
		return []events.Message{events.OrderPlaced{OrderID: c.OrderID, UserID: c.UserID, Currency: c.Currency,
			Lines: []events.PricedLine{{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500}}, TotalCents: 2500}}
	}
	rejected := func(code string) func(cmd *message.Message) []events.Message {
		return func(cmd *message.Message) []events.Message {
			return []events.Message{events.CommandRejected{CommandID: cmd.UUID, CommandType: cmd.Metadata.Get(cloudevents.Type),
				AggregateID: cmd.Metadata.Get(cloudevents.PartitionKey), Code: code, Reason: "the rules say no"}}
		}
	}
	order := routes()[1]
	pay := routes()[2]

	t.Run("place order succeeds: 201 with the order's location", func(t *testing.T) {
		e := newEnv(t)
		done := e.completeWith(t, placed)
		rec := e.post(order.path, mustJSON(t, order.valid), "Prefer", "respond-async, wait=5")
		done()
		var o commands.Outcome
		decodeJSON(t, rec, http.StatusCreated, &o)
		if o.Status != commands.StatusSucceeded || len(o.EventTypes) != 1 || o.EventTypes[0] != "orders.order-placed.v1" {
			t.Errorf("outcome = %+v, want succeeded with orders.order-placed.v1", o)
		}
		if got, want := rec.Header().Get("Location"), "/v1/orders/"+o.AggregateID; got != want {
			t.Errorf("Location = %q, want %q", got, want)
		}
		if got := rec.Header().Get("Preference-Applied"); got != "wait=5" {
			t.Errorf("Preference-Applied = %q, want wait=5", got)
		}
		// The resource it points at is served.
		var got struct {
			OrderID    string `json:"order_id"`
			TotalCents int64  `json:"total_cents"`
		}
		decodeJSON(t, e.do(http.MethodGet, rec.Header().Get("Location"), "", ""), http.StatusOK, &got)
		if got.OrderID != o.AggregateID || got.TotalCents != 2500 {
			t.Errorf("GET order = %+v", got)
		}
	})

	t.Run("wait is capped by MaxWait", func(t *testing.T) {
		e := newEnv(t, func(c *gateway.Config) { c.MaxWait = 2_000_000_000 })
		done := e.completeWith(t, placed)
		rec := e.post(order.path, mustJSON(t, order.valid), "Prefer", "wait=3600")
		done()
		if rec.Code != http.StatusCreated {
			t.Errorf("status = %d, want 201; body: %s", rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Preference-Applied"); got != "wait=2" {
			t.Errorf("Preference-Applied = %q, want wait=2", got)
		}
	})

	t.Run("pay succeeds: 200 with the outcome", func(t *testing.T) {
		e := newEnv(t)
		done := e.completeWith(t, func(cmd *message.Message) []events.Message {
			return []events.Message{events.OrderPaid{OrderID: existingOrder, UserID: someUser, AmountCents: 2500, Currency: "EUR", PaymentRef: "psp-1"}}
		})
		rec := e.post(pay.path, mustJSON(t, pay.valid), "Prefer", "wait=1")
		done()
		var o commands.Outcome
		decodeJSON(t, rec, http.StatusOK, &o)
		if o.Status != commands.StatusSucceeded || o.AggregateID != existingOrder {
			t.Errorf("outcome = %+v", o)
		}
		if rec.Header().Get("Location") != "" {
			t.Errorf("Location set on a 200: %q", rec.Header().Get("Location"))
		}
	})

	for _, tc := range []struct {
		code   string
		status int
	}{
		{events.CodeOrderAlreadyPaid, http.StatusConflict},
		{events.CodeOrderCancelled, http.StatusConflict},
		{events.CodeAmountMismatch, http.StatusUnprocessableEntity},
		{events.CodeOrderNotFound, http.StatusNotFound},
	} {
		t.Run("pay rejected with "+tc.code, func(t *testing.T) {
			e := newEnv(t)
			done := e.completeWith(t, rejected(tc.code))
			rec := e.post(pay.path, mustJSON(t, pay.valid), "Prefer", "wait=1")
			done()
			p := assertProblem(t, rec, tc.status, gateway.ProblemCommandRejected)
			msgs := e.publishedMessages()
			if len(msgs) != 1 {
				t.Fatalf("published %d, want 1", len(msgs))
			}
			if p.CommandID != msgs[0].UUID || p.Code != tc.code || p.Reason != "the rules say no" {
				t.Errorf("problem = %+v, want command %s, code %s and the reason", p, msgs[0].UUID, tc.code)
			}
			if !strings.Contains(p.Detail, tc.code) {
				t.Errorf("detail does not name the code: %s", p.Detail)
			}
		})
	}

	t.Run("register user rejected: 409", func(t *testing.T) {
		e := newEnv(t)
		done := e.completeWith(t, rejected(events.CodeUserExists))
		rec := e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Prefer", "wait=1")
		done()
		assertProblem(t, rec, http.StatusConflict, gateway.ProblemCommandRejected)
	})

	t.Run("still pending at the deadline: 202", func(t *testing.T) {
		e := newEnv(t)
		rec := e.post(pay.path, mustJSON(t, pay.valid), "Prefer", "wait=1")
		var body acceptedBody
		decodeJSON(t, rec, http.StatusAccepted, &body)
		if body.Status != "pending" || rec.Header().Get("Location") != "/v1/commands/"+body.CommandID {
			t.Errorf("body = %+v, Location = %q", body, rec.Header().Get("Location"))
		}
		if got := rec.Header().Get("Preference-Applied"); got != "wait=1" {
			t.Errorf("Preference-Applied = %q, want wait=1", got)
		}
	})

	for _, prefer := range []string{"wait=0", "wait=soon", "wait", "respond-async"} {
		t.Run("not honoured: "+prefer, func(t *testing.T) {
			e := newEnv(t)
			rec := e.post(pay.path, mustJSON(t, pay.valid), "Prefer", prefer)
			if rec.Code != http.StatusAccepted || rec.Header().Get("Preference-Applied") != "" {
				t.Errorf("status %d, Preference-Applied %q; want 202 at once without it",
					rec.Code, rec.Header().Get("Preference-Applied"))
			}
		})
	}
}

func TestCommandIntegralNumbers(t *testing.T) {
	// JSON Schema counts 2.0 and 1.25e3 as integers; so does the gateway.
	e := newEnv(t)
	rec := e.post("/v1/orders", `{"user_id":"`+someUser+`","lines":[{"sku":"A","quantity":2.0,"unit_price_cents":1.25e3}]}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body: %s", rec.Code, rec.Body)
	}
	var cmd events.PlaceOrder
	if err := json.Unmarshal(e.publishedMessages()[0].Payload, &cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.Lines[0].Quantity != 2 || cmd.Lines[0].UnitPriceCents != 1250 {
		t.Errorf("lines = %+v, want quantity 2 at 1250 cents", cmd.Lines)
	}
}

func TestCommandDefaultBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxBodyBytes = 0 })
	big := `{"carrier":"` + padding(1<<20) + `"}`
	rec := e.post("/v1/orders/"+existingOrder+"/ship", big)
	assertProblem(t, rec, http.StatusRequestEntityTooLarge, gateway.ProblemBodyTooLarge)
	if !strings.Contains(rec.Body.String(), `"max_bytes":1048576`) {
		t.Errorf("problem does not give the 1 MiB limit: %s", rec.Body)
	}
	// Under the limit, the body is read and judged by the schema instead.
	rec = e.post("/v1/orders/"+existingOrder+"/ship", `{"carrier":"`+padding(1<<19)+`"}`)
	assertProblem(t, rec, http.StatusUnprocessableEntity, gateway.ProblemSchemaViolation)
	e.assertNothingPublished(t)
}

// A command the log learnt of without a request digest (published by a
// gateway older than ce_requesthash): a retry with its key is answered from
// the log, whatever its body, and not published again.
func TestIdempotencyKeyRetryOfACommandWithoutDigest(t *testing.T) {
	e := newEnv(t)
	body := `{"email":"a@example.com","name":"A"}`
	var a acceptedBody
	decodeJSON(t, e.post("/v1/users", body, "Idempotency-Key", "signup-1"), http.StatusAccepted, &a)
	old := e.publishedMessages()[0].Copy()
	delete(old.Metadata, cloudevents.RequestHash)
	if err := e.feed(old, events.TopicUserCommands, "commands"); err != nil {
		t.Fatal(err)
	}

	// Another instance: it never saw the request.
	other, err := gateway.New(gateway.Config{}, e.deps())
	if err != nil {
		t.Fatal(err)
	}
	e.handler = other.Handler()
	for _, retry := range []string{body, `{"email":"b@example.com","name":"B"}`} {
		var b acceptedBody
		decodeJSON(t, e.post("/v1/users", retry, "Idempotency-Key", "signup-1"), http.StatusAccepted, &b)
		if b.CommandID != a.CommandID || b.Status != "pending" {
			t.Errorf("retry answered %+v, want the pending command %s", b, a.CommandID)
		}
	}
	if n := len(e.publishedMessages()); n != 1 {
		t.Errorf("published %d, want 1: a retry must not publish again", n)
	}
}

// The record of recently accepted commands is bounded in size and in time:
// a command that fell out of it, and that the log has not consumed, is
// unknown.
func TestRecentCommandsAreBounded(t *testing.T) {
	pay := routes()[2]
	t.Run("least recently used dropped first", func(t *testing.T) {
		e := newEnv(t, func(c *gateway.Config) { c.RecentCommands = 2 })
		ids := make([]string, 3)
		for i := range ids {
			var a acceptedBody
			decodeJSON(t, e.post(pay.path, mustJSON(t, pay.valid)), http.StatusAccepted, &a)
			ids[i] = a.CommandID
			if i == 1 {
				// The first used again: the second is now the least recently used.
				decodeJSON(t, e.do(http.MethodGet, "/v1/commands/"+ids[0], "", ""), http.StatusOK, &commands.Outcome{})
			}
		}
		for i, want := range []int{http.StatusOK, http.StatusNotFound, http.StatusOK} {
			if got := e.do(http.MethodGet, "/v1/commands/"+ids[i], "", "").Code; got != want {
				t.Errorf("GET command %d = %d, want %d", i, got, want)
			}
		}
	})
	t.Run("many more commands than entries", func(t *testing.T) {
		// Entries are dropped and their places taken again and again; the
		// record keeps exactly the most recently used ones, each as it was.
		e := newEnv(t, func(c *gateway.Config) { c.RecentCommands = 3 })
		var accepted []acceptedBody
		for i := range 10 {
			var a acceptedBody
			decodeJSON(t, e.post(pay.path, mustJSON(t, pay.valid)), http.StatusAccepted, &a)
			accepted = append(accepted, a)
			if i == 7 {
				// Used again after two newer ones: it stays, they go first.
				decodeJSON(t, e.do(http.MethodGet, "/v1/commands/"+accepted[5].CommandID, "", ""), http.StatusOK, &commands.Outcome{})
			}
		}
		known := map[int]bool{5: true, 8: true, 9: true}
		for i, a := range accepted {
			rec := e.do(http.MethodGet, "/v1/commands/"+a.CommandID, "", "")
			if !known[i] {
				if rec.Code != http.StatusNotFound {
					t.Errorf("GET command %d = %d, want 404: it fell out of the record", i, rec.Code)
				}
				continue
			}
			var o commands.Outcome
			decodeJSON(t, rec, http.StatusOK, &o)
			if o.CommandID != a.CommandID || o.Status != commands.StatusPending || o.Type != (events.PayOrder{}).Name() ||
				"/v1/orders/"+o.AggregateID != a.Links.Resource || o.AcceptedAt.IsZero() {
				t.Errorf("GET command %d = %+v, want the pending %s of %s", i, o, a.CommandID, a.Links.Resource)
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		e := newEnv(t, func(c *gateway.Config) { c.RecentCommandTTL = time.Millisecond })
		var a acceptedBody
		decodeJSON(t, e.post(pay.path, mustJSON(t, pay.valid)), http.StatusAccepted, &a)
		deadline := time.Now().Add(10 * time.Second)
		for e.do(http.MethodGet, "/v1/commands/"+a.CommandID, "", "").Code != http.StatusNotFound {
			if time.Now().After(deadline) {
				t.Fatalf("command %s still known 10 s after a TTL of 1 ms", a.CommandID)
			}
			time.Sleep(time.Millisecond)
		}
		// Once the log consumed it, the command is known again, for good.
		if err := e.feed(e.publishedMessages()[0], events.TopicOrderCommands, "commands"); err != nil {
			t.Fatal(err)
		}
		if got := e.do(http.MethodGet, "/v1/commands/"+a.CommandID, "", "").Code; got != http.StatusOK {
			t.Errorf("GET command after the log consumed it = %d, want 200", got)
		}
	})
	t.Run("negative bounds are refused", func(t *testing.T) {
		e := newEnv(t)
		_, err := gateway.New(gateway.Config{RecentCommands: -1, RecentCommandTTL: -time.Second}, e.deps())
		if err == nil || !strings.Contains(err.Error(), "recent commands") || !strings.Contains(err.Error(), "recent command TTL") {
			t.Errorf("New with negative bounds: %v, want both named", err)
		}
	})
}

// ctxKey marks a request context, standing in for the trace context that
// the telemetry middleware puts there.
type ctxKey struct{}

func TestCommandCarriesRequestContext(t *testing.T) {
	e := newEnv(t)
	ctx := context.WithValue(context.Background(), ctxKey{}, "trace-1")
	rec := e.doContext(ctx, http.MethodPost, "/v1/orders/"+existingOrder+"/cancel", "application/json", `{"reason":"late"}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body: %s", rec.Code, rec.Body)
	}
	msgs := e.publishedMessages()
	if len(msgs) != 1 {
		t.Fatalf("published %d, want 1", len(msgs))
	}
	if got := msgs[0].Context().Value(ctxKey{}); got != "trace-1" {
		t.Errorf("published message context carries %v, want the request's", got)
	}
}

// holdFirst is a publisher whose first Publish waits, once it has started,
// until release is closed.
type holdFirst struct {
	message.Publisher
	once             sync.Once
	started, release chan struct{}
}

func (h *holdFirst) Publish(topic string, msgs ...*message.Message) error {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.started)
		<-h.release
	}
	return h.Publisher.Publish(topic, msgs...)
}

// Two requests with one Idempotency-Key and two bodies at once, on one
// gateway: both are published (neither was known when it looked), and the
// one this gateway records second is refused, as a retry would be.
func TestIdempotencyKeyConcurrentBodies(t *testing.T) {
	e := newEnv(t)
	pub := &holdFirst{Publisher: e.pubsub, started: make(chan struct{}), release: make(chan struct{})}
	deps := e.deps()
	deps.Publisher = pub
	g, err := gateway.New(gateway.Config{}, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.handler = g.Handler()

	slow := make(chan *httptest.ResponseRecorder, 1)
	go func() { slow <- e.post("/v1/users", `{"email":"a@example.com","name":"A"}`, "Idempotency-Key", "k") }()
	<-pub.started
	var fast acceptedBody
	decodeJSON(t, e.post("/v1/users", `{"email":"b@example.com","name":"B"}`, "Idempotency-Key", "k"), http.StatusAccepted, &fast)
	close(pub.release)
	assertProblem(t, <-slow, http.StatusUnprocessableEntity, gateway.ProblemIdempotencyKeyReused)

	msgs := e.publishedMessages()
	if len(msgs) != 2 || msgs[0].UUID != fast.CommandID || msgs[1].UUID != fast.CommandID {
		t.Errorf("published %d messages, want the command %s twice", len(msgs), fast.CommandID)
	}
	// The same body as the accepted one is a retry of it.
	var retry acceptedBody
	decodeJSON(t, e.post("/v1/users", `{"email":"b@example.com","name":"B"}`, "Idempotency-Key", "k"), http.StatusAccepted, &retry)
	if retry != fast {
		t.Errorf("retry answered %+v, want %+v", retry, fast)
	}
}

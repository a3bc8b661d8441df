package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/cloudevents"
)

// FuzzCommand posts arbitrary bodies to every command route: decoding,
// the depth limit, schema validation and typed decoding. The gateway must
// never fail with a 500, must answer only with the statuses of its
// contract, and what it publishes must be a valid command of the route's
// type: its payload decodes into the typed command and passes the schema.
func FuzzCommand(f *testing.F) {
	e := newEnv(f)
	var routes []gateway.RouteRequirement
	for _, r := range gateway.RouteRequirements() {
		if r.Method == http.MethodPost {
			routes = append(routes, r)
		}
	}
	seeds := []string{
		`{"email":"a@example.com","name":"A"}`,
		`{"user_id":"0198d6a4-6f6e-7c3a-9c1e-2f1b8c9d0a11","lines":[{"sku":"SKU-1","quantity":2,"unit_price":"9.99"}]}`,
		`{"amount":"19.98","currency":"EUR"}`,
		`{"reason":"changed my mind"}`,
		`{"carrier":"DHL","tracking_number":"X1"}`,
		`{"quantity":2.0e0,"n":1e400}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"email":"a@example.com","name":"A"} {"again":1}`,
		`{"user_id":1}`,
		"\xff\xfe",
		``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	allowed := map[int]bool{
		http.StatusAccepted: true, http.StatusBadRequest: true, http.StatusRequestEntityTooLarge: true,
		http.StatusUnsupportedMediaType: true, http.StatusUnprocessableEntity: true,
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		before := len(e.publishedMessages())
		rec := e.do(http.MethodPost, concrete(rt.Path), "application/json", string(body))
		if !allowed[rec.Code] {
			t.Fatalf("POST %s %q: status %d: %s", rt.Path, body, rec.Code, rec.Body)
		}
		msgs := e.publishedMessages()[before:]
		if rec.Code != http.StatusAccepted {
			if len(msgs) != 0 {
				t.Fatalf("status %d but %d messages published", rec.Code, len(msgs))
			}
			return
		}
		if len(msgs) != 1 {
			t.Fatalf("202 with %d messages published, want 1", len(msgs))
		}
		msg := msgs[0]
		name := msg.Metadata.Get(cloudevents.Type)
		typ, ok := events.Lookup(name)
		if !ok || typ.Kind != events.KindCommand || gateway.CommandScope(name) != rt.Requirement.Scope {
			t.Fatalf("published %s on route %s %s", name, rt.Method, rt.Path)
		}
		cmd := typ.New()
		if err := json.Unmarshal(msg.Payload, cmd); err != nil {
			t.Fatalf("published payload %s does not decode into %s: %v", msg.Payload, name, err)
		}
		dec := json.NewDecoder(bytes.NewReader(msg.Payload))
		dec.UseNumber()
		var doc any
		if err := dec.Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if err := e.validator.Validate(name, doc); err != nil {
			t.Fatalf("published payload %s breaks the schema of %s: %v", msg.Payload, name, err)
		}
	})
}

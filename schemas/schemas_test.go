package schemas_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/schema"
	"github.com/millrace/millrace/schemas"
)

const (
	orderID   = "6d1f0f0e-2b6c-4d43-9c55-0d1e3f7a9b10"
	userID    = "a3c9e1b2-7d4f-4e8a-b6c5-1f2e3d4c5b6a"
	commandID = "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
)

// samples holds one realistic value of every command and event, keyed by
// wire name. A new type in events.Types() needs a sample here, or
// TestSamplesMatchTheirSchemas fails.
func samples() map[string]events.Message {
	placed := time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC)
	berlin := time.FixedZone("CET", 60*60)
	return map[string]events.Message{
		"users.register-user.v1": events.RegisterUser{UserID: userID, Email: "ada@example.com", FullName: "Ada Lovelace"},
		"orders.place-order.v1": events.PlaceOrder{
			OrderID: orderID, UserID: userID, Currency: "EUR",
			Lines: []events.OrderLine{
				{SKU: "MUG-01", Quantity: 2, UnitPriceCents: 1250},
				{SKU: "tea.earl_grey-250g", Quantity: 1, UnitPriceCents: 0},
			},
		},
		"orders.pay-order.v1":    events.PayOrder{OrderID: orderID, AmountCents: 2500, PaymentRef: "pi_3OqK2nL8"},
		"orders.cancel-order.v1": events.CancelOrder{OrderID: orderID, Reason: "ordered twice by mistake"},
		"orders.ship-order.v1":   events.ShipOrder{OrderID: orderID, Carrier: "DHL Express"},
		"users.user-registered.v1": events.UserRegistered{
			UserID: userID, Email: "ada@example.com", FullName: "Ada Lovelace", RegisteredAt: placed.Add(-time.Hour),
		},
		"orders.order-placed.v1": events.OrderPlaced{
			OrderID: orderID, UserID: userID, Currency: "EUR", TotalCents: 2500, PlacedAt: placed,
			Lines: []events.PricedLine{
				{SKU: "MUG-01", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500},
				{SKU: "tea.earl_grey-250g", Quantity: 1, UnitPriceCents: 0, LineTotalCents: 0},
			},
		},
		"orders.order-placed.v2": events.OrderPlacedV2{
			OrderID: orderID, UserID: userID, Currency: "EUR", TotalCents: 2500, ItemCount: 3, PlacedAt: placed,
			Lines: []events.PricedLine{
				{SKU: "MUG-01", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500},
				{SKU: "tea.earl_grey-250g", Quantity: 1, UnitPriceCents: 0, LineTotalCents: 0},
			},
		},
		"orders.order-paid.v1": events.OrderPaid{
			OrderID: orderID, UserID: userID, AmountCents: 2500, Currency: "EUR", PaymentRef: "pi_3OqK2nL8",
			PaidAt: placed.Add(time.Minute).In(berlin),
		},
		"orders.order-cancelled.v1": events.OrderCancelled{
			OrderID: orderID, UserID: userID, Reason: "ordered twice by mistake", WasPaid: true, TotalCents: 2500,
			CancelledAt: placed.Add(2 * time.Hour),
		},
		"orders.order-shipped.v1": events.OrderShipped{
			OrderID: orderID, UserID: userID, Carrier: "DHL Express", ShippedAt: placed.Add(24 * time.Hour),
		},
		"orders.sweep-unpaid-orders.v1": events.SweepUnpaidOrders{PlacedBefore: placed.Add(-30 * time.Minute), Limit: 500},
		"orders.unpaid-orders-swept.v1": events.UnpaidOrdersSwept{
			SweepID: commandID, PlacedBefore: placed.Add(-30 * time.Minute), OrderIDs: []string{orderID}, SweptAt: placed,
		},
		"orders.expire-order.v1":    events.ExpireOrder{OrderID: orderID, PlacedBefore: placed.Add(-30 * time.Minute), SweepID: commandID},
		"orders.close-sales-day.v1": events.CloseSalesDay{Date: "2025-03-13"},
		"orders.sales-day-closed.v1": events.SalesDayClosed{Date: "2025-03-13", ClosedAt: placed, Currencies: []events.DaySales{
			{Currency: "EUR", OrdersPaid: 3, GrossCents: 7500, OrdersRefunded: 1, RefundedCents: 2500, NetCents: 5000},
		}},
		"jobs.job-fired.v1": events.JobFired{
			Job: "close-unpaid-orders", RunID: commandID, Trigger: "schedule", ScheduledAt: placed.Truncate(time.Minute),
			FiredAt: placed, RunFiredAt: placed, Attempt: 1, CommandID: commandID, CommandType: "orders.sweep-unpaid-orders.v1",
			Instance: "worker-1:4242",
		},
		"jobs.job-finished.v1": events.JobFinished{
			Job: "close-unpaid-orders", RunID: commandID, Trigger: "misfire", ScheduledAt: placed.Truncate(time.Minute),
			FiredAt: placed, FinishedAt: placed.Add(time.Second), Attempts: 2, CommandID: orderID,
			CommandType: "orders.sweep-unpaid-orders.v1", Outcome: "rejected", Code: "invalid_command",
			Reason: "placed_before is in the future", Instance: "worker-1:4242",
		},
		"jobs.job-skipped.v1": events.JobSkipped{
			Job: "daily-sales-report", RunID: commandID, Trigger: "misfire", ScheduledAt: placed.Add(-48 * time.Hour),
			LastScheduledAt: placed.Add(-24 * time.Hour), Missed: 2, Reason: "missed while no scheduler led",
			SkippedAt: placed, Instance: "worker-1:4242",
		},
		"millrace.command-rejected.v1": events.CommandRejected{
			CommandID: commandID, CommandType: "orders.pay-order.v1", AggregateID: orderID,
			Code: "amount_mismatch", Reason: "the amount paid (2400) is not the order total (2500)",
			RejectedAt: placed.Add(3 * time.Minute),
		},
	}
}

func newValidator(t *testing.T) *schema.Validator {
	t.Helper()
	v, err := schema.New(schemas.FS())
	if err != nil {
		t.Fatalf("compile the embedded schemas: %v", err)
	}
	return v
}

// rawSchemas decodes every embedded schema file, keyed by wire name.
func rawSchemas(t *testing.T) map[string]map[string]any {
	t.Helper()
	entries, err := fs.ReadDir(schemas.FS(), ".")
	if err != nil {
		t.Fatalf("list embedded schemas: %v", err)
	}
	out := map[string]map[string]any{}
	for _, e := range entries {
		data, err := fs.ReadFile(schemas.FS(), e.Name())
		if err != nil {
			t.Fatalf("read %s: %v", e.Name(), err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("parse %s: %v", e.Name(), err)
		}
		out[strings.TrimSuffix(e.Name(), ".json")] = doc
	}
	return out
}

func wireNames() []string {
	var names []string
	for _, typ := range events.Types() {
		names = append(names, typ.Name)
	}
	return names
}

func TestEveryTypeHasASchemaAndEverySchemaAType(t *testing.T) {
	entries, err := fs.ReadDir(schemas.FS(), ".")
	if err != nil {
		t.Fatalf("list embedded schemas: %v", err)
	}
	files := map[string]bool{}
	for _, e := range entries {
		files[e.Name()] = true
	}

	for _, name := range wireNames() {
		if !files[name+".json"] {
			t.Errorf("events type %s has no schema: add schemas/%s.json", name, name)
		}
	}
	for file := range files {
		name, ok := strings.CutSuffix(file, ".json")
		if !ok {
			t.Errorf("schemas/%s is not a .json schema file", file)
			continue
		}
		if _, ok := events.Lookup(name); !ok {
			t.Errorf("schemas/%s describes no type in events.Types(): remove it or add the type", file)
		}
	}

	v := newValidator(t)
	if got, want := v.Names(), slices.Sorted(slices.Values(wireNames())); !slices.Equal(got, want) {
		t.Errorf("compiled schemas %q, want one per type %q", got, want)
	}
}

func TestSchemaHeaders(t *testing.T) {
	for name, doc := range rawSchemas(t) {
		t.Run(name, func(t *testing.T) {
			want := map[string]any{
				"$schema":              "https://json-schema.org/draft/2020-12/schema",
				"$id":                  "https://millrace.dev/schemas/" + name + ".json",
				"type":                 "object",
				"additionalProperties": false,
			}
			for key, val := range want {
				if doc[key] != val {
					t.Errorf("%s = %v, want %v", key, doc[key], val)
				}
			}
			for _, key := range []string{"title", "description"} {
				if s, _ := doc[key].(string); strings.TrimSpace(s) == "" {
					t.Errorf("%s is missing or empty", key)
				}
			}
		})
	}
}

func TestSamplesMatchTheirSchemas(t *testing.T) {
	v := newValidator(t)
	all := samples()

	for _, typ := range events.Types() {
		t.Run(typ.Name, func(t *testing.T) {
			sample, ok := all[typ.Name]
			if !ok {
				t.Fatalf("no sample for %s: add one to samples()", typ.Name)
			}
			if sample.Name() != typ.Name {
				t.Fatalf("sample under %s is a %s", typ.Name, sample.Name())
			}
			data, err := json.Marshal(sample)
			if err != nil {
				t.Fatalf("marshal sample: %v", err)
			}
			if err := v.ValidateJSON(typ.Name, data); err != nil {
				t.Errorf("sample %s refused: %v", data, err)
			}
		})
	}
	for name := range all {
		if _, ok := events.Lookup(name); !ok {
			t.Errorf("samples() has %s, which is not in events.Types()", name)
		}
	}
}

// field is what the drift test knows of one JSON property, from either side.
type field struct {
	jsonType string // string, integer, number, boolean, array, object
	format   string // date-time for time.Time
	required bool
}

var timeType = reflect.TypeFor[time.Time]()

// goFields lists the JSON properties a Go type marshals to, recursively, keyed
// by path ("lines[].sku"). It reports Go types it cannot map.
func goFields(t *testing.T, typ reflect.Type, prefix string, out map[string]field) {
	t.Helper()
	for i := range typ.NumField() {
		sf := typ.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			goFields(t, sf.Type, prefix, out) // embedded: its fields are promoted
			continue
		}
		if name == "" {
			name = sf.Name
		}
		omitempty := slices.Contains(strings.Split(opts, ","), "omitempty") ||
			slices.Contains(strings.Split(opts, ","), "omitzero")
		addGoField(t, sf.Type, prefix+name, !omitempty, out)
	}
}

func addGoField(t *testing.T, typ reflect.Type, path string, required bool, out map[string]field) {
	t.Helper()
	f := field{required: required}
	switch {
	case typ == timeType:
		f.jsonType, f.format = "string", "date-time"
	case typ.Kind() == reflect.String:
		f.jsonType = "string"
	case typ.Kind() == reflect.Bool:
		f.jsonType = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		f.jsonType = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		f.jsonType = "number"
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.String:
		f.jsonType = "array" // of strings: schemaFields checks the items' type
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct && typ.Elem() != timeType:
		f.jsonType = "array"
		goFields(t, typ.Elem(), path+"[].", out)
	case typ.Kind() == reflect.Struct:
		f.jsonType = "object"
		goFields(t, typ, path+".", out)
	default:
		t.Errorf("%s: the drift test cannot map Go type %s to JSON; extend goFields", path, typ)
	}
	out[path] = f
}

// schemaFields lists the properties a schema declares, recursively, keyed by
// the same paths as goFields.
func schemaFields(t *testing.T, node map[string]any, prefix string, out map[string]field) {
	t.Helper()
	if _, ok := node["$ref"]; ok {
		t.Errorf("%s: the drift test does not follow $ref; extend schemaFields", prefix)
	}
	props, _ := node["properties"].(map[string]any)
	required := map[string]bool{}
	for _, r := range node["required"].([]any) {
		required[r.(string)] = true
	}
	for name, p := range props {
		prop := p.(map[string]any)
		path := prefix + name
		typ, _ := prop["type"].(string)
		format, _ := prop["format"].(string)
		out[path] = field{jsonType: typ, format: format, required: required[name]}
		switch typ {
		case "object":
			schemaFields(t, prop, path+".", out)
		case "array":
			items, _ := prop["items"].(map[string]any)
			if items["type"] == "string" {
				continue // an array of strings has no properties
			}
			if items["type"] != "object" {
				t.Errorf("%s: the drift test only knows arrays of objects; extend schemaFields", path)
				continue
			}
			schemaFields(t, items, path+"[].", out)
		}
	}
	for name := range required {
		if _, ok := props[name]; !ok {
			t.Errorf("%srequired lists %q, which is not a property", prefix, name)
		}
	}
}

func TestGoFieldsMatchSchemaProperties(t *testing.T) {
	raw := rawSchemas(t)
	for _, typ := range events.Types() {
		t.Run(typ.Name, func(t *testing.T) {
			doc, ok := raw[typ.Name]
			if !ok {
				t.Fatalf("no schema for %s", typ.Name)
			}
			goType := reflect.TypeOf(typ.New()).Elem()

			inGo, inSchema := map[string]field{}, map[string]field{}
			goFields(t, goType, "", inGo)
			schemaFields(t, doc, "", inSchema)

			for _, path := range slices.Sorted(maps.Keys(inGo)) {
				g := inGo[path]
				s, ok := inSchema[path]
				if !ok {
					t.Errorf("%s.%s: field of the Go type is not a property of the schema", goType.Name(), path)
					continue
				}
				if g.jsonType != s.jsonType {
					t.Errorf("%s: Go marshals a JSON %s, schema says %q", path, g.jsonType, s.jsonType)
				}
				if g.format != "" && g.format != s.format {
					t.Errorf("%s: Go marshals format %s, schema says %q", path, g.format, s.format)
				}
				if g.required != s.required {
					t.Errorf("%s: Go always sets it = %v, schema requires it = %v", path, g.required, s.required)
				}
			}
			for _, path := range slices.Sorted(maps.Keys(inSchema)) {
				if _, ok := inGo[path]; !ok {
					t.Errorf("%s: property of the schema is not a field of Go type %s", path, goType.Name())
				}
			}
		})
	}
}

func TestInvalidSamplesAreRefused(t *testing.T) {
	v := newValidator(t)
	all := samples()

	tests := []struct {
		name   string
		typ    string
		change func(doc map[string]any)
		field  string
		rule   string
	}{
		{"missing user_id", "orders.place-order.v1", func(d map[string]any) { delete(d, "user_id") }, "/user_id", "required"},
		{"quantity 0", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["quantity"] = 0 }, "/lines/0/quantity", "minimum"},
		{"quantity above 10000", "orders.place-order.v1", func(d map[string]any) { line(d, 1)["quantity"] = 10001 }, "/lines/1/quantity", "maximum"},
		{"negative unit price", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["unit_price_cents"] = -1 }, "/lines/0/unit_price_cents", "minimum"},
		{"quantity as a string", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["quantity"] = "2" }, "/lines/0/quantity", "type"},
		{"fractional quantity", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["quantity"] = 1.5 }, "/lines/0/quantity", "type"},
		{"unknown property", "orders.place-order.v1", func(d map[string]any) { d["total_cents"] = 2500 }, "/total_cents", "additionalProperties"},
		{"unknown property in a line", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["discount"] = 5 }, "/lines/0/discount", "additionalProperties"},
		{"empty lines", "orders.place-order.v1", func(d map[string]any) { d["lines"] = []any{} }, "/lines", "minItems"},
		{"101 lines", "orders.place-order.v1", func(d map[string]any) { d["lines"] = slices.Repeat([]any{line(d, 0)}, 101) }, "/lines", "maxItems"},
		{"bad uuid", "orders.place-order.v1", func(d map[string]any) { d["order_id"] = "6d1f0f0e-2b6c-4d43-9c55" }, "/order_id", "format"},
		{"lower-case currency", "orders.place-order.v1", func(d map[string]any) { d["currency"] = "eur" }, "/currency", "pattern"},
		{"sku with a space", "orders.place-order.v1", func(d map[string]any) { line(d, 0)["sku"] = "MUG 01" }, "/lines/0/sku", "pattern"},
		{"bad email", "users.register-user.v1", func(d map[string]any) { d["email"] = "ada@" }, "/email", "format"},
		{"empty name", "users.register-user.v1", func(d map[string]any) { d["name"] = "" }, "/name", "minLength"},
		{"name of 201 characters", "users.register-user.v1", func(d map[string]any) { d["name"] = strings.Repeat("é", 201) }, "/name", "maxLength"},
		{"user id as a number", "users.register-user.v1", func(d map[string]any) { d["user_id"] = 42 }, "/user_id", "type"},
		{"amount 0", "orders.pay-order.v1", func(d map[string]any) { d["amount_cents"] = 0 }, "/amount_cents", "minimum"},
		{"empty payment ref", "orders.pay-order.v1", func(d map[string]any) { d["payment_ref"] = "" }, "/payment_ref", "minLength"},
		{"empty reason", "orders.cancel-order.v1", func(d map[string]any) { d["reason"] = "" }, "/reason", "minLength"},
		{"reason of 501 characters", "orders.cancel-order.v1", func(d map[string]any) { d["reason"] = strings.Repeat("x", 501) }, "/reason", "maxLength"},
		{"missing carrier", "orders.ship-order.v1", func(d map[string]any) { delete(d, "carrier") }, "/carrier", "required"},
		{"bad date-time", "orders.order-placed.v1", func(d map[string]any) { d["placed_at"] = "2025-03-14 09:26:53" }, "/placed_at", "format"},
		{"v2 without item_count", "orders.order-placed.v2", func(d map[string]any) { delete(d, "item_count") }, "/item_count", "required"},
		{"v2 with no items", "orders.order-placed.v2", func(d map[string]any) { d["item_count"] = 0 }, "/item_count", "minimum"},
		{"v1 with item_count", "orders.order-placed.v1", func(d map[string]any) { d["item_count"] = 3 }, "/item_count", "additionalProperties"},
		{"was_paid as a string", "orders.order-cancelled.v1", func(d map[string]any) { d["was_paid"] = "true" }, "/was_paid", "type"},
		{"command type not a wire name", "millrace.command-rejected.v1", func(d map[string]any) { d["command_type"] = "PayOrder" }, "/command_type", "pattern"},
		{"code with spaces", "millrace.command-rejected.v1", func(d map[string]any) { d["code"] = "amount mismatch" }, "/code", "pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sample, ok := all[tt.typ]
			if !ok {
				t.Fatalf("no sample for %s", tt.typ)
			}
			doc := decode(t, sample)
			tt.change(doc)
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatalf("marshal changed sample: %v", err)
			}

			err = v.ValidateJSON(tt.typ, data)

			verr, ok := err.(*schema.ValidationError)
			if !ok {
				t.Fatalf("ValidateJSON(%s) = %v, want a *schema.ValidationError", data, err)
			}
			if len(verr.Violations) != 1 {
				t.Fatalf("got %d violations %+v, want one", len(verr.Violations), verr.Violations)
			}
			if got := verr.Violations[0]; got.Field != tt.field || got.Rule != tt.rule || got.Message == "" {
				t.Errorf("violation %+v, want field %q rule %q and a message", got, tt.field, tt.rule)
			}
		})
	}
}

// decode turns a sample into the generic form a client would send.
func decode(t *testing.T, m events.Message) map[string]any {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %s: %v", m.Name(), err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode %s: %v", m.Name(), err)
	}
	return doc
}

func line(doc map[string]any, i int) map[string]any {
	return doc["lines"].([]any)[i].(map[string]any)
}

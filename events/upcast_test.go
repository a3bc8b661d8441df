package events_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
)

func TestUpcast(t *testing.T) {
	at := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	lines := []events.PricedLine{
		{SKU: "MUG-01", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500},
		{SKU: "TEA-01", Quantity: 3, UnitPriceCents: 100, LineTotalCents: 300},
	}
	v1 := events.OrderPlaced{OrderID: "o-1", UserID: "u-1", Lines: lines, TotalCents: 2800, Currency: "EUR", PlacedAt: at}
	v2 := &events.OrderPlacedV2{OrderID: "o-1", UserID: "u-1", Lines: lines, ItemCount: 5, TotalCents: 2800, Currency: "EUR", PlacedAt: at}
	paid := &events.OrderPaid{OrderID: "o-1", AmountCents: 2800}

	tests := []struct {
		name string
		in   events.Message
		want events.Message
	}{
		{"a v1 pointer becomes v2 with the item count of its lines", &v1, v2},
		{"a v1 value becomes a v2 pointer", v1, v2},
		{"a v1 without lines counts no items", &events.OrderPlaced{OrderID: "o-2"}, &events.OrderPlacedV2{OrderID: "o-2", ItemCount: 0}},
		{"the current version is returned as it is", v2, v2},
		{"an event with one version only is returned as it is", paid, paid},
		{"a command is returned as it is", events.PlaceOrder{OrderID: "o-1"}, events.PlaceOrder{OrderID: "o-1"}},
		{"nil stays nil", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := events.Upcast(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Upcast(%#v) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

// TestUpcastFromTheWire decodes a v1 payload as a consumer does, then
// upcasts it: the v2 event carries everything v1 had.
func TestUpcastFromTheWire(t *testing.T) {
	payload := `{"order_id":"o-1","user_id":"u-1","lines":[{"sku":"A","quantity":4,"unit_price_cents":50,"line_total_cents":200}],` +
		`"total_cents":200,"currency":"USD","placed_at":"2025-01-02T03:04:05Z"}`
	typ, ok := events.Lookup("orders.order-placed.v1")
	if !ok {
		t.Fatal("orders.order-placed.v1 is not a known type")
	}
	old := typ.New()
	if err := json.Unmarshal([]byte(payload), old); err != nil {
		t.Fatalf("decode v1: %v", err)
	}
	cur, ok := events.Upcast(old).(*events.OrderPlacedV2)
	if !ok {
		t.Fatalf("Upcast gave %T, want *events.OrderPlacedV2", events.Upcast(old))
	}
	if cur.ItemCount != 4 || cur.TotalCents != 200 || cur.Currency != "USD" || len(cur.Lines) != 1 ||
		!cur.PlacedAt.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("upcast event = %+v", cur)
	}
}

func TestCurrentName(t *testing.T) {
	for in, want := range map[string]string{
		"orders.order-placed.v1": "orders.order-placed.v2",
		"orders.order-placed.v2": "orders.order-placed.v2",
		"orders.order-paid.v1":   "orders.order-paid.v1",
		"no.such-type.v7":        "no.such-type.v7",
	} {
		if got := events.CurrentName(in); got != want {
			t.Errorf("CurrentName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestUpcastersChainKnownTypes keeps the upcaster table honest: every step
// goes between two known event types of the same topic, and converts a
// zero event of its From type into its To type.
func TestUpcastersChainKnownTypes(t *testing.T) {
	for _, u := range events.Upcasters() {
		t.Run(u.From, func(t *testing.T) {
			from, okFrom := events.Lookup(u.From)
			to, okTo := events.Lookup(u.To)
			if !okFrom || !okTo {
				t.Fatalf("upcaster %s -> %s names an unknown type", u.From, u.To)
			}
			if from.Kind != events.KindEvent || to.Kind != events.KindEvent || from.Topic != to.Topic {
				t.Errorf("upcaster %s -> %s: both must be events of one topic, got %+v and %+v", u.From, u.To, from, to)
			}
			if got := u.Up(from.New()); got == nil || got.Name() != u.To {
				t.Errorf("Up(zero %s) = %v, want a %s", u.From, got, u.To)
			}
		})
	}
}

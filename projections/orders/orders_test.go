package orders_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// fixture runs the orders projection over a fresh database.
type fixture struct {
	t      *testing.T
	p      *orders.Projection
	runner *projections.Runner
	log    projectiontest.Log
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := projectiontest.OpenDB(t)
	p := orders.New(db)
	r, err := projections.NewRunner(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	return &fixture{t: t, p: p, runner: r}
}

// publish delivers events to the projection, each at the next offset of its topic.
func (f *fixture) publish(msgs ...events.Message) {
	f.t.Helper()
	for _, m := range msgs {
		topic := events.TopicOrderEvents
		if _, ok := m.(events.UserRegistered); ok {
			topic = events.TopicUserEvents
		}
		if err := f.runner.Handle(f.log.Append(projectiontest.Message(f.t, m), topic, 0)); err != nil {
			f.t.Fatalf("handle %s: %v", m.Name(), err)
		}
	}
}

func (f *fixture) order(id string) orders.Order {
	f.t.Helper()
	o, err := f.p.Order(context.Background(), id)
	if err != nil {
		f.t.Fatalf("Order(%s): %v", id, err)
	}
	return o
}

func registered(userID string) events.UserRegistered {
	return events.UserRegistered{UserID: userID, Email: userID + "@example.com", FullName: "A User", RegisteredAt: t0.Add(-time.Hour)}
}

func placed(orderID, userID string, at time.Time) events.OrderPlaced {
	return events.OrderPlaced{
		OrderID: orderID, UserID: userID, Currency: "EUR", TotalCents: 2500, PlacedAt: at,
		Lines: []events.PricedLine{
			{SKU: "tea", Quantity: 2, UnitPriceCents: 1000, LineTotalCents: 2000},
			{SKU: "cup", Quantity: 1, UnitPriceCents: 500, LineTotalCents: 500},
		},
	}
}

func ptr(t time.Time) *time.Time { return &t }

func TestOrderLifecycle(t *testing.T) {
	paidAt, shippedAt, cancelledAt := t0.Add(time.Minute), t0.Add(time.Hour), t0.Add(2*time.Minute)
	base := orders.Order{
		OrderID: "o-1", UserID: "u-1", TotalCents: 2500, Currency: "EUR", PlacedAt: t0,
		Lines: placed("o-1", "u-1", t0).Lines,
	}
	with := func(change func(*orders.Order)) orders.Order {
		o := base
		change(&o)
		return o
	}
	tests := []struct {
		name   string
		events []events.Message
		want   orders.Order
	}{
		{
			name:   "placed",
			events: []events.Message{placed("o-1", "u-1", t0)},
			want:   with(func(o *orders.Order) { o.Status = "placed"; o.UpdatedAt = t0 }),
		},
		{
			name: "placed, paid, shipped",
			events: []events.Message{
				placed("o-1", "u-1", t0),
				events.OrderPaid{OrderID: "o-1", UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaymentRef: "pay-1", PaidAt: paidAt},
				events.OrderShipped{OrderID: "o-1", UserID: "u-1", Carrier: "DHL", ShippedAt: shippedAt},
			},
			want: with(func(o *orders.Order) {
				o.Status = "shipped"
				o.PaidAt, o.ShippedAt, o.Carrier = ptr(paidAt), ptr(shippedAt), "DHL"
				o.UpdatedAt = shippedAt
			}),
		},
		{
			name: "placed, cancelled",
			events: []events.Message{
				placed("o-1", "u-1", t0),
				events.OrderCancelled{OrderID: "o-1", UserID: "u-1", Reason: "changed my mind", TotalCents: 2500, CancelledAt: cancelledAt},
			},
			want: with(func(o *orders.Order) {
				o.Status = "cancelled"
				o.CancelledAt, o.CancelReason = ptr(cancelledAt), "changed my mind"
				o.UpdatedAt = cancelledAt
			}),
		},
		{
			name: "placed, paid, cancelled",
			events: []events.Message{
				placed("o-1", "u-1", t0),
				events.OrderPaid{OrderID: "o-1", UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaidAt: paidAt},
				events.OrderCancelled{OrderID: "o-1", UserID: "u-1", Reason: "out of stock", WasPaid: true, TotalCents: 2500, CancelledAt: cancelledAt},
			},
			want: with(func(o *orders.Order) {
				o.Status = "cancelled"
				o.PaidAt, o.CancelledAt, o.CancelReason = ptr(paidAt), ptr(cancelledAt), "out of stock"
				o.UpdatedAt = cancelledAt
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.publish(registered("u-1"))
			f.publish(tt.events...)
			if got := f.order("o-1"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("order = %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}

func TestOrderJSON(t *testing.T) {
	f := newFixture(t)
	f.publish(placed("o-1", "u-1", t0))
	b, err := json.Marshal(f.order("o-1"))
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	want := `{"order_id":"o-1","user_id":"u-1","status":"placed","lines":[` +
		`{"sku":"tea","quantity":2,"unit_price_cents":1000,"line_total_cents":2000},` +
		`{"sku":"cup","quantity":1,"unit_price_cents":500,"line_total_cents":500}],` +
		`"total_cents":2500,"currency":"EUR","placed_at":"2025-03-01T10:00:00Z","updated_at":"2025-03-01T10:00:00Z"}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
}

func TestUserOrders(t *testing.T) {
	f := newFixture(t)
	f.publish(registered("u-1"), registered("u-2"), registered("u-3"))
	f.publish(
		placed("o-old", "u-1", t0),
		placed("o-new", "u-1", t0.Add(48*time.Hour)),
		placed("o-mid", "u-1", t0.Add(24*time.Hour)),
		placed("o-other", "u-2", t0.Add(time.Hour)),
		events.OrderPaid{OrderID: "o-mid", UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaidAt: t0.Add(25 * time.Hour)},
	)

	tests := []struct {
		name    string
		user    string
		want    []orders.Summary
		wantErr error
	}{
		{
			name: "newest first, with current status",
			user: "u-1",
			want: []orders.Summary{
				{OrderID: "o-new", Status: "placed", TotalCents: 2500, Currency: "EUR", PlacedAt: t0.Add(48 * time.Hour)},
				{OrderID: "o-mid", Status: "paid", TotalCents: 2500, Currency: "EUR", PlacedAt: t0.Add(24 * time.Hour)},
				{OrderID: "o-old", Status: "placed", TotalCents: 2500, Currency: "EUR", PlacedAt: t0},
			},
		},
		{
			name: "only the user's own",
			user: "u-2",
			want: []orders.Summary{{OrderID: "o-other", Status: "placed", TotalCents: 2500, Currency: "EUR", PlacedAt: t0.Add(time.Hour)}},
		},
		{name: "a user without orders", user: "u-3", want: []orders.Summary{}},
		{name: "an unknown user", user: "u-404", wantErr: orders.ErrUserNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.p.UserOrders(context.Background(), tt.user)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("UserOrders error = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("UserOrders = %+v\nwant         %+v", got, tt.want)
			}
			if tt.wantErr == nil && got == nil {
				t.Error("UserOrders = nil, want a non-nil slice")
			}
		})
	}
}

func TestOrderNotFound(t *testing.T) {
	f := newFixture(t)
	f.publish(placed("o-1", "u-1", t0))
	// An event about an order never placed changes nothing and creates nothing.
	f.publish(events.OrderShipped{OrderID: "o-ghost", Carrier: "DHL", ShippedAt: t0})
	for _, id := range []string{"o-404", "o-ghost"} {
		t.Run(id, func(t *testing.T) {
			_, err := f.p.Order(context.Background(), id)
			if !errors.Is(err, orders.ErrNotFound) {
				t.Errorf("Order(%s) error = %v, want ErrNotFound", id, err)
			}
		})
	}
}

func TestProjectionIdentity(t *testing.T) {
	p := orders.New(nil)
	if p.Name() != "orders" {
		t.Errorf("Name = %q, want orders", p.Name())
	}
	if want := []string{events.TopicUserEvents, events.TopicOrderEvents}; !reflect.DeepEqual(p.Topics(), want) {
		t.Errorf("Topics = %v, want %v", p.Topics(), want)
	}
}

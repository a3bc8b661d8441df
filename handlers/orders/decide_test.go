package orders_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/orders"
)

const (
	orderID   = "7f3c2a10-0000-4000-8000-000000000001"
	userID    = "u-1"
	commandID = "cmd-1"
)

var (
	placedAt    = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	paidAt      = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	cancelledAt = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	shippedAt   = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	now         = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

var lines = []events.PricedLine{
	{SKU: "book", Quantity: 2, UnitPriceCents: 1250, LineTotalCents: 2500},
	{SKU: "pen", Quantity: 1, UnitPriceCents: 199, LineTotalCents: 199},
}

func placed() *orders.Order {
	return &orders.Order{
		ID: orderID, UserID: userID, Lines: append([]events.PricedLine(nil), lines...),
		TotalCents: 2699, Currency: "EUR", Status: orders.StatusPlaced, PlacedAt: placedAt,
	}
}

func paid() *orders.Order {
	o := placed()
	o.Status, o.PaymentRef, o.PaidAt = orders.StatusPaid, "pay-1", paidAt
	return o
}

func cancelled(wasPaid bool) *orders.Order {
	o := placed()
	if wasPaid {
		o = paid()
	}
	o.Status, o.CancelReason, o.CancelledAt = orders.StatusCancelled, "changed my mind", cancelledAt
	return o
}

func shipped() *orders.Order {
	o := paid()
	o.Status, o.Carrier, o.ShippedAt = orders.StatusShipped, "DHL", shippedAt
	return o
}

func placeOrder() events.PlaceOrder {
	return events.PlaceOrder{
		OrderID: orderID, UserID: userID, Currency: "EUR",
		Lines: []events.OrderLine{{SKU: "book", Quantity: 2, UnitPriceCents: 1250}, {SKU: "pen", Quantity: 1, UnitPriceCents: 199}},
	}
}

func placeWith(change func(*events.PlaceOrder)) events.PlaceOrder {
	c := placeOrder()
	change(&c)
	return c
}

func TestDecideAccepts(t *testing.T) {
	cases := []struct {
		name    string
		current *orders.Order
		cmd     events.Message
		want    *orders.Order
		event   events.Message
	}{
		{
			name: "place order computes line totals and the total",
			cmd:  placeOrder(),
			want: &orders.Order{ID: orderID, UserID: userID, Lines: lines, TotalCents: 2699, Currency: "EUR",
				Status: orders.StatusPlaced, PlacedAt: now},
			event: events.OrderPlacedV2{OrderID: orderID, UserID: userID, Lines: lines, ItemCount: 3, TotalCents: 2699, Currency: "EUR", PlacedAt: now},
		},
		{
			name: "place order without currency is in EUR",
			cmd: placeWith(func(c *events.PlaceOrder) {
				c.Currency = ""
				c.Lines = c.Lines[:1]
			}),
			want: &orders.Order{ID: orderID, UserID: userID, Lines: lines[:1], TotalCents: 2500, Currency: "EUR",
				Status: orders.StatusPlaced, PlacedAt: now},
			event: events.OrderPlacedV2{OrderID: orderID, UserID: userID, Lines: lines[:1], ItemCount: 2, TotalCents: 2500, Currency: "EUR", PlacedAt: now},
		},
		{
			name: "place order of free items in another currency",
			cmd: placeWith(func(c *events.PlaceOrder) {
				c.Currency = "USD"
				c.Lines = []events.OrderLine{{SKU: "sample", Quantity: 3, UnitPriceCents: 0}}
			}),
			want: &orders.Order{ID: orderID, UserID: userID, Lines: []events.PricedLine{{SKU: "sample", Quantity: 3}},
				Currency: "USD", Status: orders.StatusPlaced, PlacedAt: now},
			event: events.OrderPlacedV2{OrderID: orderID, UserID: userID, Lines: []events.PricedLine{{SKU: "sample", Quantity: 3}},
				ItemCount: 3, Currency: "USD", PlacedAt: now},
		},
		{
			name: "place order by pointer, as the cqrs handler receives it",
			cmd:  func() events.Message { c := placeOrder(); return &c }(),
			want: &orders.Order{ID: orderID, UserID: userID, Lines: lines, TotalCents: 2699, Currency: "EUR",
				Status: orders.StatusPlaced, PlacedAt: now},
			event: events.OrderPlacedV2{OrderID: orderID, UserID: userID, Lines: lines, ItemCount: 3, TotalCents: 2699, Currency: "EUR", PlacedAt: now},
		},
		{
			name: "place order at exactly the maximum total",
			cmd: placeWith(func(c *events.PlaceOrder) {
				c.Lines = []events.OrderLine{{SKU: "yacht", Quantity: 1000, UnitPriceCents: orders.MaxTotalCents / 1000}}
			}),
			want: &orders.Order{ID: orderID, UserID: userID, Currency: "EUR", Status: orders.StatusPlaced, PlacedAt: now,
				Lines:      []events.PricedLine{{SKU: "yacht", Quantity: 1000, UnitPriceCents: orders.MaxTotalCents / 1000, LineTotalCents: orders.MaxTotalCents}},
				TotalCents: orders.MaxTotalCents},
			event: events.OrderPlacedV2{OrderID: orderID, UserID: userID, Currency: "EUR", PlacedAt: now, ItemCount: 1000,
				Lines:      []events.PricedLine{{SKU: "yacht", Quantity: 1000, UnitPriceCents: orders.MaxTotalCents / 1000, LineTotalCents: orders.MaxTotalCents}},
				TotalCents: orders.MaxTotalCents},
		},
		{
			name:    "pay the exact total",
			current: placed(),
			cmd:     events.PayOrder{OrderID: orderID, AmountCents: 2699, PaymentRef: "pay-9"},
			want: func() *orders.Order {
				o := placed()
				o.Status, o.PaymentRef, o.PaidAt = orders.StatusPaid, "pay-9", now
				return o
			}(),
			event: events.OrderPaid{OrderID: orderID, UserID: userID, AmountCents: 2699, Currency: "EUR", PaymentRef: "pay-9", PaidAt: now},
		},
		{
			name:    "cancel an unpaid order",
			current: placed(),
			cmd:     events.CancelOrder{OrderID: orderID, Reason: "found it cheaper"},
			want: func() *orders.Order {
				o := placed()
				o.Status, o.CancelReason, o.CancelledAt = orders.StatusCancelled, "found it cheaper", now
				return o
			}(),
			event: events.OrderCancelled{OrderID: orderID, UserID: userID, Reason: "found it cheaper", WasPaid: false, TotalCents: 2699, CancelledAt: now},
		},
		{
			name:    "cancel a paid order tells sales to refund",
			current: paid(),
			cmd:     events.CancelOrder{OrderID: orderID, Reason: "late"},
			want: func() *orders.Order {
				o := paid()
				o.Status, o.CancelReason, o.CancelledAt = orders.StatusCancelled, "late", now
				return o
			}(),
			event: events.OrderCancelled{OrderID: orderID, UserID: userID, Reason: "late", WasPaid: true, TotalCents: 2699, CancelledAt: now},
		},
		{
			name:    "ship a paid order",
			current: paid(),
			cmd:     events.ShipOrder{OrderID: orderID, Carrier: "UPS"},
			want: func() *orders.Order {
				o := paid()
				o.Status, o.Carrier, o.ShippedAt = orders.StatusShipped, "UPS", now
				return o
			}(),
			event: events.OrderShipped{OrderID: orderID, UserID: userID, Carrier: "UPS", ShippedAt: now},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, tc.current)
			next, emitted := orders.Decide(tc.current, tc.cmd, true, commandID, now)
			if next == nil || (tc.current != nil && next == tc.current) {
				t.Fatalf("Decide returned %p for current %p, want a new order", next, tc.current)
			}
			if !reflect.DeepEqual(next, tc.want) {
				t.Errorf("next order\n got %+v\nwant %+v", next, tc.want)
			}
			if len(emitted) != 1 || !reflect.DeepEqual(emitted[0], tc.event) {
				t.Errorf("events\n got %+v\nwant [%+v]", emitted, tc.event)
			}
			if after := snapshot(t, tc.current); after != before {
				t.Errorf("Decide changed the current order:\nbefore %s\n after %s", before, after)
			}
		})
	}
}

func TestDecideRejects(t *testing.T) {
	cases := []struct {
		name       string
		current    *orders.Order
		cmd        events.Message
		userExists bool
		code       string
		reason     string
	}{
		// PlaceOrder
		{
			name: "place without order id", cmd: placeWith(func(c *events.PlaceOrder) { c.OrderID = "" }), userExists: true,
			code: events.CodeInvalidCommand, reason: "the order id is missing",
		},
		{
			name: "place without user id", cmd: placeWith(func(c *events.PlaceOrder) { c.UserID = "" }), userExists: true,
			code: events.CodeInvalidCommand, reason: "the user id is missing; say which user places order " + orderID,
		},
		{
			name: "place an order id already used", current: placed(), cmd: placeOrder(), userExists: true,
			code: events.CodeOrderExists, reason: "order " + orderID + " was already placed at 2026-11-20T09:00:00Z; use a new order id for a new order",
		},
		{
			name: "place for an unknown user", cmd: placeOrder(), userExists: false,
			code: events.CodeUnknownUser, reason: "user u-1 is not registered; register the user before placing an order",
		},
		{
			name: "place without lines", cmd: placeWith(func(c *events.PlaceOrder) { c.Lines = nil }), userExists: true,
			code: events.CodeEmptyOrder, reason: "order " + orderID + " has no lines; an order needs at least one line",
		},
		{
			name: "place with zero quantity", userExists: true,
			cmd:  placeWith(func(c *events.PlaceOrder) { c.Lines[1].Quantity = 0 }),
			code: events.CodeInvalidQuantity, reason: "line 2 (pen) has quantity 0; a quantity must be at least 1",
		},
		{
			name: "place with negative quantity", userExists: true,
			cmd:  placeWith(func(c *events.PlaceOrder) { c.Lines[0].Quantity = -3 }),
			code: events.CodeInvalidQuantity, reason: "line 1 (book) has quantity -3; a quantity must be at least 1",
		},
		{
			name: "place with a negative price", userExists: true,
			cmd:  placeWith(func(c *events.PlaceOrder) { c.Lines[1].UnitPriceCents = -5 }),
			code: events.CodeInvalidPrice, reason: "line 2 (pen) has a negative unit price of -0.05 EUR; prices cannot be negative",
		},
		{
			name: "place a line without sku", userExists: true,
			cmd:  placeWith(func(c *events.PlaceOrder) { c.Lines[0].SKU = "" }),
			code: events.CodeInvalidCommand, reason: "line 1 has no sku; every line names the product it orders",
		},
		{
			name: "place in a malformed currency", userExists: true,
			cmd:  placeWith(func(c *events.PlaceOrder) { c.Currency = "euro" }),
			code: events.CodeInvalidCommand, reason: `currency "euro" is not an ISO 4217 code in upper case, such as EUR`,
		},
		{
			name: "place a total one cent above the maximum", userExists: true,
			cmd: placeWith(func(c *events.PlaceOrder) {
				c.Lines = []events.OrderLine{{SKU: "yacht", Quantity: 1, UnitPriceCents: orders.MaxTotalCents}, {SKU: "pen", Quantity: 1, UnitPriceCents: 1}}
			}),
			code: events.CodeInvalidCommand, reason: "the total of order " + orderID + " exceeds the maximum of 10000000000000.00 EUR; split it into smaller orders",
		},
		{
			name: "place a line whose total would overflow int64", userExists: true,
			cmd: placeWith(func(c *events.PlaceOrder) {
				c.Lines = []events.OrderLine{{SKU: "yacht", Quantity: 1 << 40, UnitPriceCents: 1 << 40}}
			}),
			code: events.CodeInvalidCommand, reason: "the total of order " + orderID + " exceeds the maximum of 10000000000000.00 EUR; split it into smaller orders",
		},
		// PayOrder
		{
			name: "pay without order id", cmd: events.PayOrder{AmountCents: 2699},
			code: events.CodeInvalidCommand, reason: "the order id is missing",
		},
		{
			name: "pay an unknown order", cmd: events.PayOrder{OrderID: orderID, AmountCents: 2699},
			code: events.CodeOrderNotFound, reason: "order " + orderID + " does not exist",
		},
		{
			name: "pay a cancelled order", current: cancelled(false), cmd: events.PayOrder{OrderID: orderID, AmountCents: 2699},
			code: events.CodeOrderCancelled, reason: "order " + orderID + " was cancelled at 2026-11-22T09:00:00Z and cannot be paid",
		},
		{
			name: "pay a paid order", current: paid(), cmd: events.PayOrder{OrderID: orderID, AmountCents: 2699},
			code: events.CodeOrderAlreadyPaid, reason: "order " + orderID + " was already paid at 2026-11-21T09:00:00Z",
		},
		{
			name: "pay a shipped order", current: shipped(), cmd: events.PayOrder{OrderID: orderID, AmountCents: 2699},
			code: events.CodeOrderAlreadyPaid, reason: "order " + orderID + " was already paid at 2026-11-21T09:00:00Z",
		},
		{
			name: "pay less than the total", current: placed(), cmd: events.PayOrder{OrderID: orderID, AmountCents: 2698},
			code:   events.CodeAmountMismatch,
			reason: "a payment of 26.98 EUR does not match the total of order " + orderID + ", 26.99 EUR; pay the total exactly",
		},
		{
			name: "pay more than the total", current: placed(), cmd: events.PayOrder{OrderID: orderID, AmountCents: 5000},
			code:   events.CodeAmountMismatch,
			reason: "a payment of 50.00 EUR does not match the total of order " + orderID + ", 26.99 EUR; pay the total exactly",
		},
		// CancelOrder
		{
			name: "cancel without order id", cmd: events.CancelOrder{},
			code: events.CodeInvalidCommand, reason: "the order id is missing",
		},
		{
			name: "cancel an unknown order", cmd: events.CancelOrder{OrderID: orderID},
			code: events.CodeOrderNotFound, reason: "order " + orderID + " does not exist",
		},
		{
			name: "cancel a cancelled order", current: cancelled(true), cmd: events.CancelOrder{OrderID: orderID},
			code: events.CodeOrderCancelled, reason: "order " + orderID + " was already cancelled at 2026-11-22T09:00:00Z",
		},
		{
			name: "cancel a shipped order", current: shipped(), cmd: events.CancelOrder{OrderID: orderID},
			code: events.CodeOrderShipped, reason: "order " + orderID + " was shipped at 2026-11-23T09:00:00Z and can no longer be cancelled",
		},
		// ShipOrder
		{
			name: "ship without order id", cmd: events.ShipOrder{Carrier: "DHL"},
			code: events.CodeInvalidCommand, reason: "the order id is missing",
		},
		{
			name: "ship an unknown order", cmd: events.ShipOrder{OrderID: orderID},
			code: events.CodeOrderNotFound, reason: "order " + orderID + " does not exist",
		},
		{
			name: "ship a cancelled order", current: cancelled(true), cmd: events.ShipOrder{OrderID: orderID},
			code: events.CodeOrderCancelled, reason: "order " + orderID + " was cancelled at 2026-11-22T09:00:00Z and cannot be shipped",
		},
		{
			name: "ship an unpaid order", current: placed(), cmd: events.ShipOrder{OrderID: orderID},
			code: events.CodeOrderNotPaid, reason: "order " + orderID + " has not been paid; only paid orders are shipped",
		},
		{
			name: "ship a shipped order", current: shipped(), cmd: events.ShipOrder{OrderID: orderID},
			code: events.CodeOrderShipped, reason: "order " + orderID + " was already shipped at 2026-11-23T09:00:00Z",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, tc.current)
			next, emitted := orders.Decide(tc.current, tc.cmd, tc.userExists, commandID, now)
			if next != tc.current {
				t.Errorf("a rejection returned order %+v, want the current order %+v itself", next, tc.current)
			}
			want := events.CommandRejected{
				CommandID: commandID, CommandType: tc.cmd.Name(), AggregateID: tc.cmd.Key(),
				Code: tc.code, Reason: tc.reason, RejectedAt: now,
			}
			if len(emitted) != 1 || !reflect.DeepEqual(emitted[0], want) {
				t.Errorf("events\n got %+v\nwant [%+v]", emitted, want)
			}
			if after := snapshot(t, tc.current); after != before {
				t.Errorf("a rejection changed the current order:\nbefore %s\n after %s", before, after)
			}
		})
	}
}

func TestDecideRejectsCommandsOfOtherContexts(t *testing.T) {
	cur := placed()
	next, emitted := orders.Decide(cur, events.RegisterUser{UserID: "u-9"}, true, commandID, now)
	if next != cur {
		t.Errorf("state changed by a foreign command")
	}
	r, ok := single[events.CommandRejected](emitted)
	if !ok || r.Code != events.CodeInvalidCommand || r.CommandType != "users.register-user.v1" {
		t.Errorf("events %+v, want one invalid_command rejection of users.register-user.v1", emitted)
	}
}

// A whole life of an order: each decision starts from the previous one's
// order, as the store would load it.
func TestDecideOrderLifecycle(t *testing.T) {
	steps := []struct {
		cmd    events.Message
		status orders.Status
	}{
		{placeOrder(), orders.StatusPlaced},
		{events.PayOrder{OrderID: orderID, AmountCents: 2699, PaymentRef: "p"}, orders.StatusPaid},
		{events.ShipOrder{OrderID: orderID, Carrier: "DHL"}, orders.StatusShipped},
	}
	var cur *orders.Order
	for _, s := range steps {
		next, emitted := orders.Decide(cur, s.cmd, true, commandID, now)
		if _, rejected := single[events.CommandRejected](emitted); rejected {
			t.Fatalf("%s rejected: %+v", s.cmd.Name(), emitted)
		}
		if next.Status != s.status {
			t.Fatalf("after %s status %s, want %s", s.cmd.Name(), next.Status, s.status)
		}
		cur = roundTrip(t, next)
	}
	if cur.PaymentRef != "p" || cur.Carrier != "DHL" || !cur.PaidAt.Equal(now) || !cur.ShippedAt.Equal(now) {
		t.Errorf("final order %+v lost what earlier steps recorded", cur)
	}
}

func single[T any](msgs []events.Message) (T, bool) {
	var zero T
	if len(msgs) != 1 {
		return zero, false
	}
	v, ok := msgs[0].(T)
	return v, ok
}

// snapshot renders an order as JSON, to detect changes to it.
func snapshot(t *testing.T, o *orders.Order) string {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// roundTrip stores and loads an order as the command store does.
func roundTrip(t *testing.T, o *orders.Order) *orders.Order {
	t.Helper()
	var back orders.Order
	if err := json.Unmarshal([]byte(snapshot(t, o)), &back); err != nil {
		t.Fatal(err)
	}
	return &back
}

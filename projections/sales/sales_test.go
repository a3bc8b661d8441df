package sales_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/sales"
)

var (
	mar1 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	mar2 = mar1.AddDate(0, 0, 1)
)

func newSales(t *testing.T, msgs ...events.Message) *sales.Projection {
	t.Helper()
	db := projectiontest.OpenDB(t)
	p := sales.New(db)
	r, err := projections.NewRunner(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	var log projectiontest.Log
	for _, m := range msgs {
		if err := r.Handle(log.Append(projectiontest.Message(t, m), events.TopicOrderEvents, 0)); err != nil {
			t.Fatalf("handle %s: %v", m.Name(), err)
		}
	}
	return p
}

func placed(id, currency string, cents int64) events.OrderPlaced {
	return events.OrderPlaced{OrderID: id, UserID: "u-1", Currency: currency, TotalCents: cents, PlacedAt: mar1.Add(-time.Hour)}
}

func paid(id, currency string, cents int64, at time.Time) events.OrderPaid {
	return events.OrderPaid{OrderID: id, UserID: "u-1", Currency: currency, AmountCents: cents, PaidAt: at}
}

func cancelled(id string, wasPaid bool, cents int64, at time.Time) events.OrderCancelled {
	return events.OrderCancelled{OrderID: id, UserID: "u-1", WasPaid: wasPaid, TotalCents: cents, CancelledAt: at}
}

func TestSalesOn(t *testing.T) {
	tests := []struct {
		name   string
		events []events.Message
		date   string
		want   []sales.CurrencyTotals
	}{
		{
			name:   "an order paid",
			events: []events.Message{placed("o-1", "EUR", 2500), paid("o-1", "EUR", 2500, mar1)},
			date:   "2025-03-01",
			want:   []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 1, GrossCents: 2500, NetCents: 2500}},
		},
		{
			name: "orders paid add up",
			events: []events.Message{
				paid("o-1", "EUR", 2500, mar1), paid("o-2", "EUR", 1000, mar1.Add(time.Hour)),
			},
			date: "2025-03-01",
			want: []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 2, GrossCents: 3500, NetCents: 3500}},
		},
		{
			name:   "placed but not paid does not count",
			events: []events.Message{placed("o-1", "EUR", 2500)},
			date:   "2025-03-01",
			want:   []sales.CurrencyTotals{},
		},
		{
			name: "cancel after pay refunds on the same day",
			events: []events.Message{
				paid("o-1", "EUR", 2500, mar1), paid("o-2", "EUR", 1000, mar1),
				cancelled("o-1", true, 2500, mar1.Add(time.Hour)),
			},
			date: "2025-03-01",
			want: []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 2, GrossCents: 3500, OrdersRefunded: 1, RefundedCents: 2500, NetCents: 1000}},
		},
		{
			name:   "cancel after pay refunds on the day of cancellation",
			events: []events.Message{paid("o-1", "EUR", 2500, mar1), cancelled("o-1", true, 2500, mar2)},
			date:   "2025-03-02",
			want:   []sales.CurrencyTotals{{Currency: "EUR", OrdersRefunded: 1, RefundedCents: 2500, NetCents: -2500}},
		},
		{
			name:   "the day of payment keeps its gross after a later refund",
			events: []events.Message{paid("o-1", "EUR", 2500, mar1), cancelled("o-1", true, 2500, mar2)},
			date:   "2025-03-01",
			want:   []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 1, GrossCents: 2500, NetCents: 2500}},
		},
		{
			name:   "cancel before pay does not count",
			events: []events.Message{placed("o-1", "EUR", 2500), cancelled("o-1", false, 2500, mar1)},
			date:   "2025-03-01",
			want:   []sales.CurrencyTotals{},
		},
		{
			name: "days are separate",
			events: []events.Message{
				paid("o-1", "EUR", 2500, mar1), paid("o-2", "EUR", 1000, mar2), paid("o-3", "EUR", 700, mar2),
			},
			date: "2025-03-02",
			want: []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 2, GrossCents: 1700, NetCents: 1700}},
		},
		{
			name: "a payment counts on its UTC day",
			events: []events.Message{
				// 00:30 on 2 March in UTC+02:00 is 22:30 on 1 March in UTC.
				paid("o-1", "EUR", 2500, time.Date(2025, 3, 2, 0, 30, 0, 0, time.FixedZone("EET", 2*3600))),
			},
			date: "2025-03-01",
			want: []sales.CurrencyTotals{{Currency: "EUR", OrdersPaid: 1, GrossCents: 2500, NetCents: 2500}},
		},
		{
			name: "currencies are separate, in order, refunds in the currency paid",
			events: []events.Message{
				paid("o-1", "USD", 3000, mar1), paid("o-2", "EUR", 2500, mar1), paid("o-3", "USD", 1000, mar1),
				cancelled("o-3", true, 1000, mar1),
			},
			date: "2025-03-01",
			want: []sales.CurrencyTotals{
				{Currency: "EUR", OrdersPaid: 1, GrossCents: 2500, NetCents: 2500},
				{Currency: "USD", OrdersPaid: 2, GrossCents: 4000, OrdersRefunded: 1, RefundedCents: 1000, NetCents: 3000},
			},
		},
		{
			name:   "a day without sales",
			events: []events.Message{paid("o-1", "EUR", 2500, mar1)},
			date:   "2025-03-03",
			want:   []sales.CurrencyTotals{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newSales(t, tt.events...)
			got, err := p.SalesOn(context.Background(), tt.date)
			if err != nil {
				t.Fatalf("SalesOn(%s): %v", tt.date, err)
			}
			want := sales.Day{Date: tt.date, Currencies: tt.want}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("SalesOn(%s) = %+v\nwant            %+v", tt.date, got, want)
			}
		})
	}
}

func TestSalesOnBadDate(t *testing.T) {
	p := newSales(t)
	for _, date := range []string{"", "2025-3-1", "01/03/2025", "2025-02-30", "2025-03-01T00:00:00Z"} {
		t.Run(date, func(t *testing.T) {
			_, err := p.SalesOn(context.Background(), date)
			if !errors.Is(err, sales.ErrBadDate) {
				t.Errorf("SalesOn(%q) error = %v, want ErrBadDate", date, err)
			}
		})
	}
}

package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
)

// BenchmarkRunnerApply measures how many events per second one runner folds
// into the orders read model, one transaction per event, on a real SQLite
// file (WAL, synchronous=NORMAL). The events cycle through the life of an
// order: placed, paid, shipped.
func BenchmarkRunnerApply(b *testing.B) {
	db := projectiontest.OpenDB(b)
	r, err := projections.NewRunner(context.Background(), db, orders.New(db), nil)
	if err != nil {
		b.Fatalf("new runner: %v", err)
	}
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		id := fmt.Sprintf("o-%d", i/3)
		at := start.Add(time.Duration(i) * time.Millisecond)
		var e events.Message
		switch i % 3 {
		case 0:
			e = events.OrderPlaced{
				OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, PlacedAt: at,
				Lines: []events.PricedLine{{SKU: "tea", Quantity: 5, UnitPriceCents: 500, LineTotalCents: 2500}},
			}
		case 1:
			e = events.OrderPaid{OrderID: id, UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaymentRef: "pay", PaidAt: at}
		default:
			e = events.OrderShipped{OrderID: id, UserID: "u-1", Carrier: "DHL", ShippedAt: at}
		}
		msgs[i] = projectiontest.Delivered(projectiontest.Message(b, e), events.TopicOrderEvents, 0, int64(i))
	}

	b.ResetTimer()
	began := time.Now()
	for _, msg := range msgs {
		if err := r.Handle(msg); err != nil {
			b.Fatalf("handle: %v", err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "events/s")
}

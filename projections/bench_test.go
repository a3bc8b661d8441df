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

// orderLife returns n messages on one partition of orders.events that cycle
// through the life of an order: placed, paid, shipped.
func orderLife(b *testing.B, n int) []*message.Message {
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		id := fmt.Sprintf("o-%d", i/3)
		at := start.Add(time.Duration(i) * time.Millisecond)
		var e events.Message
		switch i % 3 {
		case 0:
			e = events.OrderPlacedV2{
				OrderID: id, UserID: "u-1", Currency: "EUR", TotalCents: 2500, ItemCount: 5, PlacedAt: at,
				Lines: []events.PricedLine{{SKU: "tea", Quantity: 5, UnitPriceCents: 500, LineTotalCents: 2500}},
			}
		case 1:
			e = events.OrderPaid{OrderID: id, UserID: "u-1", AmountCents: 2500, Currency: "EUR", PaymentRef: "pay", PaidAt: at}
		default:
			e = events.OrderShipped{OrderID: id, UserID: "u-1", Carrier: "DHL", ShippedAt: at}
		}
		msgs[i] = projectiontest.Delivered(projectiontest.Message(b, e, projectiontest.At(at)), events.TopicOrderEvents, 0, int64(i))
	}
	return msgs
}

// BenchmarkRunnerApply measures how many events per second one runner folds
// into the orders read model on a real SQLite file (WAL,
// synchronous=NORMAL): one transaction per event, as the live consumer on
// the router does (Handle), and batches in one transaction, as a rebuild
// does (HandleBatch).
func BenchmarkRunnerApply(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := projectiontest.OpenDB(b)
			r, err := projections.NewRunner(context.Background(), db, orders.New(db), nil)
			if err != nil {
				b.Fatalf("new runner: %v", err)
			}
			msgs := orderLife(b, b.N)
			ctx := context.Background()
			b.ResetTimer()
			began := time.Now()
			for i := 0; i < len(msgs); i += batch {
				if batch == 1 {
					if err := r.Handle(msgs[i]); err != nil {
						b.Fatalf("handle: %v", err)
					}
					continue
				}
				if err := r.HandleBatch(ctx, msgs[i:min(i+batch, len(msgs))]); err != nil {
					b.Fatalf("handle batch: %v", err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "events/s")
		})
	}
}

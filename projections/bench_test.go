package projections_test

import (
	"context"
	"fmt"
	"sync"
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
func orderLife(b *testing.B, n int) []*message.Message { return orderLifeOn(b, n, 0) }

// orderLifeOn is orderLife on partition p, with orders of their own.
func orderLifeOn(b *testing.B, n int, p int32) []*message.Message {
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		id := fmt.Sprintf("o-%d-%d", p, i/3)
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
		msgs[i] = projectiontest.Delivered(projectiontest.Message(b, e, projectiontest.At(at)), events.TopicOrderEvents, p, int64(i))
	}
	return msgs
}

// applyOnly hides the orders projection's batch form (BatchApplier): the
// runner calls Apply once per event, as it does for projections without one.
type applyOnly struct{ p *orders.Projection }

func (a applyOnly) Name() string                                        { return a.p.Name() }
func (a applyOnly) Topics() []string                                    { return a.p.Topics() }
func (a applyOnly) Setup(ctx context.Context, tx *projections.Tx) error { return a.p.Setup(ctx, tx) }
func (a applyOnly) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	return a.p.Apply(ctx, tx, e)
}

// BenchmarkRunnerApply measures how many events per second one runner folds
// into the orders read model on a real SQLite file (WAL,
// synchronous=NORMAL): one transaction per event, as the live consumer on
// the router does (Handle), and batches in one transaction, as a rebuild
// does (HandleBatch), through the projection's ApplyBatch (an order's events
// of a batch folded into one row, rows and event ids written many per
// statement) or, for comparison, through Apply once per event.
func BenchmarkRunnerApply(b *testing.B) {
	for _, bc := range []struct {
		batch int
		apply string // "batch": ApplyBatch; "each": Apply per event
	}{{1, "batch"}, {100, "batch"}, {1000, "batch"}, {1000, "each"}} {
		b.Run(fmt.Sprintf("batch=%d/apply=%s", bc.batch, bc.apply), func(b *testing.B) {
			db := projectiontest.OpenDB(b)
			var p projections.Projection = orders.New(db)
			if bc.apply == "each" {
				p = applyOnly{orders.New(db)}
			}
			r, err := projections.NewRunner(context.Background(), db, p, nil)
			if err != nil {
				b.Fatalf("new runner: %v", err)
			}
			msgs := orderLife(b, b.N)
			ctx := context.Background()
			b.ResetTimer()
			began, cpuBegan := time.Now(), cpuTime()
			for i := 0; i < len(msgs); i += bc.batch {
				if bc.batch == 1 {
					if err := r.Handle(msgs[i]); err != nil {
						b.Fatalf("handle: %v", err)
					}
					continue
				}
				if err := r.HandleBatch(ctx, msgs[i:min(i+bc.batch, len(msgs))]); err != nil {
					b.Fatalf("handle batch: %v", err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "events/s")
			// CPU time per event: what the other processes of a shared
			// machine change least.
			b.ReportMetric(float64((cpuTime()-cpuBegan).Nanoseconds())/1e3/float64(b.N), "cpu-µs/event")
		})
	}
}

// BenchmarkRunnerHandleConcurrent measures the live path as the router runs
// it: one Handle call at a time per partition, partitions at once (one
// goroutine each), each partition's events in order.
func BenchmarkRunnerHandleConcurrent(b *testing.B) {
	for _, partitions := range []int{1, 3, 9} {
		b.Run(fmt.Sprintf("partitions=%d", partitions), func(b *testing.B) {
			db := projectiontest.OpenDB(b)
			r, err := projections.NewRunner(context.Background(), db, orders.New(db), nil)
			if err != nil {
				b.Fatalf("new runner: %v", err)
			}
			per := max(b.N/partitions, 1)
			logs := make([][]*message.Message, partitions)
			for p := range logs {
				logs[p] = orderLifeOn(b, per, int32(p))
			}
			b.ResetTimer()
			began, cpuBegan := time.Now(), cpuTime()
			var wg sync.WaitGroup
			errs := make(chan error, partitions)
			for _, log := range logs {
				wg.Go(func() {
					for _, msg := range log {
						if err := r.Handle(msg); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatalf("handle: %v", err)
			}
			n := per * partitions
			b.ReportMetric(float64(n)/time.Since(began).Seconds(), "events/s")
			b.ReportMetric(float64((cpuTime()-cpuBegan).Nanoseconds())/1e3/float64(n), "cpu-µs/event")
		})
	}
}

package orders_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/projectiontest"
)

// TestApplyBatchEqualsApply folds logs of order lives through ApplyBatch,
// in batches of many sizes, and through Apply one message per transaction,
// and compares the tables row by row. The logs hold what folding must get
// right: an order's events in one batch or across batches, events about
// orders not placed (yet), an order placed again with another event id
// (the insert does nothing, the updates after it apply), re-published
// events (same id and time at a new offset), cancellations after payment.
func TestApplyBatchEqualsApply(t *testing.T) {
	for _, tt := range projectiontest.BatchCases() {
		t.Run(tt.Name, func(t *testing.T) {
			log := orderLog(t, tt.Seed, 600)
			projectiontest.ApplyBatchEqualsApply(t, func(db *sql.DB) projections.Projection { return orders.New(db) }, log, tt.Batches, "orders", "users")
		})
	}
}

// orderLog returns a log of about n events on one partition of
// orders.events and users.events, drawn from seed.
func orderLog(t *testing.T, seed uint64, n int) []*message.Message {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 42))
	var (
		log     projectiontest.Log
		out     []*message.Message
		sent    []*message.Message // order events, for re-publishing
		nextID  int
		clock   = t0
		ordersN = n / 4
	)
	emit := func(m events.Message, opts ...projectiontest.Option) {
		clock = clock.Add(time.Second)
		nextID++
		opts = append([]projectiontest.Option{projectiontest.ID(fmt.Sprintf("e-%d", nextID)), projectiontest.At(clock)}, opts...)
		msg := projectiontest.Message(t, m, opts...)
		topic := events.TopicOrderEvents
		if _, ok := m.(events.UserRegistered); ok {
			topic = events.TopicUserEvents
		}
		out = append(out, log.Append(msg, topic, 0))
		if topic == events.TopicOrderEvents {
			sent = append(sent, msg)
		}
	}
	for len(out) < n {
		id := fmt.Sprintf("o-%d", rng.IntN(ordersN))
		user := fmt.Sprintf("u-%d", rng.IntN(8))
		at := clock.Add(time.Second)
		switch k := rng.IntN(20); {
		case k < 5:
			if rng.IntN(2) == 0 {
				emit(placed(id, user, at))
			} else {
				emit(events.OrderPlacedV2{OrderID: id, UserID: user, Currency: "EUR", TotalCents: int64(100 * rng.IntN(50)), ItemCount: 3,
					PlacedAt: at, Lines: []events.PricedLine{{SKU: "mug", Quantity: 3, UnitPriceCents: 100, LineTotalCents: 300}}})
			}
		case k < 9:
			emit(events.OrderPaid{OrderID: id, UserID: user, AmountCents: 2500, Currency: "EUR", PaymentRef: "pay", PaidAt: at})
		case k < 12:
			emit(events.OrderShipped{OrderID: id, UserID: user, Carrier: []string{"DHL", "UPS", ""}[rng.IntN(3)], ShippedAt: at})
		case k < 14:
			emit(events.OrderCancelled{OrderID: id, UserID: user, Reason: []string{"", "changed my mind"}[rng.IntN(2)], TotalCents: 2500, CancelledAt: at})
		case k < 15:
			emit(registered(user))
		case k < 17 && len(sent) > 0:
			// A relay publishes an event again: same id, same time, new offset.
			out = append(out, log.Append(sent[rng.IntN(len(sent))], events.TopicOrderEvents, 0))
		default:
			// A life in a row: placed, paid, shipped, as a rebuild mostly meets them.
			life := fmt.Sprintf("life-%d", len(out))
			emit(placed(life, user, at))
			emit(events.OrderPaid{OrderID: life, UserID: user, AmountCents: 2500, Currency: "EUR", PaidAt: at.Add(time.Minute)})
			emit(events.OrderShipped{OrderID: life, UserID: user, Carrier: "DHL", ShippedAt: at.Add(time.Hour)})
		}
	}
	return out
}

package sales_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
	"github.com/millrace/millrace/projections/sales"
)

// TestApplyBatchEqualsApply folds random logs through ApplyBatch, in batches
// of many sizes, and through Apply one message per transaction, and compares
// the tables row by row. The logs hold what adding up must get right:
// payments and refunds of one day and currency in one batch or across
// batches, a refund of an order paid earlier in the same batch, of one paid
// in an earlier batch and of one never paid, an order paid twice in two
// currencies (the first currency is the one its refund uses), cancellations
// of unpaid orders, and re-published events (same id, new offset).
func TestApplyBatchEqualsApply(t *testing.T) {
	for _, tt := range projectiontest.BatchCases() {
		t.Run(tt.Name, func(t *testing.T) {
			log := salesLog(t, tt.Seed, 800)
			projectiontest.ApplyBatchEqualsApply(t, func(db *sql.DB) projections.Projection { return sales.New(db) }, log, tt.Batches, "days", "paid")
		})
	}
}

// salesLog returns a log of about n order events on one partition, drawn
// from seed, over three days and two currencies.
func salesLog(t *testing.T, seed uint64, n int) []*message.Message {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	start := time.Date(2026, 3, 1, 22, 0, 0, 0, time.UTC)
	var (
		log    projectiontest.Log
		out    []*message.Message
		sent   []*message.Message
		nextID int
	)
	emit := func(m events.Message) {
		nextID++
		msg := projectiontest.Message(t, m, projectiontest.ID(fmt.Sprintf("e-%d", nextID)))
		out = append(out, log.Append(msg, events.TopicOrderEvents, 0))
		sent = append(sent, msg)
	}
	for len(out) < n {
		id := fmt.Sprintf("o-%d", rng.IntN(n/5))
		at := start.Add(time.Duration(rng.IntN(3*24)) * time.Hour)
		currency := []string{"EUR", "USD"}[rng.IntN(2)]
		switch k := rng.IntN(10); {
		case k < 5:
			emit(events.OrderPaid{OrderID: id, UserID: "u", AmountCents: int64(100 + rng.IntN(5000)), Currency: currency, PaymentRef: "p", PaidAt: at})
		case k < 8:
			emit(events.OrderCancelled{OrderID: id, UserID: "u", TotalCents: int64(100 + rng.IntN(5000)), WasPaid: rng.IntN(4) != 0, CancelledAt: at})
		case k < 9 && len(sent) > 0:
			out = append(out, log.Append(sent[rng.IntN(len(sent))], events.TopicOrderEvents, 0)) // re-published
		default:
			// Paid and refunded in a row: likely in one batch.
			life := fmt.Sprintf("life-%d", len(out))
			emit(events.OrderPaid{OrderID: life, UserID: "u", AmountCents: 700, Currency: currency, PaymentRef: "p", PaidAt: at})
			emit(events.OrderCancelled{OrderID: life, UserID: "u", TotalCents: 700, WasPaid: true, CancelledAt: at.Add(time.Hour)})
		}
	}
	return out
}

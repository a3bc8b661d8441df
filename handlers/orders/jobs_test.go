package orders_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/orders"
	"github.com/millrace/millrace/platform/commandstore"
)

// The command store's typed aggregates are what cmd/millrace passes in.
var (
	_ orders.SweeperStore = (*commandstore.Aggregate[orders.Sweeper, events.Message])(nil)
	_ orders.LedgerStore  = (*commandstore.Aggregate[orders.SalesLedger, events.Message])(nil)
)

func TestDecideExpire(t *testing.T) {
	placedAt := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	cutoff := placedAt.Add(time.Minute)
	now := cutoff.Add(time.Minute)
	order := func(status orders.Status) *orders.Order {
		return &orders.Order{ID: orderID, UserID: userID, Status: status, TotalCents: 2699, Currency: "EUR", PlacedAt: placedAt,
			PaidAt: placedAt.Add(90 * time.Second), CancelledAt: placedAt.Add(time.Hour), ShippedAt: placedAt.Add(2 * time.Hour)}
	}
	expire := events.ExpireOrder{OrderID: orderID, PlacedBefore: cutoff, SweepID: "sweep-1"}
	cases := []struct {
		name     string
		current  *orders.Order
		cmd      events.ExpireOrder
		wantCode string // empty: accepted
	}{
		{"an unpaid order placed before the cutoff expires", order(orders.StatusPlaced), expire, ""},
		{"a paid order stays", order(orders.StatusPaid), expire, events.CodeOrderAlreadyPaid},
		{"a cancelled order", order(orders.StatusCancelled), expire, events.CodeOrderCancelled},
		{"a shipped order", order(orders.StatusShipped), expire, events.CodeOrderShipped},
		{"no such order", nil, expire, events.CodeOrderNotFound},
		{"placed at the cutoff is not overdue", order(orders.StatusPlaced), events.ExpireOrder{OrderID: orderID, PlacedBefore: placedAt}, events.CodeOrderNotDue},
		{"no cutoff", order(orders.StatusPlaced), events.ExpireOrder{OrderID: orderID}, events.CodeInvalidCommand},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, emitted := orders.DecideExpire(c.current, c.cmd, commandID, now)
			if len(emitted) != 1 {
				t.Fatalf("emitted %d messages, want 1", len(emitted))
			}
			if c.wantCode != "" {
				r, ok := emitted[0].(events.CommandRejected)
				if !ok || r.Code != c.wantCode || next != c.current {
					t.Fatalf("got %+v, want a rejection %s leaving the order as it was", emitted[0], c.wantCode)
				}
				return
			}
			e, ok := emitted[0].(events.OrderCancelled)
			if !ok || e.WasPaid || e.TotalCents != 2699 || !strings.Contains(e.Reason, "expired unpaid") || !e.CancelledAt.Equal(now) {
				t.Fatalf("got %+v, want OrderCancelled of an unpaid order, reason expired unpaid", emitted[0])
			}
			if next == c.current || next.Status != orders.StatusCancelled || c.current.Status != orders.StatusPlaced {
				t.Fatalf("next %+v: want a new, cancelled order and the current one unchanged", next)
			}
		})
	}
}

func TestDecideSweep(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	cutoff := now.Add(-30 * time.Minute)
	cases := []struct {
		name     string
		cmd      events.SweepUnpaidOrders
		found    []string
		wantIDs  []string
		wantMore bool
		wantCode string
	}{
		{"expires and records what it found", events.SweepUnpaidOrders{PlacedBefore: cutoff}, []string{"o1", "o2"}, []string{"o1", "o2"}, false, ""},
		{"nothing found is a sweep too", events.SweepUnpaidOrders{PlacedBefore: cutoff}, nil, []string{}, false, ""},
		{"more than the limit", events.SweepUnpaidOrders{PlacedBefore: now, Limit: 2}, []string{"o1", "o2", "o3"}, []string{"o1", "o2"}, true, ""},
		{"a cutoff in the future", events.SweepUnpaidOrders{PlacedBefore: now.Add(time.Minute)}, nil, nil, false, events.CodeInvalidCommand},
		{"no cutoff", events.SweepUnpaidOrders{}, nil, nil, false, events.CodeInvalidCommand},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			state := &orders.Sweeper{Sweeps: 4}
			if c.wantCode == "" {
				next, expiries := orders.DecideSweepDispatch(state, c.cmd, c.found, commandID, now)
				if len(expiries) != len(c.wantIDs) {
					t.Fatalf("dispatched %d expiries, want %d", len(expiries), len(c.wantIDs))
				}
				for i, m := range expiries {
					e, ok := m.(events.ExpireOrder)
					if !ok || e.OrderID != c.wantIDs[i] || !e.PlacedBefore.Equal(c.cmd.PlacedBefore) || e.SweepID != commandID {
						t.Errorf("expiry %d = %+v, want ExpireOrder of %s with the sweep's cutoff", i, m, c.wantIDs[i])
					}
				}
				if state.Pending != nil {
					t.Errorf("the dispatch changed the current state")
				}
				state = next
			}
			next, emitted := orders.DecideSweep(state, c.cmd, commandID, now)
			if len(emitted) != 1 {
				t.Fatalf("recorded %d messages, want 1", len(emitted))
			}
			if c.wantCode != "" {
				if r, ok := emitted[0].(events.CommandRejected); !ok || r.Code != c.wantCode || next != state {
					t.Fatalf("got %+v, want rejection %s", emitted[0], c.wantCode)
				}
				return
			}
			e, ok := emitted[0].(events.UnpaidOrdersSwept)
			if !ok || !slices.Equal(e.OrderIDs, c.wantIDs) || e.More != c.wantMore || e.SweepID != commandID {
				t.Fatalf("got %+v, want UnpaidOrdersSwept of %v, more %v", emitted[0], c.wantIDs, c.wantMore)
			}
			if next.Sweeps != 5 || next.LastSweepID != commandID || next.Pending != nil {
				t.Errorf("sweeper %+v, want the fifth sweep recorded and nothing pending", next)
			}
		})
	}
}

func TestDecideSweepRecordsOnlyItsOwnDispatch(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	// A dispatch of another sweep is pending: this sweep's own first step
	// never ran, so it records nothing found.
	state := &orders.Sweeper{Pending: &orders.PendingSweep{SweepID: "other", OrderIDs: []string{"o9"}}}
	_, emitted := orders.DecideSweep(state, events.SweepUnpaidOrders{PlacedBefore: now}, commandID, now)
	if e, ok := emitted[0].(events.UnpaidOrdersSwept); !ok || len(e.OrderIDs) != 0 {
		t.Fatalf("recorded %+v, want no orders: the pending ones belong to another sweep", emitted[0])
	}
}

func TestDecideCloseSalesDay(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC)
	figures := []events.DaySales{{Currency: "EUR", OrdersPaid: 2, GrossCents: 5000, NetCents: 5000}}
	closed := &orders.SalesLedger{Closed: map[string]time.Time{"2026-11-29": now.Add(-24 * time.Hour)}}
	cases := []struct {
		name     string
		current  *orders.SalesLedger
		date     string
		wantCode string
	}{
		{"yesterday closes with its figures", closed, "2026-11-30", ""},
		{"the first day ever", nil, "2026-11-30", ""},
		{"a day closed before", closed, "2026-11-29", events.CodeSalesDayClosed},
		{"today is not over", closed, "2026-12-01", events.CodeInvalidCommand},
		{"not a date", closed, "30/11/2026", events.CodeInvalidCommand},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, emitted := orders.DecideCloseSalesDay(c.current, events.CloseSalesDay{Date: c.date}, figures, commandID, now)
			if len(emitted) != 1 {
				t.Fatalf("emitted %d, want 1", len(emitted))
			}
			if c.wantCode != "" {
				if r, ok := emitted[0].(events.CommandRejected); !ok || r.Code != c.wantCode {
					t.Fatalf("got %+v, want rejection %s", emitted[0], c.wantCode)
				}
				return
			}
			e, ok := emitted[0].(events.SalesDayClosed)
			if !ok || e.Date != c.date || !slices.Equal(e.Currencies, figures) {
				t.Fatalf("got %+v, want the day's figures", emitted[0])
			}
			if _, ok := next.Closed[c.date]; !ok || (c.current != nil && len(c.current.Closed) != 1) {
				t.Errorf("ledger %+v: want the day closed in a new ledger, the old one unchanged", next)
			}
		})
	}
}

package events

import "time"

// The orders messages of the scheduled jobs (docs/scheduling.md): sweeping
// unpaid orders, which expires each of them, and closing a day's sales.

// UnpaidOrdersSweeperID is the aggregate id of the unpaid-orders sweeper:
// every sweep is keyed by it, so sweeps are handled one after another.
const UnpaidOrdersSweeperID = "ee007fd0-200a-506e-bcbf-9519a30fe9e8"

// SalesLedgerID is the aggregate id of the ledger of closed sales days:
// every CloseSalesDay is keyed by it.
const SalesLedgerID = "c183f089-d8d1-5838-864b-47b22b51c363"

// SweepUnpaidOrders asks the orders context to find the orders placed
// before PlacedBefore and still unpaid, and to expire each of them
// (ExpireOrder). A scheduled job sends it, e.g. every five minutes with
// PlacedBefore 30 minutes before the firing time.
type SweepUnpaidOrders struct {
	PlacedBefore time.Time `json:"placed_before"`
	// Limit bounds the orders one sweep expires (default 500, at most
	// 1000); the next sweep takes the rest.
	Limit int `json:"limit,omitempty"`
}

func (SweepUnpaidOrders) Name() string { return "orders.sweep-unpaid-orders.v1" }
func (SweepUnpaidOrders) Key() string  { return UnpaidOrdersSweeperID }

// UnpaidOrdersSwept records a sweep: the unpaid orders it found, each of
// which it expires with an ExpireOrder.
type UnpaidOrdersSwept struct {
	// SweepID is the id of the SweepUnpaidOrders command.
	SweepID      string    `json:"sweep_id"`
	PlacedBefore time.Time `json:"placed_before"`
	OrderIDs     []string  `json:"order_ids"`
	// More is set when the limit left unpaid orders for the next sweep.
	More    bool      `json:"more"`
	SweptAt time.Time `json:"swept_at"`
}

func (UnpaidOrdersSwept) Name() string { return "orders.unpaid-orders-swept.v1" }
func (UnpaidOrdersSwept) Key() string  { return UnpaidOrdersSweeperID }

// ExpireOrder cancels an order that is still unpaid and was placed before
// PlacedBefore. Unlike CancelOrder it never cancels a paid order: a payment
// that arrived after the sweep found the order wins, and the expiry is
// rejected.
type ExpireOrder struct {
	OrderID      string    `json:"order_id"`
	PlacedBefore time.Time `json:"placed_before"`
	// SweepID is the sweep that found the order.
	SweepID string `json:"sweep_id"`
}

func (ExpireOrder) Name() string  { return "orders.expire-order.v1" }
func (c ExpireOrder) Key() string { return c.OrderID }

// CloseSalesDay asks the orders context to record the figures of one UTC
// day that is over (a scheduled job sends it after midnight for the day
// before). A day is closed once.
type CloseSalesDay struct {
	// Date is the day, YYYY-MM-DD.
	Date string `json:"date"`
}

func (CloseSalesDay) Name() string { return "orders.close-sales-day.v1" }
func (CloseSalesDay) Key() string  { return SalesLedgerID }

// DaySales are one day's sales in one currency.
type DaySales struct {
	Currency       string `json:"currency"`
	OrdersPaid     int64  `json:"orders_paid"`
	GrossCents     int64  `json:"gross_cents"`
	OrdersRefunded int64  `json:"orders_refunded"`
	RefundedCents  int64  `json:"refunded_cents"`
	NetCents       int64  `json:"net_cents"`
}

// SalesDayClosed records the figures of a day that is over, as the sales
// read model had them when the day was closed: the daily sales report.
type SalesDayClosed struct {
	Date       string     `json:"date"`
	Currencies []DaySales `json:"currencies"`
	ClosedAt   time.Time  `json:"closed_at"`
}

func (SalesDayClosed) Name() string { return "orders.sales-day-closed.v1" }
func (SalesDayClosed) Key() string  { return SalesLedgerID }

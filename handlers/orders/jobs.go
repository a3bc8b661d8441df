package orders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
)

// The commands scheduled jobs send to the orders context (docs/scheduling.md):
//
//   - SweepUnpaidOrders finds the orders placed before a cutoff and still
//     unpaid, sends one ExpireOrder per order (through the outbox, to
//     orders.commands) and records the sweep in one UnpaidOrdersSwept. Each
//     ExpireOrder is decided by the order's own aggregate (DecideExpire), in
//     the order's partition, after any payment sent before it: a sweep never
//     cancels an order itself, because the orders it finds come from a read
//     that may be a moment old, and only the order's aggregate knows whether
//     it was paid since.
//   - CloseSalesDay records a day's sales figures once, in SalesDayClosed:
//     the daily sales report.
//
// A sweep is applied in two steps on the sweeper aggregate, each exactly
// once through its own inbox namespace: SweepDispatch (whose events go to
// orders.commands) stores the orders found and emits their expiries;
// Sweeper (whose events go to orders.events) records the sweep. A crash
// between the two redelivers the sweep: the first step is skipped, the
// second records what the first stored.

// DefaultSweepLimit is how many orders a sweep expires when its command
// names no limit; MaxSweepLimit the most it may name.
const (
	DefaultSweepLimit = 500
	MaxSweepLimit     = 1000
)

// UnpaidOrders finds the ids of orders placed before a time and still
// unpaid (status placed), oldest first, at most limit. Safe for
// concurrent use.
type UnpaidOrders interface {
	UnpaidPlacedBefore(ctx context.Context, before time.Time, limit int) ([]string, error)
}

// DailySales reads one UTC day's sales figures, one entry per currency,
// ordered by currency. Safe for concurrent use.
type DailySales interface {
	SalesOn(ctx context.Context, date string) ([]events.DaySales, error)
}

// Sweeper is the state of the unpaid-orders sweeper aggregate.
type Sweeper struct {
	Sweeps           int       `json:"sweeps"`
	LastSweepID      string    `json:"last_sweep_id"`
	LastPlacedBefore time.Time `json:"last_placed_before"`
	// Pending is the sweep dispatched and not yet recorded.
	Pending *PendingSweep `json:"pending,omitempty"`
}

// PendingSweep is what the first step of a sweep found and expired.
type PendingSweep struct {
	SweepID  string   `json:"sweep_id"`
	OrderIDs []string `json:"order_ids"`
	More     bool     `json:"more"`
}

// SalesLedger is the state of the sales ledger aggregate: the days closed.
type SalesLedger struct {
	// Closed maps each closed day (YYYY-MM-DD) to when it was closed.
	Closed map[string]time.Time `json:"closed"`
}

// SweeperStore and LedgerStore store the two aggregates as Store stores
// orders (platform/commandstore in cmd/millrace). The sweeper has two:
// one whose events go to orders.commands (the dispatch), one whose events
// go to orders.events, with inbox namespaces of their own.
type (
	SweeperStore interface {
		Apply(ctx context.Context, id string, fn func(current *Sweeper) (*Sweeper, []events.Message, error)) error
	}
	LedgerStore interface {
		Apply(ctx context.Context, id string, fn func(current *SalesLedger) (*SalesLedger, []events.Message, error)) error
	}
)

// PeriodicDeps are what the Periodic handler works with.
type PeriodicDeps struct {
	// SweepDispatch emits to orders.commands, Sweeper to orders.events.
	SweepDispatch SweeperStore
	Sweeper       SweeperStore
	Ledger        LedgerStore
	Unpaid        UnpaidOrders
	Sales         DailySales
	// Now stamps decisions; time.Now when nil.
	Now func() time.Time
}

// Periodic handles the orders commands that scheduled jobs send:
// SweepUnpaidOrders and CloseSalesDay.
type Periodic struct {
	d PeriodicDeps
}

// NewPeriodic returns the handler, once every dependency is given.
func NewPeriodic(d PeriodicDeps) (*Periodic, error) {
	if d.SweepDispatch == nil || d.Sweeper == nil || d.Ledger == nil || d.Unpaid == nil || d.Sales == nil {
		return nil, errors.New("create the orders' periodic handler: the sweeper's stores, a ledger store, unpaid orders and daily sales are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Periodic{d: d}, nil
}

// GroupHandlers returns the handlers of SweepUnpaidOrders and
// CloseSalesDay, to be registered in the orders handler group beside
// Handler.GroupHandlers (one group per context: see the package
// documentation).
func (p *Periodic) GroupHandlers() []cqrs.GroupEventHandler {
	return []cqrs.GroupEventHandler{
		cqrs.NewGroupEventHandler(p.sweep),
		cqrs.NewGroupEventHandler(p.closeDay),
	}
}

func (p *Periodic) sweep(ctx context.Context, c *events.SweepUnpaidOrders) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("handle %s: no incoming message in context", c.Name())
	}
	now := p.d.Now()
	if checkSweep(*c, now) == "" {
		limit := sweepLimit(*c)
		found, err := p.d.Unpaid.UnpaidPlacedBefore(ctx, c.PlacedBefore, limit+1)
		if err != nil {
			return fmt.Errorf("handle %s %s: find unpaid orders: %w", c.Name(), msg.UUID, err)
		}
		err = p.d.SweepDispatch.Apply(ctx, c.Key(), func(current *Sweeper) (*Sweeper, []events.Message, error) {
			next, emitted := DecideSweepDispatch(current, *c, found, msg.UUID, now)
			return next, emitted, nil
		})
		if err != nil {
			return fmt.Errorf("handle %s %s: expire the unpaid orders: %w", c.Name(), msg.UUID, err)
		}
	}
	err := p.d.Sweeper.Apply(ctx, c.Key(), func(current *Sweeper) (*Sweeper, []events.Message, error) {
		next, emitted := DecideSweep(current, *c, msg.UUID, now)
		if next == current {
			next = nil
		}
		return next, emitted, nil
	})
	if err != nil {
		return fmt.Errorf("handle %s %s: %w", c.Name(), msg.UUID, err)
	}
	return nil
}

// sweepLimit is how many orders a sweep expires.
func sweepLimit(c events.SweepUnpaidOrders) int {
	if c.Limit <= 0 {
		return DefaultSweepLimit
	}
	return min(c.Limit, MaxSweepLimit)
}

// checkSweep says what is wrong with a sweep, or "".
func checkSweep(c events.SweepUnpaidOrders, now time.Time) string {
	switch {
	case c.PlacedBefore.IsZero():
		return "placed_before is missing; say which orders are overdue"
	case c.PlacedBefore.After(now):
		return fmt.Sprintf("placed_before %s is in the future; a sweep expires orders placed before a time that has passed", stamp(c.PlacedBefore))
	case c.Limit < 0 || c.Limit > MaxSweepLimit:
		return fmt.Sprintf("limit %d: want 1 to %d", c.Limit, MaxSweepLimit)
	}
	return ""
}

// DecideSweepDispatch is the first step of a valid sweep: found are the
// unpaid orders placed before the cutoff, oldest first (up to the limit
// and one more, to tell whether more remain). It stores them as the
// sweeper's pending sweep and returns one ExpireOrder per order.
func DecideSweepDispatch(current *Sweeper, c events.SweepUnpaidOrders, found []string, commandID string, now time.Time) (*Sweeper, []events.Message) {
	limit := sweepLimit(c)
	more := len(found) > limit
	if more {
		found = found[:limit]
	}
	var next Sweeper
	if current != nil {
		next = *current
	}
	next.Pending = &PendingSweep{SweepID: commandID, OrderIDs: append([]string{}, found...), More: more}
	emitted := make([]events.Message, 0, len(found))
	for _, id := range found {
		emitted = append(emitted, events.ExpireOrder{OrderID: id, PlacedBefore: c.PlacedBefore.UTC(), SweepID: commandID})
	}
	return &next, emitted
}

// DecideSweep is the second step of a sweep: it records what the first
// step found (nothing when it did not run) in one UnpaidOrdersSwept, or
// rejects a sweep whose cutoff is missing or after now (it would expire
// orders just placed).
func DecideSweep(current *Sweeper, c events.SweepUnpaidOrders, commandID string, now time.Time) (*Sweeper, []events.Message) {
	now = now.UTC()
	if problem := checkSweep(c, now); problem != "" {
		return current, []events.Message{events.CommandRejected{
			CommandID: commandID, CommandType: c.Name(), AggregateID: c.Key(), Code: events.CodeInvalidCommand,
			Reason: problem, RejectedAt: now,
		}}
	}
	var next Sweeper
	if current != nil {
		next = *current
	}
	swept := events.UnpaidOrdersSwept{SweepID: commandID, PlacedBefore: c.PlacedBefore.UTC(), OrderIDs: []string{}, SweptAt: now}
	if p := next.Pending; p != nil && p.SweepID == commandID {
		swept.OrderIDs, swept.More = append(swept.OrderIDs, p.OrderIDs...), p.More
	}
	next.Pending = nil
	next.Sweeps++
	next.LastSweepID, next.LastPlacedBefore = commandID, c.PlacedBefore.UTC()
	return &next, []events.Message{swept}
}

func (p *Periodic) closeDay(ctx context.Context, c *events.CloseSalesDay) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("handle %s: no incoming message in context", c.Name())
	}
	var figures []events.DaySales
	if _, err := time.Parse(time.DateOnly, c.Date); err == nil {
		f, err := p.d.Sales.SalesOn(ctx, c.Date)
		if err != nil {
			return fmt.Errorf("handle %s %s: read the sales of %s: %w", c.Name(), msg.UUID, c.Date, err)
		}
		figures = f
	}
	err := p.d.Ledger.Apply(ctx, c.Key(), func(current *SalesLedger) (*SalesLedger, []events.Message, error) {
		next, emitted := DecideCloseSalesDay(current, *c, figures, msg.UUID, p.d.Now())
		if next == current {
			next = nil
		}
		return next, emitted, nil
	})
	if err != nil {
		return fmt.Errorf("handle %s %s: %w", c.Name(), msg.UUID, err)
	}
	return nil
}

// DecideCloseSalesDay closes a day's sales with the figures read for it: a
// day that is over (its UTC end has passed) and not closed before.
func DecideCloseSalesDay(current *SalesLedger, c events.CloseSalesDay, figures []events.DaySales, commandID string, now time.Time) (*SalesLedger, []events.Message) {
	now = now.UTC()
	reject := func(code, format string, args ...any) (*SalesLedger, []events.Message) {
		return current, []events.Message{events.CommandRejected{
			CommandID: commandID, CommandType: c.Name(), AggregateID: c.Key(), Code: code,
			Reason: fmt.Sprintf(format, args...), RejectedAt: now,
		}}
	}
	day, err := time.Parse(time.DateOnly, c.Date)
	switch {
	case err != nil:
		return reject(events.CodeInvalidCommand, "date %q: want a UTC day as YYYY-MM-DD", c.Date)
	case !now.After(day.AddDate(0, 0, 1)):
		return reject(events.CodeInvalidCommand, "the day %s is not over yet (it ends at %s); close it after midnight UTC",
			c.Date, stamp(day.AddDate(0, 0, 1)))
	}
	if current != nil {
		if at, ok := current.Closed[c.Date]; ok {
			return reject(events.CodeSalesDayClosed, "the sales of %s were closed at %s", c.Date, stamp(at))
		}
	}
	next := SalesLedger{Closed: map[string]time.Time{}}
	if current != nil {
		for d, at := range current.Closed {
			next.Closed[d] = at
		}
	}
	next.Closed[c.Date] = now
	currencies := append([]events.DaySales{}, figures...)
	return &next, []events.Message{events.SalesDayClosed{Date: c.Date, Currencies: currencies, ClosedAt: now}}
}

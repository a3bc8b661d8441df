package orders

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
)

// DecideExpire applies the expiry rule to an order: an order still placed
// (not paid, cancelled or shipped) and placed before c.PlacedBefore is
// cancelled with events.OrderCancelled, its reason saying it expired
// unpaid. Anything else is rejected: a payment that arrived after the
// sweep found the order wins over the expiry. Like Decide it does no I/O,
// returns a new *Order when accepted and current itself with exactly one
// events.CommandRejected when not.
func DecideExpire(current *Order, c events.ExpireOrder, commandID string, now time.Time) (*Order, []events.Message) {
	d := decision{current: current, cmd: c, commandID: commandID, now: now.UTC()}
	o := current
	switch {
	case c.OrderID == "":
		return d.reject(events.CodeInvalidCommand, "the order id is missing")
	case c.PlacedBefore.IsZero():
		return d.reject(events.CodeInvalidCommand, "placed_before is missing; say which orders are overdue")
	case o == nil:
		return d.reject(events.CodeOrderNotFound, "order %s does not exist", c.OrderID)
	case o.Status == StatusCancelled:
		return d.reject(events.CodeOrderCancelled, "order %s was already cancelled at %s", o.ID, stamp(o.CancelledAt))
	case o.Status == StatusShipped:
		return d.reject(events.CodeOrderShipped, "order %s was shipped at %s", o.ID, stamp(o.ShippedAt))
	case o.Status == StatusPaid:
		return d.reject(events.CodeOrderAlreadyPaid, "order %s was paid at %s, after the sweep found it unpaid; it stays", o.ID, stamp(o.PaidAt))
	case !o.PlacedAt.Before(c.PlacedBefore):
		return d.reject(events.CodeOrderNotDue, "order %s was placed at %s, not before %s; it is not overdue",
			o.ID, stamp(o.PlacedAt), stamp(c.PlacedBefore))
	}
	reason := "expired unpaid: placed at " + stamp(o.PlacedAt) + ", not paid by " + stamp(c.PlacedBefore)
	cancelled := events.OrderCancelled{
		OrderID:     o.ID,
		UserID:      o.UserID,
		Reason:      reason,
		WasPaid:     false,
		TotalCents:  o.TotalCents,
		CancelledAt: d.now,
	}
	return d.accept(cancelled, func(o *Order) {
		o.Status = StatusCancelled
		o.CancelReason = reason
		o.CancelledAt = d.now
	})
}

// expireOrder handles an ExpireOrder command with DecideExpire.
func (h *Handler) expireOrder(ctx context.Context, c *events.ExpireOrder) error {
	return h.apply(ctx, *c, func(current *Order, commandID string, now time.Time) (*Order, []events.Message) {
		return DecideExpire(current, *c, commandID, now)
	})
}

// apply runs a decision on the order the command names, in the store, as
// decide does for Decide.
func (h *Handler) apply(ctx context.Context, cmd events.Message, decide func(current *Order, commandID string, now time.Time) (*Order, []events.Message)) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("handle %s for order %s: no incoming message in context", cmd.Name(), cmd.Key())
	}
	err := h.store.Apply(ctx, cmd.Key(), func(current *Order) (*Order, []events.Message, error) {
		next, emitted := decide(current, msg.UUID, h.now())
		if next == current {
			next = nil // rejected: nothing to save
		}
		return next, emitted, nil
	})
	if err != nil {
		return fmt.Errorf("handle %s %s for order %s: %w", cmd.Name(), msg.UUID, cmd.Key(), err)
	}
	return nil
}

package orders

import (
	"fmt"
	"reflect"
	"time"

	"github.com/millrace/millrace/events"
)

// Status is where an order is in its life.
type Status string

const (
	StatusPlaced    Status = "placed"
	StatusPaid      Status = "paid"
	StatusCancelled Status = "cancelled"
	StatusShipped   Status = "shipped"
)

// DefaultCurrency is the currency of an order placed without one.
const DefaultCurrency = "EUR"

// MaxTotalCents is the largest order total accepted (10 trillion in major
// units): far above any real order, far below where int64 arithmetic on
// totals could overflow.
const MaxTotalCents int64 = 1_000_000_000_000_000

// Order is the state of one order, stored as JSON: field names and tags are
// a storage format and change only compatibly.
type Order struct {
	ID         string              `json:"id"`
	UserID     string              `json:"user_id"`
	Lines      []events.PricedLine `json:"lines"`
	TotalCents int64               `json:"total_cents"`
	Currency   string              `json:"currency"`
	Status     Status              `json:"status"`
	PaymentRef string              `json:"payment_ref,omitempty"`
	Carrier    string              `json:"carrier,omitempty"`
	// CancelReason is the reason given when the order was cancelled.
	CancelReason string    `json:"cancel_reason,omitempty"`
	PlacedAt     time.Time `json:"placed_at"`
	PaidAt       time.Time `json:"paid_at,omitzero"`
	CancelledAt  time.Time `json:"cancelled_at,omitzero"`
	ShippedAt    time.Time `json:"shipped_at,omitzero"`
}

// Decide applies the orders rules to cmd (one of events.PlaceOrder, PayOrder,
// CancelOrder, ShipOrder, by value or pointer) given the current order (nil
// when none exists), whether the command's user is registered (used by
// PlaceOrder only), the command's id and the time of the decision.
//
// When the command is accepted it returns a new *Order, never current itself,
// and the events that record the change. When a rule refuses it, it returns
// current itself and exactly one events.CommandRejected explaining why.
func Decide(current *Order, cmd events.Message, userExists bool, commandID string, now time.Time) (*Order, []events.Message) {
	d := decision{current: current, cmd: cmd, commandID: commandID, now: now.UTC()}
	switch c := cmd.(type) {
	case events.PlaceOrder:
		return d.place(c, userExists)
	case *events.PlaceOrder:
		if c != nil {
			return d.place(*c, userExists)
		}
	case events.PayOrder:
		return d.pay(c)
	case *events.PayOrder:
		if c != nil {
			return d.pay(*c)
		}
	case events.CancelOrder:
		return d.cancel(c)
	case *events.CancelOrder:
		if c != nil {
			return d.cancel(*c)
		}
	case events.ShipOrder:
		return d.ship(c)
	case *events.ShipOrder:
		if c != nil {
			return d.ship(*c)
		}
	}
	name := fmt.Sprintf("%T", cmd)
	if v := reflect.ValueOf(cmd); v.IsValid() && !(v.Kind() == reflect.Pointer && v.IsNil()) {
		name = cmd.Name()
	}
	return current, []events.Message{events.CommandRejected{
		CommandID:   commandID,
		CommandType: name,
		Code:        events.CodeInvalidCommand,
		Reason:      fmt.Sprintf("the orders context does not handle %s commands", name),
		RejectedAt:  d.now,
	}}
}

// decision holds what every rule needs to accept or reject.
type decision struct {
	current   *Order
	cmd       events.Message
	commandID string
	now       time.Time
}

// reject leaves the order unchanged and explains why.
func (d decision) reject(code, format string, args ...any) (*Order, []events.Message) {
	return d.current, []events.Message{events.CommandRejected{
		CommandID:   d.commandID,
		CommandType: d.cmd.Name(),
		AggregateID: d.cmd.Key(),
		Code:        code,
		Reason:      fmt.Sprintf(format, args...),
		RejectedAt:  d.now,
	}}
}

// accept returns a copy of the current order changed by change, and e.
func (d decision) accept(e events.Message, change func(o *Order)) (*Order, []events.Message) {
	var next Order
	if d.current != nil {
		next = *d.current
		next.Lines = append([]events.PricedLine(nil), d.current.Lines...)
	}
	change(&next)
	return &next, []events.Message{e}
}

func (d decision) place(c events.PlaceOrder, userExists bool) (*Order, []events.Message) {
	switch {
	case c.OrderID == "":
		return d.reject(events.CodeInvalidCommand, "the order id is missing")
	case c.UserID == "":
		return d.reject(events.CodeInvalidCommand, "the user id is missing; say which user places order %s", c.OrderID)
	case d.current != nil:
		return d.reject(events.CodeOrderExists, "order %s was already placed at %s; use a new order id for a new order",
			c.OrderID, stamp(d.current.PlacedAt))
	case !userExists:
		return d.reject(events.CodeUnknownUser, "user %s is not registered; register the user before placing an order", c.UserID)
	case len(c.Lines) == 0:
		return d.reject(events.CodeEmptyOrder, "order %s has no lines; an order needs at least one line", c.OrderID)
	}
	currency := c.Currency
	if currency == "" {
		currency = DefaultCurrency
	}
	if !isCurrencyCode(currency) {
		return d.reject(events.CodeInvalidCommand, "currency %q is not an ISO 4217 code in upper case, such as EUR", c.Currency)
	}

	lines := make([]events.PricedLine, len(c.Lines))
	var total int64
	for i, l := range c.Lines {
		n := i + 1
		switch {
		case l.SKU == "":
			return d.reject(events.CodeInvalidCommand, "line %d has no sku; every line names the product it orders", n)
		case l.Quantity <= 0:
			return d.reject(events.CodeInvalidQuantity, "line %d (%s) has quantity %d; a quantity must be at least 1", n, l.SKU, l.Quantity)
		case l.UnitPriceCents < 0:
			return d.reject(events.CodeInvalidPrice, "line %d (%s) has a negative unit price of %s; prices cannot be negative",
				n, l.SKU, money(l.UnitPriceCents, currency))
		}
		// Checked by division before multiplying, so nothing overflows.
		if l.UnitPriceCents > 0 && int64(l.Quantity) > (MaxTotalCents-total)/l.UnitPriceCents {
			return d.reject(events.CodeInvalidCommand, "the total of order %s exceeds the maximum of %s; split it into smaller orders",
				c.OrderID, money(MaxTotalCents, currency))
		}
		lineTotal := int64(l.Quantity) * l.UnitPriceCents
		total += lineTotal
		lines[i] = events.PricedLine{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents, LineTotalCents: lineTotal}
	}

	placed := events.OrderPlacedV2{
		OrderID:    c.OrderID,
		UserID:     c.UserID,
		Lines:      lines,
		ItemCount:  events.ItemCount(lines),
		TotalCents: total,
		Currency:   currency,
		PlacedAt:   d.now,
	}
	return d.accept(placed, func(o *Order) {
		*o = Order{
			ID:         c.OrderID,
			UserID:     c.UserID,
			Lines:      append([]events.PricedLine(nil), lines...),
			TotalCents: total,
			Currency:   currency,
			Status:     StatusPlaced,
			PlacedAt:   d.now,
		}
	})
}

func (d decision) pay(c events.PayOrder) (*Order, []events.Message) {
	o := d.current
	switch {
	case c.OrderID == "":
		return d.reject(events.CodeInvalidCommand, "the order id is missing")
	case o == nil:
		return d.reject(events.CodeOrderNotFound, "order %s does not exist", c.OrderID)
	case o.Status == StatusCancelled:
		return d.reject(events.CodeOrderCancelled, "order %s was cancelled at %s and cannot be paid", o.ID, stamp(o.CancelledAt))
	case o.Status == StatusPaid || o.Status == StatusShipped:
		return d.reject(events.CodeOrderAlreadyPaid, "order %s was already paid at %s", o.ID, stamp(o.PaidAt))
	case c.AmountCents != o.TotalCents:
		return d.reject(events.CodeAmountMismatch, "a payment of %s does not match the total of order %s, %s; pay the total exactly",
			money(c.AmountCents, o.Currency), o.ID, money(o.TotalCents, o.Currency))
	}
	paid := events.OrderPaid{
		OrderID:     o.ID,
		UserID:      o.UserID,
		AmountCents: c.AmountCents,
		Currency:    o.Currency,
		PaymentRef:  c.PaymentRef,
		PaidAt:      d.now,
	}
	return d.accept(paid, func(o *Order) {
		o.Status = StatusPaid
		o.PaymentRef = c.PaymentRef
		o.PaidAt = d.now
	})
}

func (d decision) cancel(c events.CancelOrder) (*Order, []events.Message) {
	o := d.current
	switch {
	case c.OrderID == "":
		return d.reject(events.CodeInvalidCommand, "the order id is missing")
	case o == nil:
		return d.reject(events.CodeOrderNotFound, "order %s does not exist", c.OrderID)
	case o.Status == StatusCancelled:
		return d.reject(events.CodeOrderCancelled, "order %s was already cancelled at %s", o.ID, stamp(o.CancelledAt))
	case o.Status == StatusShipped:
		return d.reject(events.CodeOrderShipped, "order %s was shipped at %s and can no longer be cancelled", o.ID, stamp(o.ShippedAt))
	}
	cancelled := events.OrderCancelled{
		OrderID:     o.ID,
		UserID:      o.UserID,
		Reason:      c.Reason,
		WasPaid:     o.Status == StatusPaid,
		TotalCents:  o.TotalCents,
		CancelledAt: d.now,
	}
	return d.accept(cancelled, func(o *Order) {
		o.Status = StatusCancelled
		o.CancelReason = c.Reason
		o.CancelledAt = d.now
	})
}

func (d decision) ship(c events.ShipOrder) (*Order, []events.Message) {
	o := d.current
	switch {
	case c.OrderID == "":
		return d.reject(events.CodeInvalidCommand, "the order id is missing")
	case o == nil:
		return d.reject(events.CodeOrderNotFound, "order %s does not exist", c.OrderID)
	case o.Status == StatusCancelled:
		return d.reject(events.CodeOrderCancelled, "order %s was cancelled at %s and cannot be shipped", o.ID, stamp(o.CancelledAt))
	case o.Status == StatusShipped:
		return d.reject(events.CodeOrderShipped, "order %s was already shipped at %s", o.ID, stamp(o.ShippedAt))
	case o.Status != StatusPaid:
		return d.reject(events.CodeOrderNotPaid, "order %s has not been paid; only paid orders are shipped", o.ID)
	}
	shipped := events.OrderShipped{
		OrderID:   o.ID,
		UserID:    o.UserID,
		Carrier:   c.Carrier,
		ShippedAt: d.now,
	}
	return d.accept(shipped, func(o *Order) {
		o.Status = StatusShipped
		o.Carrier = c.Carrier
		o.ShippedAt = d.now
	})
}

// isCurrencyCode reports whether s looks like an ISO 4217 code: three
// upper-case letters.
func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, c := range []byte(s) {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// stamp formats a time for a reason a user reads.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// money formats minor units as an amount, e.g. 1999 EUR as "19.99 EUR".
func money(cents int64, currency string) string {
	sign := ""
	u := uint64(cents)
	if cents < 0 {
		sign = "-"
		u = uint64(-(cents + 1)) + 1 // no overflow for math.MinInt64
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, u/100, u%100, currency)
}

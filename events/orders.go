package events

import "time"

// OrderLine is one product line of an order as the customer asked for it.
type OrderLine struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// PricedLine is an order line with its total computed by the orders context.
type PricedLine struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	LineTotalCents int64  `json:"line_total_cents"`
}

// PlaceOrder asks the orders context to place an order for a registered user.
// Totals are never taken from the client: the orders context computes them.
type PlaceOrder struct {
	OrderID  string      `json:"order_id"`
	UserID   string      `json:"user_id"`
	Lines    []OrderLine `json:"lines"`
	Currency string      `json:"currency"`
}

func (PlaceOrder) Name() string  { return "orders.place-order.v1" }
func (c PlaceOrder) Key() string { return c.OrderID }

// PayOrder records a payment of the order's full amount.
type PayOrder struct {
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	PaymentRef  string `json:"payment_ref"`
}

func (PayOrder) Name() string  { return "orders.pay-order.v1" }
func (c PayOrder) Key() string { return c.OrderID }

// CancelOrder cancels an order that has not shipped.
type CancelOrder struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

func (CancelOrder) Name() string  { return "orders.cancel-order.v1" }
func (c CancelOrder) Key() string { return c.OrderID }

// ShipOrder ships a paid order.
type ShipOrder struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}

func (ShipOrder) Name() string  { return "orders.ship-order.v1" }
func (c ShipOrder) Key() string { return c.OrderID }

// OrderPlaced records a new order with server-computed totals.
//
// Deprecated: version 1 of the event, no longer emitted. The orders context
// emits [OrderPlacedV2] instead; v1 events stay in the log and [Upcast]
// turns them into v2 for consumers that read the current version only.
type OrderPlaced struct {
	OrderID    string       `json:"order_id"`
	UserID     string       `json:"user_id"`
	Lines      []PricedLine `json:"lines"`
	TotalCents int64        `json:"total_cents"`
	Currency   string       `json:"currency"`
	PlacedAt   time.Time    `json:"placed_at"`
}

func (OrderPlaced) Name() string  { return "orders.order-placed.v1" }
func (e OrderPlaced) Key() string { return e.OrderID }

// OrderPlacedV2 records a new order with server-computed totals and the
// number of units ordered. It is version 2 of orders.order-placed: it adds
// ItemCount, which v1 consumers derived themselves from the lines (and the
// JSON Schema of v1 forbids unknown properties, so the field could not be
// added to v1). Everything else means what it meant in v1.
type OrderPlacedV2 struct {
	OrderID string       `json:"order_id"`
	UserID  string       `json:"user_id"`
	Lines   []PricedLine `json:"lines"`
	// ItemCount is the sum of the quantities of the lines.
	ItemCount  int       `json:"item_count"`
	TotalCents int64     `json:"total_cents"`
	Currency   string    `json:"currency"`
	PlacedAt   time.Time `json:"placed_at"`
}

func (OrderPlacedV2) Name() string  { return "orders.order-placed.v2" }
func (e OrderPlacedV2) Key() string { return e.OrderID }

// ItemCount is the number of units the lines order: the sum of their quantities.
func ItemCount(lines []PricedLine) int {
	n := 0
	for _, l := range lines {
		n += l.Quantity
	}
	return n
}

// OrderPaid records the payment of an order.
type OrderPaid struct {
	OrderID     string    `json:"order_id"`
	UserID      string    `json:"user_id"`
	AmountCents int64     `json:"amount_cents"`
	Currency    string    `json:"currency"`
	PaymentRef  string    `json:"payment_ref"`
	PaidAt      time.Time `json:"paid_at"`
}

func (OrderPaid) Name() string  { return "orders.order-paid.v1" }
func (e OrderPaid) Key() string { return e.OrderID }

// OrderCancelled records the cancellation of an order.
type OrderCancelled struct {
	OrderID     string    `json:"order_id"`
	UserID      string    `json:"user_id"`
	Reason      string    `json:"reason"`
	WasPaid     bool      `json:"was_paid"`
	TotalCents  int64     `json:"total_cents"`
	CancelledAt time.Time `json:"cancelled_at"`
}

func (OrderCancelled) Name() string  { return "orders.order-cancelled.v1" }
func (e OrderCancelled) Key() string { return e.OrderID }

// OrderShipped records that a paid order left the warehouse.
type OrderShipped struct {
	OrderID   string    `json:"order_id"`
	UserID    string    `json:"user_id"`
	Carrier   string    `json:"carrier"`
	ShippedAt time.Time `json:"shipped_at"`
}

func (OrderShipped) Name() string  { return "orders.order-shipped.v1" }
func (e OrderShipped) Key() string { return e.OrderID }

// Package notifications is a reactor: it tells users what happened to them,
// one notification per event (a user registered; an order placed, paid,
// cancelled or shipped), and lists a user's notifications.
//
// Notifications are recorded in a SQLite table keyed by the id of the event
// that caused them (INSERT OR IGNORE), so a redelivered or re-published event
// records nothing twice. Delivery to a mail or push service would read from
// that table; the ids make it safe to retry.
//
// Register [Reactor.GroupHandlers] with a cqrs.EventGroupProcessor, one group
// per events topic, with AckOnUnknownEvent set: the other events on those
// topics are not this reactor's business.
//
// Delivery is the side effect that reaches outside: a [Deliverer] given with
// [WithDeliverer] sends each notification once, after it is recorded. Events
// handled again on purpose (the reactor's consumer group reset to an earlier
// time; cloudevents.IsReplaying tells) are recorded if they are new to the
// table, so that the list stays whole, but never delivered: nobody is told
// twice, or years late, about an order.
package notifications

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
)

// Kinds of notification.
const (
	KindWelcome        = "welcome"
	KindOrderPlaced    = "order_placed"
	KindOrderPaid      = "order_paid"
	KindOrderCancelled = "order_cancelled"
	KindOrderShipped   = "order_shipped"
)

// Notification is one message to a user.
type Notification struct {
	// EventID is the id (ce_id) of the event that caused the notification.
	EventID   string    `json:"event_id"`
	UserID    string    `json:"user_id"`
	Kind      string    `json:"kind"`
	Subject   string    `json:"subject"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// timeLayout stores times as fixed-width UTC text, so that they sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Deliverer sends a notification to its user (mail, push, a webhook). It is
// called at most once per notification that succeeded; an error leaves the
// notification pending, and the event's redelivery tries again. It must be
// safe for concurrent use.
type Deliverer interface {
	Deliver(ctx context.Context, n Notification) error
}

// Option changes how New builds a Reactor.
type Option func(*Reactor)

// WithDeliverer makes the reactor deliver every notification it records, but
// not those of replayed events.
func WithDeliverer(d Deliverer) Option { return func(r *Reactor) { r.deliver = d } }

// Delivery states of a recorded notification.
const (
	deliveryNone       = "none"       // no deliverer
	deliveryPending    = "pending"    // not yet delivered
	deliverySent       = "sent"       // delivered
	deliverySuppressed = "suppressed" // recorded from a replayed event: never delivered
)

// Reactor records notifications in a SQLite database. It is safe for
// concurrent use. It does not own the database: the caller closes it, after
// Close released the statements the reactor prepared.
type Reactor struct {
	db      *sql.DB
	now     func() time.Time
	deliver Deliverer

	// The statements every event runs, prepared once: parsing them for
	// each event cost as much as running them.
	insert, read, markSent *sql.Stmt
}

// New creates the notifications table in db if needed. now stamps
// notifications; time.Now when nil.
func New(ctx context.Context, db *sql.DB, now func() time.Time, opts ...Option) (*Reactor, error) {
	if db == nil {
		return nil, fmt.Errorf("create notifications reactor: no database given")
	}
	if now == nil {
		now = time.Now
	}
	r := &Reactor{db: db, now: now}
	for _, o := range opts {
		o(r)
	}
	if _, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS notifications (
	event_id   TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	kind       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	body       TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, created_at);`); err != nil {
		return nil, fmt.Errorf("create notifications table: %w", err)
	}
	// Tables made before delivery existed: their rows were never delivered
	// by a Deliverer, and none will be now.
	var hasDelivery int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('notifications') WHERE name = 'delivery'`).Scan(&hasDelivery); err != nil {
		return nil, fmt.Errorf("create notifications table: %w", err)
	}
	if hasDelivery == 0 {
		if _, err := db.ExecContext(ctx, `ALTER TABLE notifications ADD COLUMN delivery TEXT NOT NULL DEFAULT 'none'`); err != nil {
			return nil, fmt.Errorf("create notifications table: add delivery: %w", err)
		}
	}
	for _, q := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&r.insert, `INSERT OR IGNORE INTO notifications
			(event_id, user_id, kind, subject, body, created_at, delivery) VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&r.read, `SELECT event_id, user_id, kind, subject, body, created_at, delivery
			FROM notifications WHERE event_id = ?`},
		{&r.markSent, `UPDATE notifications SET delivery = ? WHERE event_id = ?`},
	} {
		stmt, err := db.PrepareContext(ctx, q.sql)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("prepare %q: %w", q.sql, err), r.Close())
		}
		*q.stmt = stmt
	}
	return r, nil
}

// Close releases the statements the reactor prepared. Call it once its
// handlers stopped, before closing the database; the reactor is unusable
// afterwards.
func (r *Reactor) Close() error {
	var errs []error
	for _, stmt := range []**sql.Stmt{&r.insert, &r.read, &r.markSent} {
		if *stmt != nil {
			errs = append(errs, (*stmt).Close())
			*stmt = nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close notifications reactor: %w", err)
	}
	return nil
}

// GroupHandlers returns the reactor's typed event handlers. An error means the
// notification was not recorded and the event should be redelivered.
func (r *Reactor) GroupHandlers() []cqrs.GroupEventHandler {
	return []cqrs.GroupEventHandler{
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.UserRegistered) error {
			return r.record(ctx, e.UserID, KindWelcome,
				fmt.Sprintf("Welcome to millrace, %s", e.FullName),
				fmt.Sprintf("Hello %s, your account %s is ready.", e.FullName, e.Email))
		}),
		cqrs.NewGroupEventHandler(r.orderPlaced),
		// Version 1, still in the log and possibly in flight during an
		// upgrade: upcast, then handled as version 2.
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.OrderPlaced) error {
			v2, _ := events.Upcast(e).(*events.OrderPlacedV2)
			return r.orderPlaced(ctx, v2)
		}),
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.OrderPaid) error {
			body := fmt.Sprintf("We received your payment of %s for order %s.", money(e.AmountCents, e.Currency), e.OrderID)
			if e.PaymentRef != "" {
				body = fmt.Sprintf("We received your payment of %s for order %s (reference %s).",
					money(e.AmountCents, e.Currency), e.OrderID, e.PaymentRef)
			}
			return r.record(ctx, e.UserID, KindOrderPaid, fmt.Sprintf("Payment received for order %s", e.OrderID), body)
		}),
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.OrderCancelled) error {
			body := fmt.Sprintf("Your order %s was cancelled.", e.OrderID)
			if e.Reason != "" {
				body = fmt.Sprintf("Your order %s was cancelled: %s.", e.OrderID, e.Reason)
			}
			if e.WasPaid {
				body += " Your payment will be refunded in full."
			}
			return r.record(ctx, e.UserID, KindOrderCancelled, fmt.Sprintf("Order %s cancelled", e.OrderID), body)
		}),
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.OrderShipped) error {
			body := fmt.Sprintf("Your order %s is on its way.", e.OrderID)
			if e.Carrier != "" {
				body = fmt.Sprintf("Your order %s is on its way with %s.", e.OrderID, e.Carrier)
			}
			return r.record(ctx, e.UserID, KindOrderShipped, fmt.Sprintf("Order %s shipped", e.OrderID), body)
		}),
	}
}

func (r *Reactor) orderPlaced(ctx context.Context, e *events.OrderPlacedV2) error {
	return r.record(ctx, e.UserID, KindOrderPlaced,
		fmt.Sprintf("Order %s placed", e.OrderID),
		fmt.Sprintf("We received your order %s: %s for %s.", e.OrderID, itemCount(e.ItemCount), money(e.TotalCents, e.Currency)))
}

// record stores one notification for the event being handled, once, and
// delivers it unless the event is replayed.
func (r *Reactor) record(ctx context.Context, userID, kind, subject, body string) error {
	msg := cqrs.OriginalMessageFromCtx(ctx)
	if msg == nil {
		return fmt.Errorf("record %s notification for user %s: no incoming event in context", kind, userID)
	}
	replay := cloudevents.IsReplaying(ctx)
	state := deliveryNone
	switch {
	case r.deliver != nil && replay:
		state = deliverySuppressed
	case r.deliver != nil:
		state = deliveryPending
	}
	created := r.now().UTC()
	stamp := created.Format(timeLayout)
	res, err := r.insert.ExecContext(ctx, msg.UUID, userID, kind, subject, body, stamp, state)
	if err != nil {
		return fmt.Errorf("record %s notification of event %s for user %s: %w", kind, msg.UUID, userID, err)
	}
	if r.deliver == nil || replay {
		return nil
	}
	inserted, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("record %s notification of event %s for user %s: %w", kind, msg.UUID, userID, err)
	}
	if inserted == 1 {
		// Just recorded as pending: deliver what was stored, without
		// reading it back.
		stored, _ := time.Parse(timeLayout, stamp) // the layout's own output
		return r.deliverOnce(ctx, Notification{
			EventID: msg.UUID, UserID: userID, Kind: kind, Subject: subject, Body: body, CreatedAt: stored,
		})
	}
	return r.deliverPending(ctx, msg.UUID)
}

// deliverPending delivers the notification of an event recorded before (a
// redelivered event) if it is still pending: its delivery failed then.
func (r *Reactor) deliverPending(ctx context.Context, eventID string) error {
	var (
		n              Notification
		created, state string
	)
	if err := r.read.QueryRowContext(ctx, eventID).Scan(&n.EventID, &n.UserID, &n.Kind, &n.Subject, &n.Body, &created, &state); err != nil {
		return fmt.Errorf("read notification of event %s: %w", eventID, err)
	}
	if state != deliveryPending {
		return nil
	}
	t, err := time.Parse(timeLayout, created)
	if err != nil {
		return fmt.Errorf("read notification of event %s: %w", eventID, err)
	}
	n.CreatedAt = t
	return r.deliverOnce(ctx, n)
}

// deliverOnce delivers a pending notification and marks it sent.
func (r *Reactor) deliverOnce(ctx context.Context, n Notification) error {
	if err := r.deliver.Deliver(ctx, n); err != nil {
		return fmt.Errorf("deliver notification of event %s to user %s: %w", n.EventID, n.UserID, err)
	}
	if _, err := r.markSent.ExecContext(ctx, deliverySent, n.EventID); err != nil {
		return fmt.Errorf("mark notification of event %s delivered: %w", n.EventID, err)
	}
	return nil
}

// ForUser returns a user's notifications, newest first; none is an empty
// result, not an error.
func (r *Reactor) ForUser(ctx context.Context, userID string) ([]Notification, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT event_id, user_id, kind, subject, body, created_at
		FROM notifications WHERE user_id = ? ORDER BY created_at DESC, rowid DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("list notifications of user %s: %w", userID, err)
	}
	defer rows.Close()
	var list []Notification
	for rows.Next() {
		var (
			n       Notification
			created string
		)
		if err := rows.Scan(&n.EventID, &n.UserID, &n.Kind, &n.Subject, &n.Body, &created); err != nil {
			return nil, fmt.Errorf("list notifications of user %s: %w", userID, err)
		}
		if n.CreatedAt, err = time.Parse(timeLayout, created); err != nil {
			return nil, fmt.Errorf("list notifications of user %s: notification %s: %w", userID, n.EventID, err)
		}
		list = append(list, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list notifications of user %s: %w", userID, err)
	}
	return list, nil
}

// itemCount describes a number of items for a reader: "1 item", "3 items".
func itemCount(n int) string {
	if n == 1 {
		return "1 item"
	}
	return fmt.Sprintf("%d items", n)
}

// money formats minor units as an amount, e.g. 1999 EUR as "19.99 EUR".
func money(cents int64, currency string) string {
	sign := ""
	u := uint64(cents)
	if cents < 0 {
		sign = "-"
		u = uint64(-(cents + 1)) + 1
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, u/100, u%100, currency)
}

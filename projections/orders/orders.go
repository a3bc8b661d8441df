// Package orders is the read model of orders: each order's details and
// status, and the orders of each user, newest first. It folds users.events and
// orders.events, run by a projections.Runner, and answers the gateway's
// GET /v1/orders/{id} and GET /v1/users/{id}/orders.
//
// Its tables carry the projection version in their names (orders_v1_orders,
// orders_v2_orders, …; see projections.Table), so that a new version is
// rebuilt beside the one that serves; queries read the active version.
package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
)

// Errors of the queries.
var (
	ErrNotFound     = errors.New("order not found")
	ErrUserNotFound = errors.New("user not found")
)

// Order statuses.
const (
	StatusPlaced    = "placed"
	StatusPaid      = "paid"
	StatusCancelled = "cancelled"
	StatusShipped   = "shipped"
)

// Order is one order as the read model knows it.
type Order struct {
	OrderID      string              `json:"order_id"`
	UserID       string              `json:"user_id"`
	Status       string              `json:"status"` // placed|paid|cancelled|shipped
	Lines        []events.PricedLine `json:"lines"`
	TotalCents   int64               `json:"total_cents"`
	Currency     string              `json:"currency"`
	PlacedAt     time.Time           `json:"placed_at"`
	PaidAt       *time.Time          `json:"paid_at,omitempty"`
	CancelledAt  *time.Time          `json:"cancelled_at,omitempty"`
	CancelReason string              `json:"cancel_reason,omitempty"`
	ShippedAt    *time.Time          `json:"shipped_at,omitempty"`
	Carrier      string              `json:"carrier,omitempty"`
	UpdatedAt    time.Time           `json:"updated_at"`
}

// Summary is one line of a user's list of orders.
type Summary struct {
	OrderID    string    `json:"order_id"`
	Status     string    `json:"status"`
	TotalCents int64     `json:"total_cents"`
	Currency   string    `json:"currency"`
	PlacedAt   time.Time `json:"placed_at"`
}

// Projection is the orders read model. Apply is called by a
// projections.Runner; the query methods are safe for concurrent use with it
// and with each other. It does not own the database.
type Projection struct {
	db *sql.DB
}

// New returns the orders projection, reading and writing db.
func New(db *sql.DB) *Projection { return &Projection{db: db} }

// Name implements projections.Projection.
func (*Projection) Name() string { return "orders" }

// Topics implements projections.Projection.
func (*Projection) Topics() []string {
	return []string{events.TopicUserEvents, events.TopicOrderEvents}
}

// Times are stored as Unix nanoseconds, so that they sort as numbers (see nanos).
const setupSQL = `
CREATE TABLE IF NOT EXISTS %[1]s (
	user_id       TEXT PRIMARY KEY,
	registered_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS %[2]s (
	order_id      TEXT PRIMARY KEY,
	user_id       TEXT    NOT NULL,
	status        TEXT    NOT NULL,
	lines         TEXT    NOT NULL,
	total_cents   INTEGER NOT NULL,
	currency      TEXT    NOT NULL,
	placed_at     INTEGER NOT NULL,
	paid_at       INTEGER,
	cancelled_at  INTEGER,
	cancel_reason TEXT    NOT NULL DEFAULT '',
	shipped_at    INTEGER,
	carrier       TEXT    NOT NULL DEFAULT '',
	updated_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS %[3]s ON %[2]s (user_id, placed_at DESC, order_id DESC);`

// Setup implements projections.Projection.
func (*Projection) Setup(ctx context.Context, tx *projections.Tx) error {
	ddl := fmt.Sprintf(setupSQL, tx.Table("users"), tx.Table("orders"), tx.Table("orders_by_user"))
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("create orders tables: %w", err)
	}
	return nil
}

// Apply implements projections.Projection. Events of one order arrive in
// order (one key, one partition); OrderPlaced of either version arrives as
// *events.OrderPlacedV2 (the runner upcasts). An event about an order the
// read model has not seen placed (consumption started after it) changes
// nothing. Other types are ignored.
func (*Projection) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	users, orders := tx.Table("users"), tx.Table("orders")
	var err error
	switch d := e.Data.(type) {
	case *events.UserRegistered:
		_, err = tx.ExecContext(ctx,
			`INSERT INTO `+users+` (user_id, registered_at) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING`,
			d.UserID, nanos(d.RegisteredAt))
	case *events.OrderPlacedV2:
		var lines []byte
		lines, err = json.Marshal(nonNil(d.Lines))
		if err != nil {
			return fmt.Errorf("encode lines of order %s: %w", d.OrderID, err)
		}
		_, err = tx.ExecContext(ctx, `
INSERT INTO `+orders+` (order_id, user_id, status, lines, total_cents, currency, placed_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`,
			d.OrderID, d.UserID, StatusPlaced, string(lines), d.TotalCents, d.Currency, nanos(d.PlacedAt), nanos(d.PlacedAt))
	case *events.OrderPaid:
		_, err = tx.ExecContext(ctx,
			`UPDATE `+orders+` SET status = ?, paid_at = ?, updated_at = ? WHERE order_id = ?`,
			StatusPaid, nanos(d.PaidAt), nanos(d.PaidAt), d.OrderID)
	case *events.OrderCancelled:
		_, err = tx.ExecContext(ctx,
			`UPDATE `+orders+` SET status = ?, cancelled_at = ?, cancel_reason = ?, updated_at = ? WHERE order_id = ?`,
			StatusCancelled, nanos(d.CancelledAt), d.Reason, nanos(d.CancelledAt), d.OrderID)
	case *events.OrderShipped:
		_, err = tx.ExecContext(ctx,
			`UPDATE `+orders+` SET status = ?, shipped_at = ?, carrier = ?, updated_at = ? WHERE order_id = ?`,
			StatusShipped, nanos(d.ShippedAt), d.Carrier, nanos(d.ShippedAt), d.OrderID)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply %s %s to orders: %w", e.Type, e.ID, err)
	}
	return nil
}

// orderColumns are the columns of an order row that ApplyBatch writes, in
// the order of its arguments.
const orderColumns = `order_id, user_id, status, lines, total_cents, currency, placed_at, paid_at,
	cancelled_at, cancel_reason, shipped_at, carrier, updated_at`

// orderWidth is the number of orderColumns.
const orderWidth = 13

// upsertFolded is the conflict clause of an order placed in a batch whose
// later events of the batch were folded into its row: when the row existed
// before (OrderPlaced came again, with another event id), the insert does
// nothing, as Apply's would, and the folded events update it as Apply's
// updates would. Each update sets status and updated_at, and its own
// columns, never NULL; a column the folded events left NULL was not set by
// them.
const upsertFolded = `ON CONFLICT (order_id) DO UPDATE SET
	status = excluded.status,
	updated_at = excluded.updated_at,
	paid_at = COALESCE(excluded.paid_at, paid_at),
	cancelled_at = COALESCE(excluded.cancelled_at, cancelled_at),
	cancel_reason = CASE WHEN excluded.cancelled_at IS NULL THEN cancel_reason ELSE excluded.cancel_reason END,
	shipped_at = COALESCE(excluded.shipped_at, shipped_at),
	carrier = CASE WHEN excluded.shipped_at IS NULL THEN carrier ELSE excluded.carrier END`

// placedRow is an order placed in the batch ApplyBatch applies, with the
// events of the batch that followed folded in.
type placedRow struct {
	orderID, userID, status, lines, currency string
	totalCents, placedAt, updatedAt          int64
	paidAt, cancelledAt, shippedAt           *int64
	cancelReason, carrier                    string
	folded                                   bool // later events changed it
}

func (o *placedRow) args(dst []any) []any {
	return append(dst, o.orderID, o.userID, o.status, o.lines, o.totalCents, o.currency, o.placedAt,
		nullable(o.paidAt), nullable(o.cancelledAt), o.cancelReason, nullable(o.shippedAt), o.carrier, o.updatedAt)
}

func nullable(n *int64) any {
	if n == nil {
		return nil
	}
	return *n
}

// ApplyBatch implements projections.BatchApplier, with the effect of Apply
// for each event in turn in fewer statements: an order placed in the batch
// becomes one row in memory, which its later events of the batch (paid,
// cancelled, shipped) change, and the rows are written at the end, many per
// statement. Events about orders not placed in the batch, and users, are
// applied at once, as Apply does: no row of theirs is pending, so the
// database holds their state at that point.
func (p *Projection) ApplyBatch(ctx context.Context, tx *projections.Tx, evs []projections.Event) error {
	pending := map[string]*placedRow{}
	var order []*placedRow // in the order they were placed
	for _, e := range evs {
		var row *placedRow
		switch d := e.Data.(type) {
		case *events.OrderPlacedV2:
			if pending[d.OrderID] != nil {
				continue // Apply's insert would do nothing: the row exists
			}
			lines, err := json.Marshal(nonNil(d.Lines))
			if err != nil {
				return fmt.Errorf("encode lines of order %s: %w", d.OrderID, err)
			}
			row = &placedRow{
				orderID: d.OrderID, userID: d.UserID, status: StatusPlaced, lines: string(lines), currency: d.Currency,
				totalCents: d.TotalCents, placedAt: nanos(d.PlacedAt), updatedAt: nanos(d.PlacedAt),
			}
			pending[d.OrderID] = row
			order = append(order, row)
			continue
		case *events.OrderPaid:
			row = pending[d.OrderID]
			if row != nil {
				at := nanos(d.PaidAt)
				row.status, row.paidAt, row.updatedAt = StatusPaid, &at, at
			}
		case *events.OrderCancelled:
			row = pending[d.OrderID]
			if row != nil {
				at := nanos(d.CancelledAt)
				row.status, row.cancelledAt, row.cancelReason, row.updatedAt = StatusCancelled, &at, d.Reason, at
			}
		case *events.OrderShipped:
			row = pending[d.OrderID]
			if row != nil {
				at := nanos(d.ShippedAt)
				row.status, row.shippedAt, row.carrier, row.updatedAt = StatusShipped, &at, d.Carrier, at
			}
		}
		if row != nil {
			row.folded = true
			continue
		}
		if err := p.Apply(ctx, tx, e); err != nil {
			return err
		}
	}

	var plain, folded []any
	for _, row := range order {
		if row.folded {
			folded = row.args(folded)
		} else {
			plain = row.args(plain)
		}
	}
	head := `INSERT INTO ` + tx.Table("orders") + ` (` + orderColumns + `) VALUES`
	if _, err := tx.ExecRows(ctx, head, orderWidth, `ON CONFLICT (order_id) DO NOTHING`, plain); err != nil {
		return fmt.Errorf("insert %d orders: %w", len(plain)/orderWidth, err)
	}
	if _, err := tx.ExecRows(ctx, head, orderWidth, upsertFolded, folded); err != nil {
		return fmt.Errorf("insert %d orders: %w", len(folded)/orderWidth, err)
	}
	return nil
}

// Order returns one order, or ErrNotFound.
func (p *Projection) Order(ctx context.Context, id string) (Order, error) {
	var (
		o                        Order
		lines                    string
		placed, updated          int64
		paid, cancelled, shipped sql.NullInt64
	)
	err := projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		return tx.QueryRowContext(ctx, `
SELECT order_id, user_id, status, lines, total_cents, currency, placed_at, paid_at,
       cancelled_at, cancel_reason, shipped_at, carrier, updated_at
FROM `+projections.Table(p.Name(), v, "orders")+` WHERE order_id = ?`, id).Scan(
			&o.OrderID, &o.UserID, &o.Status, &lines, &o.TotalCents, &o.Currency, &placed, &paid,
			&cancelled, &o.CancelReason, &shipped, &o.Carrier, &updated)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("read order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("read order %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(lines), &o.Lines); err != nil {
		return Order{}, fmt.Errorf("read order %s: decode lines: %w", id, err)
	}
	o.PlacedAt = fromNanos(placed)
	o.UpdatedAt = fromNanos(updated)
	o.PaidAt = fromNullNanos(paid)
	o.CancelledAt = fromNullNanos(cancelled)
	o.ShippedAt = fromNullNanos(shipped)
	return o, nil
}

// UserOrders returns a user's orders, newest first: an empty slice for a user
// without orders, ErrUserNotFound for a user never registered.
func (p *Projection) UserOrders(ctx context.Context, userID string) ([]Summary, error) {
	list := []Summary{}
	err := projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+projections.Table(p.Name(), v, "users")+` WHERE user_id = ?`, userID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUserNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `
SELECT order_id, status, total_cents, currency, placed_at FROM `+projections.Table(p.Name(), v, "orders")+`
WHERE user_id = ? ORDER BY placed_at DESC, order_id DESC`, userID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				s      Summary
				placed int64
			)
			if err := rows.Scan(&s.OrderID, &s.Status, &s.TotalCents, &s.Currency, &placed); err != nil {
				return err
			}
			s.PlacedAt = fromNanos(placed)
			list = append(list, s)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read orders of user %s: %w", userID, err)
	}
	return list, nil
}

func nonNil(lines []events.PricedLine) []events.PricedLine {
	if lines == nil {
		return []events.PricedLine{}
	}
	return lines
}

// nanos stores a time as Unix nanoseconds; the zero time as 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos reads a time stored by nanos, in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// Package sales is the read model of sales per day and currency: orders paid
// and their gross amount, orders refunded and their amount, and the net. It
// folds orders.events, run by a projections.Runner, and answers the gateway's
// GET /v1/sales/{date}.
//
// An OrderPaid counts on the UTC day of its PaidAt, in its currency. An
// OrderCancelled of a paid order refunds its TotalCents on the UTC day of its
// CancelledAt, in the currency the order was paid in.
//
// Its tables carry the projection version in their names (sales_v1_days,
// sales_v2_days, …; see projections.Table), so that a new version is rebuilt
// beside the one that serves; queries read the active version.
package sales

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/projections"
)

// ErrBadDate is wrapped by the error of a query for a date that is not YYYY-MM-DD.
var ErrBadDate = errors.New("date must be YYYY-MM-DD")

// dateLayout is the layout of Day.Date.
const dateLayout = "2006-01-02"

// CurrencyTotals are one day's sales in one currency.
type CurrencyTotals struct {
	Currency       string `json:"currency"`
	OrdersPaid     int64  `json:"orders_paid"`
	GrossCents     int64  `json:"gross_cents"`
	OrdersRefunded int64  `json:"orders_refunded"`
	RefundedCents  int64  `json:"refunded_cents"`
	NetCents       int64  `json:"net_cents"`
}

// Day is one UTC day's sales, one entry per currency, ordered by currency.
type Day struct {
	Date       string           `json:"date"` // YYYY-MM-DD
	Currencies []CurrencyTotals `json:"currencies"`
}

// Projection is the sales read model. Apply is called by a
// projections.Runner; the query methods are safe for concurrent use with it
// and with each other. It does not own the database.
type Projection struct {
	db *sql.DB
}

// New returns the sales projection, reading and writing db.
func New(db *sql.DB) *Projection { return &Projection{db: db} }

// Name implements projections.Projection.
func (*Projection) Name() string { return "sales" }

// Topics implements projections.Projection.
func (*Projection) Topics() []string { return []string{events.TopicOrderEvents} }

// The paid table remembers the currency of every paid order, for its refund.
const setupSQL = `
CREATE TABLE IF NOT EXISTS %[1]s (
	day             TEXT    NOT NULL,
	currency        TEXT    NOT NULL,
	orders_paid     INTEGER NOT NULL DEFAULT 0,
	gross_cents     INTEGER NOT NULL DEFAULT 0,
	orders_refunded INTEGER NOT NULL DEFAULT 0,
	refunded_cents  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (day, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS %[2]s (
	order_id TEXT PRIMARY KEY,
	currency TEXT NOT NULL
) WITHOUT ROWID;`

// Setup implements projections.Projection.
func (*Projection) Setup(ctx context.Context, tx *projections.Tx) error {
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(setupSQL, tx.Table("days"), tx.Table("paid"))); err != nil {
		return fmt.Errorf("create sales tables: %w", err)
	}
	return nil
}

// Apply implements projections.Projection. A refund of an order whose payment
// the read model never saw (consumption started after it) is not counted,
// since its currency is unknown. Other types are ignored.
func (*Projection) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	days, paid := tx.Table("days"), tx.Table("paid")
	switch d := e.Data.(type) {
	case *events.OrderPaid:
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO `+paid+` (order_id, currency) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING`,
			d.OrderID, d.Currency); err != nil {
			return fmt.Errorf("apply %s %s to sales: %w", e.Type, e.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `
INSERT INTO `+days+` (day, currency, orders_paid, gross_cents) VALUES (?, ?, 1, ?)
ON CONFLICT (day, currency) DO UPDATE SET
	orders_paid = orders_paid + 1, gross_cents = gross_cents + excluded.gross_cents`,
			day(d.PaidAt), d.Currency, d.AmountCents); err != nil {
			return fmt.Errorf("apply %s %s to sales: %w", e.Type, e.ID, err)
		}
	case *events.OrderCancelled:
		if !d.WasPaid {
			return nil
		}
		var currency string
		err := tx.QueryRowContext(ctx, `SELECT currency FROM `+paid+` WHERE order_id = ?`, d.OrderID).Scan(&currency)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("apply %s %s to sales: read currency of order %s: %w", e.Type, e.ID, d.OrderID, err)
		}
		if _, err := tx.ExecContext(ctx, `
INSERT INTO `+days+` (day, currency, orders_refunded, refunded_cents) VALUES (?, ?, 1, ?)
ON CONFLICT (day, currency) DO UPDATE SET
	orders_refunded = orders_refunded + 1, refunded_cents = refunded_cents + excluded.refunded_cents`,
			day(d.CancelledAt), currency, d.TotalCents); err != nil {
			return fmt.Errorf("apply %s %s to sales: %w", e.Type, e.ID, err)
		}
	}
	return nil
}

// ApplyBatch implements projections.BatchApplier: the same as Apply for
// each event in turn, in a few statements. A day's totals are sums, so the
// batch's payments and refunds are added up per day and currency in memory
// and written with one upsert per 64 days; the paid orders go in 64 per
// statement. A refund finds its order's currency as Apply would at that
// point: in the table, as it was before the batch, else from a payment
// earlier in the batch (the first one of the order, as the table keeps).
func (p *Projection) ApplyBatch(ctx context.Context, tx *projections.Tx, evs []projections.Event) error {
	type key struct{ day, currency string }
	type totals struct{ paid, gross, refunded, refundedCents int64 }
	var (
		days     = map[key]*totals{}
		dayOrder []key
		paidNow  = map[string]string{} // order → currency, first payment in the batch
		paidArgs []any
	)
	add := func(k key) *totals {
		t := days[k]
		if t == nil {
			t = &totals{}
			days[k] = t
			dayOrder = append(dayOrder, k)
		}
		return t
	}
	paidTable := tx.Table("paid")
	for _, e := range evs {
		switch d := e.Data.(type) {
		case *events.OrderPaid:
			if _, ok := paidNow[d.OrderID]; !ok {
				paidNow[d.OrderID] = d.Currency
				paidArgs = append(paidArgs, d.OrderID, d.Currency)
			}
			t := add(key{day(d.PaidAt), d.Currency})
			t.paid++
			t.gross += d.AmountCents
		case *events.OrderCancelled:
			if !d.WasPaid {
				continue
			}
			var currency string
			err := tx.QueryRowContext(ctx, `SELECT currency FROM `+paidTable+` WHERE order_id = ?`, d.OrderID).Scan(&currency)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				c, ok := paidNow[d.OrderID] // paid earlier in this batch?
				if !ok {
					continue // a refund of a payment never seen: not counted
				}
				currency = c
			case err != nil:
				return fmt.Errorf("apply %s %s to sales: read currency of order %s: %w", e.Type, e.ID, d.OrderID, err)
			}
			t := add(key{day(d.CancelledAt), currency})
			t.refunded++
			t.refundedCents += d.TotalCents
		}
	}
	if _, err := tx.ExecRows(ctx, `INSERT INTO `+paidTable+` (order_id, currency) VALUES`, 2,
		`ON CONFLICT (order_id) DO NOTHING`, paidArgs); err != nil {
		return fmt.Errorf("apply a batch to sales: record %d paid orders: %w", len(paidArgs)/2, err)
	}
	dayArgs := make([]any, 0, 6*len(dayOrder))
	for _, k := range dayOrder {
		t := days[k]
		dayArgs = append(dayArgs, k.day, k.currency, t.paid, t.gross, t.refunded, t.refundedCents)
	}
	if _, err := tx.ExecRows(ctx,
		`INSERT INTO `+tx.Table("days")+` (day, currency, orders_paid, gross_cents, orders_refunded, refunded_cents) VALUES`, 6, `
ON CONFLICT (day, currency) DO UPDATE SET
	orders_paid = orders_paid + excluded.orders_paid, gross_cents = gross_cents + excluded.gross_cents,
	orders_refunded = orders_refunded + excluded.orders_refunded, refunded_cents = refunded_cents + excluded.refunded_cents`,
		dayArgs); err != nil {
		return fmt.Errorf("apply a batch to sales: add up %d days: %w", len(dayOrder), err)
	}
	return nil
}

// SalesOn returns the sales of one UTC day, date as YYYY-MM-DD. A day without
// sales has no currencies (an empty slice); a malformed date is an error
// wrapping ErrBadDate.
func (p *Projection) SalesOn(ctx context.Context, date string) (Day, error) {
	t, err := time.Parse(dateLayout, date)
	if err != nil {
		return Day{}, fmt.Errorf("read sales on %q: %w", date, ErrBadDate)
	}
	date = t.Format(dateLayout)
	d := Day{Date: date, Currencies: []CurrencyTotals{}}
	err = projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		rows, err := tx.QueryContext(ctx, `
SELECT currency, orders_paid, gross_cents, orders_refunded, refunded_cents
FROM `+projections.Table(p.Name(), v, "days")+` WHERE day = ? ORDER BY currency`, date)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c CurrencyTotals
			if err := rows.Scan(&c.Currency, &c.OrdersPaid, &c.GrossCents, &c.OrdersRefunded, &c.RefundedCents); err != nil {
				return err
			}
			c.NetCents = c.GrossCents - c.RefundedCents
			d.Currencies = append(d.Currencies, c)
		}
		return rows.Err()
	})
	if err != nil {
		return Day{}, fmt.Errorf("read sales on %s: %w", date, err)
	}
	return d, nil
}

// day is the UTC day of t, as YYYY-MM-DD.
func day(t time.Time) string { return t.UTC().Format(dateLayout) }

package router

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Idempotency remembers, in SQLite, which messages each handler completed,
// and its Middleware skips a message its handler completed before: after a
// redelivery, a restart, or on another instance sharing the database file.
// Messages are known by their id (ce_id), which a requeue from the poison
// queue keeps.
//
// It is meant for handlers that have no inbox of their own, such as
// reactors written by users. Command handlers (the inbox of
// platform/commandstore) and projections (package projections) already skip
// duplicates in the same transaction as their effect and need it not.
//
// The mark is written after the handler succeeded, in a transaction of its
// own. A crash between the effect and the mark leaves the message unmarked,
// and its redelivery runs the handler again: the effect is at least once,
// unless the handler writes it in the same database transaction as the mark
// (which this middleware cannot do for it). Handlers whose effect must be
// exactly once keep their own dedupe with the effect, as projections do.
//
// Idempotency is safe for concurrent use. It does not own the database.
type Idempotency struct {
	db  *sql.DB
	now func() time.Time
}

const setupIdempotencySQL = `
CREATE TABLE IF NOT EXISTS router_completed (
	handler      TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	completed_at TEXT NOT NULL,
	PRIMARY KEY (handler, message_id)
) WITHOUT ROWID`

// NewIdempotency creates its table in db (opened with platform/sqlite) if
// needed.
func NewIdempotency(ctx context.Context, db *sql.DB) (*Idempotency, error) {
	if _, err := db.ExecContext(ctx, setupIdempotencySQL); err != nil {
		return nil, fmt.Errorf("create idempotency table: %w", err)
	}
	return &Idempotency{db: db, now: time.Now}, nil
}

// Completed reports whether handler completed the message with id before.
func (i *Idempotency) Completed(ctx context.Context, handler, id string) (bool, error) {
	var one int
	err := i.db.QueryRowContext(ctx,
		`SELECT 1 FROM router_completed WHERE handler = ? AND message_id = ?`, handler, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up completed message %s of %s: %w", id, handler, err)
	}
	return true, nil
}

// MarkCompleted records that handler completed the message with id.
func (i *Idempotency) MarkCompleted(ctx context.Context, handler, id string) error {
	_, err := i.db.ExecContext(ctx,
		`INSERT INTO router_completed (handler, message_id, completed_at) VALUES (?, ?, ?)
		 ON CONFLICT (handler, message_id) DO NOTHING`,
		handler, id, i.now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("mark message %s completed by %s: %w", id, handler, err)
	}
	return nil
}

// Middleware skips messages the handler completed before and marks the
// others once the handler succeeded. Add it to the handlers that need it
// (message.Handler.AddMiddleware); it then runs inside the stack, so a
// failure to read or write the mark is retried like any transient failure.
func (i *Idempotency) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		handler := handlerName(msg)
		done, err := i.Completed(ctx, handler, msg.UUID)
		if err != nil {
			return nil, err
		}
		if done {
			return nil, nil
		}
		out, err := h(msg)
		if err != nil {
			return out, err
		}
		if err := i.MarkCompleted(ctx, handler, msg.UUID); err != nil {
			return nil, err
		}
		return out, nil
	}
}

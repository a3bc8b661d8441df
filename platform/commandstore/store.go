// Package commandstore keeps the state of aggregates for command handlers,
// together with an inbox of the messages already handled and an outbox of the
// events still to publish, all written in one SQLite transaction.
//
// That single transaction is what makes effects exactly once on top of
// at-least-once delivery: a command's new state, the events it emitted and
// the record that the command was handled commit together or not at all, so
// a redelivered command is recognised and skipped, and an event is never
// published for a state change that did not happen. The [Relay] then
// publishes the outbox in order and deletes each row only after the broker
// accepted it; a crash in between publishes the row again with the same
// message id, which consumers de-duplicate.
//
// The package knows nothing about millrace's domain: an [Aggregate] stores any
// JSON-encodable state type and any events that implement
// [cloudevents.Named].
package commandstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// timeLayout stores times as fixed-width UTC text, so that they sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

const schema = `
CREATE TABLE IF NOT EXISTS aggregates (
	aggregate  TEXT    NOT NULL,
	id         TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	state      TEXT    NOT NULL, -- JSON
	updated_at TEXT    NOT NULL,
	PRIMARY KEY (aggregate, id)
);
CREATE TABLE IF NOT EXISTS inbox (
	handler      TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	processed_at TEXT NOT NULL,
	PRIMARY KEY (handler, message_id)
);
CREATE TABLE IF NOT EXISTS outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	topic      TEXT NOT NULL,
	message_id TEXT NOT NULL,
	metadata   TEXT NOT NULL, -- JSON object of string values
	payload    BLOB NOT NULL,
	created_at TEXT NOT NULL,
	sequenced  INTEGER NOT NULL DEFAULT 0 -- 1: published with ce_outboxid and ce_sequence
);
CREATE TABLE IF NOT EXISTS outbox_identity (
	singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
	id        TEXT NOT NULL
);`

// addSequenced brings an outbox created before the sequenced column up to
// date. Rows written before keep 0: they may have been published already
// without a sequence, so a re-publish must not carry one (a consumer would
// take it for a new event); consumers recognise those by event id.
const addSequenced = `ALTER TABLE outbox ADD COLUMN sequenced INTEGER NOT NULL DEFAULT 0`

// Store is the command side's storage in one SQLite database: aggregate
// states, the inbox and the outbox. It is safe for concurrent use. It does not
// own the *sql.DB it was given; the caller closes that after the Store and its
// Relay are done (Close first releases the statements the Store prepared).
type Store struct {
	db    *sql.DB
	id    string // the outbox's id, see OutboxID
	stmts statements
	// wake tells the relay that rows were committed to the outbox. Sends
	// never block: one pending wake-up covers any number of commits.
	wake chan struct{}
	// publishing serialises relay passes (Run and Flush), so that rows are
	// published once and in order within this process.
	publishing sync.Mutex
}

// New creates the store's tables in db if they do not exist. db should come
// from platform/sqlite.Open, whose immediate transactions keep concurrent
// Apply calls from deadlocking.
func New(ctx context.Context, db *sql.DB) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("create command store: no database given")
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("create command store tables: %w", err)
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	id, err := identity(ctx, db)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, id: id, wake: make(chan struct{}, 1)}
	if err := s.stmts.prepare(ctx, db); err != nil {
		return nil, err
	}
	return s, nil
}

// migrate adds what older versions of the schema lack, in one write
// transaction, so that processes starting together on the same file (the
// workers of a data directory, after an upgrade) take turns: the second
// finds the column there.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate outbox: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	var has bool
	if err := tx.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'sequenced')`).Scan(&has); err != nil {
		return fmt.Errorf("migrate outbox: read its columns: %w", err)
	}
	if has {
		return nil
	}
	if _, err := tx.ExecContext(ctx, addSequenced); err != nil {
		return fmt.Errorf("migrate outbox: add the sequenced column: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate outbox: commit: %w", err)
	}
	return nil
}

// identity returns the outbox's id, made (a random UUID) the first time the
// database is used: it scopes the sequence numbers of the outbox's events
// (cloudevents.OutboxID), and a copy of the database file keeps it, as it
// keeps the numbers.
func identity(ctx context.Context, db *sql.DB) (string, error) {
	if _, err := db.ExecContext(ctx, `INSERT INTO outbox_identity (singleton, id) VALUES (1, ?) ON CONFLICT DO NOTHING`,
		uuid.NewString()); err != nil {
		return "", fmt.Errorf("create outbox id: %w", err)
	}
	var id string
	if err := db.QueryRowContext(ctx, `SELECT id FROM outbox_identity`).Scan(&id); err != nil {
		return "", fmt.Errorf("read outbox id: %w", err)
	}
	return id, nil
}

// OutboxID is the id of the store's outbox, which the relay sets as
// cloudevents.OutboxID on every event it publishes.
func (s *Store) OutboxID() string { return s.id }

// Close releases the statements the store prepared. Call it after the
// handlers and the relay stopped and before closing the database; the store
// is unusable afterwards.
func (s *Store) Close() error {
	if err := s.stmts.close(); err != nil {
		return fmt.Errorf("close command store: %w", err)
	}
	return nil
}

// statements are the store's queries, prepared once: every command runs
// four or five of them, and parsing the SQL each time cost as much as
// running it (sqlite3Prepare was 7.5 % of millrace dev's CPU). database/sql
// keeps each prepared on every connection it ran on; a transaction binds
// them with Tx.StmtContext.
type statements struct {
	inboxAdd, load, insertState, updateState, outboxAdd, exists, outboxRead, outboxDelete *sql.Stmt
}

// prepare prepares every statement, or none.
func (st *statements) prepare(ctx context.Context, db *sql.DB) error {
	for _, q := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		// A message id already in the inbox inserts nothing: the command
		// was applied before.
		{&st.inboxAdd, `INSERT INTO inbox (handler, message_id, processed_at) VALUES (?, ?, ?)
			ON CONFLICT (handler, message_id) DO NOTHING`},
		{&st.load, `SELECT version, state FROM aggregates WHERE aggregate = ? AND id = ?`},
		{&st.insertState, `INSERT INTO aggregates (aggregate, id, version, state, updated_at)
			VALUES (?, ?, 1, ?, ?) ON CONFLICT (aggregate, id) DO NOTHING`},
		{&st.updateState, `UPDATE aggregates SET version = version + 1, state = ?, updated_at = ?
			WHERE aggregate = ? AND id = ? AND version = ?`},
		{&st.outboxAdd, `INSERT INTO outbox (topic, message_id, metadata, payload, created_at, sequenced) VALUES (?, ?, ?, ?, ?, 1)`},
		{&st.exists, `SELECT EXISTS (SELECT 1 FROM aggregates WHERE aggregate = ? AND id = ?)`},
		{&st.outboxRead, `SELECT seq, topic, message_id, metadata, payload, sequenced FROM outbox ORDER BY seq LIMIT ?`},
		{&st.outboxDelete, `DELETE FROM outbox WHERE seq BETWEEN ? AND ?`},
	} {
		stmt, err := db.PrepareContext(ctx, q.sql)
		if err != nil {
			return errors.Join(fmt.Errorf("prepare command store statement %q: %w", q.sql, err), st.close())
		}
		*q.stmt = stmt
	}
	return nil
}

// close closes the statements prepared so far.
func (st *statements) close() error {
	var errs []error
	for _, stmt := range []**sql.Stmt{&st.inboxAdd, &st.load, &st.insertState, &st.updateState, &st.outboxAdd, &st.exists, &st.outboxRead, &st.outboxDelete} {
		if *stmt != nil {
			errs = append(errs, (*stmt).Close())
			*stmt = nil
		}
	}
	return errors.Join(errs...)
}

// Pending returns the number of outbox rows not yet published.
func (s *Store) Pending(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM outbox").Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending outbox rows: %w", err)
	}
	return n, nil
}

// notify wakes the relay without ever blocking the caller.
func (s *Store) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

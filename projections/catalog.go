package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// The catalog: the runner's own tables, shared by every projection in the
// database.
//
//	projection_versions            which version serves reads (active), which
//	                               one a rebuild is building, the next number
//	projection_positions           per version and partition: the offset of
//	                               the last message handled
//	projection_event_ids           per version: the ids of the events applied
//	                               that carry no outbox sequence, keyed by
//	                               event time first (see below)
//	projection_sequences           per version, partition and outbox: the
//	                               highest outbox sequence applied (ADR 0007)
//	projection_rebuilds            per projection: the current or last rebuild;
//	                               a row in an unfinished state is the lock
//	                               that keeps a second rebuild out
//	projection_rebuild_partitions  per rebuild and partition: where it
//	                               started and where the log ended then
//
// Event ids are keyed by (event time, id) rather than by id alone: events
// arrive roughly in time order, so new keys land at the right edge of the
// B-tree and a batch of inserts touches a few pages instead of one page per
// event. An event that an outbox relay published again carries the same
// ce_time and ce_id, so the key finds it all the same.
const setupCatalogSQL = `
CREATE TABLE IF NOT EXISTS projection_versions (
	projection TEXT    PRIMARY KEY,
	active     INTEGER NOT NULL,
	building   INTEGER,
	next       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_positions (
	projection  TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	topic       TEXT    NOT NULL,
	"partition" INTEGER NOT NULL,
	"offset"    INTEGER NOT NULL,
	PRIMARY KEY (projection, version, topic, "partition")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_event_ids (
	projection TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	at         INTEGER NOT NULL,
	event_id   TEXT    NOT NULL,
	PRIMARY KEY (projection, version, at, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_sequences (
	projection  TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	topic       TEXT    NOT NULL,
	"partition" INTEGER NOT NULL,
	outbox      TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	PRIMARY KEY (projection, version, topic, "partition", outbox)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_rebuilds (
	projection  TEXT    PRIMARY KEY,
	version     INTEGER NOT NULL,
	replaces    INTEGER NOT NULL,
	state       TEXT    NOT NULL,
	from_spec   TEXT    NOT NULL,
	started_at  INTEGER NOT NULL,
	swapped_at  INTEGER NOT NULL DEFAULT 0,
	finished_at INTEGER NOT NULL DEFAULT 0,
	error       TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_rebuild_partitions (
	projection   TEXT    NOT NULL,
	version      INTEGER NOT NULL,
	topic        TEXT    NOT NULL,
	"partition"  INTEGER NOT NULL,
	start_offset INTEGER NOT NULL,
	replay_until INTEGER NOT NULL,
	PRIMARY KEY (projection, version, topic, "partition")
) WITHOUT ROWID;`

// legacyAppliedTable is where millrace kept applied event ids (keyed by id
// only) before projection_event_ids. A version that has rows there keeps
// checking them, so that an event applied before the upgrade is not applied
// again; new versions never write there.
const legacyAppliedTable = "projection_applied"

// setupCatalog creates the catalog tables.
func setupCatalog(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, setupCatalogSQL); err != nil {
		return fmt.Errorf("create projection catalog: %w", err)
	}
	return nil
}

// register records a projection seen for the first time: version 1 is
// active. It returns the active and building versions (0: none building).
func register(ctx context.Context, tx *sql.Tx, name string) (active, building int, err error) {
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO projection_versions (projection, active, building, next) VALUES (?, 1, NULL, 2) ON CONFLICT (projection) DO NOTHING`,
		name); err != nil {
		return 0, 0, fmt.Errorf("register projection %s: %w", name, err)
	}
	return VersionsOf(ctx, tx, name)
}

// queryer is a *sql.DB, *sql.Conn or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ErrNotSetUp is wrapped by the errors of Read and VersionsOf for a
// projection whose runner never ran in the database.
var ErrNotSetUp = errors.New("projection not set up")

// VersionsOf returns the version of projection name that serves reads and
// the version a rebuild is building (0 when none). q may be a transaction,
// whose snapshot the answer then belongs to.
func VersionsOf(ctx context.Context, q queryer, name string) (active, building int, err error) {
	var b sql.NullInt64
	err = q.QueryRowContext(ctx, `SELECT active, building FROM projection_versions WHERE projection = ?`, name).Scan(&active, &b)
	switch {
	case errors.Is(err, sql.ErrNoRows), err != nil && strings.Contains(err.Error(), "no such table"):
		return 0, 0, fmt.Errorf("read versions of projection %s: %w (no runner was created for it)", name, ErrNotSetUp)
	case err != nil:
		return 0, 0, fmt.Errorf("read versions of projection %s: %w", name, err)
	}
	return active, int(b.Int64), nil
}

// Read runs fn in a read-only transaction with the version of projection name
// that serves reads. Query methods of read models use it: the transaction's
// snapshot holds the version and its tables together, so a swap to a new
// version and the dropping of the old one, committed meanwhile, cannot pull
// the tables from under fn. Read never waits for writers.
func Read(ctx context.Context, db *sql.DB, name string, fn func(tx *sql.Tx, version int) error) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("read projection %s: begin: %w", name, err)
	}
	defer rollback(tx)
	active, _, err := VersionsOf(ctx, tx, name)
	if err != nil {
		return err
	}
	if err := fn(tx, active); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("read projection %s: end: %w", name, err)
	}
	return nil
}

// schemaObjects lists the tables and indexes in the database, except
// SQLite's own.
func schemaObjects(ctx context.Context, tx *sql.Tx) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	names := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		names[n] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return names, nil
}

// setupVersion runs p.Setup for version in tx and checks that everything it
// created is named with the version's prefix (see Table): what is not could
// not be found and dropped when the version retires.
func setupVersion(ctx context.Context, tx *sql.Tx, p Projection, version int) error {
	before, err := schemaObjects(ctx, tx)
	if err != nil {
		return fmt.Errorf("set up projection %s v%d: %w", p.Name(), version, err)
	}
	if err := p.Setup(ctx, newTx(tx, p.Name(), version, nil)); err != nil {
		return fmt.Errorf("set up projection %s v%d: %w", p.Name(), version, err)
	}
	after, err := schemaObjects(ctx, tx)
	if err != nil {
		return fmt.Errorf("set up projection %s v%d: %w", p.Name(), version, err)
	}
	prefix := tablePrefix(p.Name(), version)
	var stray []string
	for n := range after {
		if !before[n] && !strings.HasPrefix(n, prefix) {
			stray = append(stray, n)
		}
	}
	if len(stray) > 0 {
		return fmt.Errorf("set up projection %s v%d: created %s without the prefix %s: name tables and indexes with Tx.Table",
			p.Name(), version, strings.Join(stray, ", "), prefix)
	}
	return nil
}

// dropVersion drops the tables of one version of a projection and forgets
// its positions and applied event ids.
func dropVersion(ctx context.Context, tx *sql.Tx, name string, version int) error {
	prefix := tablePrefix(name, version)
	rows, err := tx.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?`, len(prefix), prefix)
	if err != nil {
		return fmt.Errorf("drop projection %s v%d: list tables: %w", name, version, err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return fmt.Errorf("drop projection %s v%d: list tables: %w", name, version, err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("drop projection %s v%d: list tables: %w", name, version, err)
	}
	for _, t := range tables {
		if _, err := tx.ExecContext(ctx, `DROP TABLE IF EXISTS "`+t+`"`); err != nil {
			return fmt.Errorf("drop projection %s v%d: drop %s: %w", name, version, t, err)
		}
	}
	for _, q := range []string{
		`DELETE FROM projection_positions WHERE projection = ? AND version = ?`,
		`DELETE FROM projection_event_ids WHERE projection = ? AND version = ?`,
		`DELETE FROM projection_sequences WHERE projection = ? AND version = ?`,
		`DELETE FROM projection_rebuild_partitions WHERE projection = ? AND version = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, name, version); err != nil {
			return fmt.Errorf("drop projection %s v%d: %w", name, version, err)
		}
	}
	legacy, err := tableExists(ctx, tx, legacyAppliedTable)
	if err != nil {
		return fmt.Errorf("drop projection %s v%d: %w", name, version, err)
	}
	if legacy {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+legacyAppliedTable+` WHERE projection = ? AND version = ?`, name, version); err != nil {
			return fmt.Errorf("drop projection %s v%d: %w", name, version, err)
		}
	}
	return nil
}

func tableExists(ctx context.Context, q queryer, table string) (bool, error) {
	var exists bool
	if err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)`, table).Scan(&exists); err != nil {
		return false, fmt.Errorf("look for table %s: %w", table, err)
	}
	return exists, nil
}

// positionsOf reads the positions of one version of a projection.
func positionsOf(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, name string, version int) ([]Position, error) {
	rows, err := q.QueryContext(ctx,
		`SELECT topic, "partition", "offset" FROM projection_positions WHERE projection = ? AND version = ? ORDER BY topic, "partition"`,
		name, version)
	if err != nil {
		return nil, fmt.Errorf("read positions of projection %s v%d: %w", name, version, err)
	}
	defer rows.Close()
	positions := []Position{}
	for rows.Next() {
		var p Position
		if err := rows.Scan(&p.Topic, &p.Partition, &p.Offset); err != nil {
			return nil, fmt.Errorf("read positions of projection %s v%d: %w", name, version, err)
		}
		positions = append(positions, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read positions of projection %s v%d: %w", name, version, err)
	}
	return positions, nil
}

// EnsureColumn adds column to table unless the table has it: how Setup
// brings a table that older code created up to what the current code reads
// (ALTER TABLE … ADD COLUMN). decl is the column's type and constraints; it
// needs a DEFAULT when the table may hold rows. The old version then serves
// the default until a rebuild fills the column from the log.
func EnsureColumn(ctx context.Context, tx *Tx, table, column, decl string) error {
	var n int
	if err := tx.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n); err != nil {
		return fmt.Errorf("look for column %s of %s: %w", column, table, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.tx.ExecContext(ctx, `ALTER TABLE "`+table+`" ADD COLUMN "`+column+`" `+decl); err != nil {
		return fmt.Errorf("add column %s to %s: %w", column, table, err)
	}
	return nil
}

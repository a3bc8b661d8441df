// Package sqlite opens SQLite database files for millrace's state stores,
// through the pure-Go driver modernc.org/sqlite (driver name "sqlite").
//
// Every connection of the returned pool is configured the same way:
//
//   - journal_mode=WAL: readers never block the writer and the writer never
//     blocks readers;
//   - busy_timeout=10000: a connection waits up to 10 s for a lock another
//     connection or process holds instead of failing with SQLITE_BUSY;
//   - foreign_keys=ON;
//   - synchronous=NORMAL: see Durability below;
//   - temp_store=MEMORY: statement journals (the pages a statement changed,
//     kept so that a statement that fails halfway can be undone, as every
//     multi-row upsert needs) and temporary B-trees stay in memory, rather
//     than in temporary files written with a system call per page once
//     they pass 64 KiB; they live for one statement;
//   - write transactions begin with BEGIN IMMEDIATE (_txlock=immediate), so a
//     transaction takes the write lock when it starts, waiting under the busy
//     timeout. A deferred transaction that reads first and writes later would
//     instead try to upgrade its read lock, and two such transactions
//     deadlock: one of them fails with SQLITE_BUSY at once, whatever the busy
//     timeout. Read-only transactions (sql.TxOptions{ReadOnly: true}) still
//     begin deferred and never wait for writers.
//
// # One writer at a time, queued in Go
//
// SQLite lets one connection write at a time; a connection that finds the
// write lock taken sleeps in SQLite's busy handler and tries again, after 1,
// 2, 5, 10 … up to 100 ms. Under contention a writer that loses a few times
// waits hundreds of milliseconds, long after the lock came free. The pool
// Open returns therefore lets its writes through a gate of its own, one at
// a time, in arrival order, before they reach SQLite:
//
//   - a write transaction (BeginTx without ReadOnly) takes the gate before
//     BEGIN IMMEDIATE and holds it until Commit or Rollback;
//   - a statement run with Exec outside a transaction (an autocommit write,
//     db.ExecContext or a prepared statement's ExecContext) holds it while
//     it runs;
//   - read-only transactions and queries (Query, QueryRow) never take it.
//     A query that writes (INSERT … RETURNING outside a transaction) is not
//     gated and waits for the lock in the busy handler, as before.
//
// A writer waits for the gate as long as its context lives, and at most the
// busy timeout: then it fails with an error wrapping ErrBusy, as it would
// have failed with SQLITE_BUSY. The gate is per pool: writers of another
// process, or of another pool opened on the same file, still meet in
// SQLite's busy handler (busy_timeout). A write that opens a second write
// transaction on the same pool while it holds the gate waits for itself
// until the busy timeout, as it would have waited for its own lock.
//
// # Durability
//
// WAL with synchronous=NORMAL survives a crash of the process (panic, OOM
// kill, SIGKILL) without losing a committed transaction: a commit is in the
// operating system's page cache when Commit returns. It does not fsync on
// every commit, so a power loss or an operating-system crash may roll back
// the most recent commits (never corrupting the file: the database stays
// consistent, only the last transactions may be missing). millrace accepts
// that trade for roughly an order of magnitude more commits per second; a
// deployment that must keep every acknowledged commit across power loss
// needs synchronous=FULL, at the cost of one fsync per commit.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	msqlite "modernc.org/sqlite" // also registers the "sqlite" driver
)

// DriverName is the database/sql driver name of modernc.org/sqlite.
const DriverName = "sqlite"

// BusyTimeoutMillis is how long a connection waits for a lock before it
// reports SQLITE_BUSY.
const BusyTimeoutMillis = 10000

// Open opens (creating if needed) the SQLite database file at path, and its
// parent directory, configured as the package documentation describes, its
// writes behind a gate of their own. It
// pings the database so that an unusable file fails here, with an error
// naming it. The caller owns the returned pool and closes it.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite: no file path given")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite %s: the path must not contain '?' or '#'", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open sqlite %s: create directory: %w", path, err)
		}
	}
	base, err := msqlite.NewConnector(dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db := sql.OpenDB(&gatedConnector{base: base, gate: newWriteGate(BusyTimeoutMillis * time.Millisecond)})
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close() // the ping error is the one worth reporting
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// dsn is the modernc.org/sqlite data source name for path. Without a "file:"
// prefix the driver takes everything before '?' as a plain file name.
func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeoutMillis))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

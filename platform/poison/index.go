package poison

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// minReloadGap is the least time between two loads of the blocked index.
// While poison.db changes faster than that (a burst of poisoned or parked
// messages), Admit asks the table, as it would without an index; the index
// is loaded again once the burst is over, so that a burst with many open
// entries does not reload all of them for every message.
const minReloadGap = 50 * time.Millisecond

// blockedIndex is an in-memory copy of which keys are blocked, so that Admit
// answers for the common message (its key has no open entry) without a
// query on poison_entries. It is only trusted while it is provably current.
//
// SQLite keeps, in the WAL-index header of the database's -shm file, a
// header that every commit to the file changes before the commit returns,
// whichever connection, pool or process made it (walIndexWriteHdr; the
// header holds a counter of transactions, the last frame and the WAL's
// salts). Every process using the database maps that file (walHeader). The
// index is loaded on a connection of its own, after reading the header;
// a look-up reads the header again, from memory, without a system call or
// a read transaction, and trusts the index only when the header is the one
// it was loaded at: then nothing was committed since. Otherwise it loads
// the index again (at most every minReloadGap) or reports that it cannot
// tell, and Admit asks the table.
//
// A look-up thus sees every commit that returned before it started, from
// any process. That keeps the poison queue ordered when several processes
// share poison.db (ADR 0005): a key poisoned by a worker whose partition
// then moves to another worker is in the file before the message is acked,
// and the new owner's next look-up sees the header changed.
//
// (PRAGMA data_version tells the same, but it is a read transaction: two
// file-lock system calls and SQLite's deep stack on the router's goroutine,
// which Watermill starts afresh for every message; measured, it cost as
// much as the query it was meant to save.)
//
// Where the header cannot be mapped (an operating system without the mmap
// support walHeader needs, a database not in WAL mode) every look-up reports
// that it cannot tell, and Admit asks the table as it did before the index.
//
// It is safe for concurrent use.
type blockedIndex struct {
	db *sql.DB
	// reloadGap is minReloadGap; tests shorten it.
	reloadGap time.Duration

	mu sync.Mutex
	// conn is the index's own connection, nil until first needed and after
	// a failure. While it is open SQLite keeps the -shm file, so hdr stays
	// valid: hdr is only read with conn open.
	conn *sql.Conn
	hdr  *walHeader
	// keys were loaded when the header read at; nil when not loaded.
	keys     map[indexKey]struct{}
	at       walHeaderSnapshot
	lastLoad time.Time
	// noHeader is set once mapping the header failed: the index is off.
	noHeader bool
	// answered counts the look-ups the index answered (tests read it).
	answered int64
}

// indexKey is a blocked key of one handler.
type indexKey struct{ handler, key string }

func newBlockedIndex(db *sql.DB) *blockedIndex {
	return &blockedIndex{db: db, reloadGap: minReloadGap}
}

// lookup reports whether handler's key is blocked. known is false when the
// index cannot tell: the caller must ask the table.
func (x *blockedIndex) lookup(ctx context.Context, handler, key string) (blocked, known bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.noHeader {
		return false, false
	}
	if x.keys != nil {
		if now, ok := x.hdr.read(); ok && now == x.at {
			x.answered++
			_, blocked = x.keys[indexKey{handler, key}]
			return blocked, true
		}
		x.keys = nil
	}
	if !x.lastLoad.IsZero() && time.Since(x.lastLoad) < x.reloadGap {
		return false, false
	}
	if err := x.reload(ctx); err != nil {
		// The table is the truth; the index only a shortcut to it. The
		// connection is taken again for the next load.
		x.dropConn()
		return false, false
	}
	if x.keys == nil {
		return false, false
	}
	x.answered++
	_, blocked = x.keys[indexKey{handler, key}]
	return blocked, true
}

// reload reads the header, then every blocked key. It runs with mu held.
func (x *blockedIndex) reload(ctx context.Context) error {
	x.lastLoad = time.Now()
	if x.conn == nil {
		if err := x.connect(ctx); err != nil {
			return err
		}
		if x.noHeader {
			return nil
		}
	}
	// The header first: a commit between the two makes the next look-up
	// find it changed, and load again. Never the other way round.
	at, ok := x.hdr.read()
	if !ok {
		return nil // a commit is being written right now: try again later
	}
	keys, err := x.load(ctx)
	if err != nil {
		return err
	}
	x.keys, x.at = keys, at
	return nil
}

// load reads every blocked key: those with an open entry. Keyless entries
// block nothing.
func (x *blockedIndex) load(ctx context.Context) (map[indexKey]struct{}, error) {
	rows, err := x.conn.QueryContext(ctx, `SELECT DISTINCT handler, seq_key FROM poison_entries
		WHERE seq_key <> '' AND status IN `+openStatuses)
	if err != nil {
		return nil, fmt.Errorf("load blocked keys: %w", err)
	}
	defer rows.Close()
	keys := make(map[indexKey]struct{})
	for rows.Next() {
		var k indexKey
		if err := rows.Scan(&k.handler, &k.key); err != nil {
			return nil, fmt.Errorf("load blocked keys: %w", err)
		}
		keys[k] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load blocked keys: %w", err)
	}
	return keys, nil
}

// connect takes the index's connection out of the pool and maps the
// WAL-index header of its database. It runs with mu held.
func (x *blockedIndex) connect(ctx context.Context) error {
	conn, err := x.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("take a connection for the blocked index: %w", err)
	}
	// A read opens the WAL index (the -shm file) if no connection had.
	var mode, file string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		_ = conn.Close() // the query's error is the one worth reporting
		return fmt.Errorf("read the journal mode of the poison store: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file); err != nil {
		_ = conn.Close() // the query's error is the one worth reporting
		return fmt.Errorf("find the poison store's file: %w", err)
	}
	if mode != "wal" || file == "" {
		x.noHeader = true // no -shm file to read: the index stays off
		return conn.Close()
	}
	hdr, err := mapWALHeader(file + "-shm")
	if err != nil {
		if errors.Is(err, errNoMmap) {
			x.noHeader = true
			return conn.Close()
		}
		_ = conn.Close() // the mapping's error is the one worth reporting
		return err
	}
	x.conn, x.hdr = conn, hdr
	return nil
}

// dropConn unmaps the header and returns the connection to the pool; the
// index is loaded again later. It runs with mu held.
func (x *blockedIndex) dropConn() {
	if x.conn != nil {
		// Unmap first: the header may be read only while the connection
		// keeps the file in use.
		_ = x.hdr.close() // nothing to do about a failure but drop it
		_ = x.conn.Close()
	}
	x.conn, x.hdr, x.keys = nil, nil, nil
}

// close releases the mapping and the connection. Look-ups afterwards load
// the index again; the Store is closed by then.
func (x *blockedIndex) close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.conn == nil {
		return nil
	}
	err := errors.Join(x.hdr.close(), x.conn.Close())
	x.conn, x.hdr, x.keys = nil, nil, nil
	x.noHeader = true // closed: no more loads
	return err
}

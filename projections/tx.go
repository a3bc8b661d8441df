package projections

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// validName reports whether s may name a projection: a lower-case letter,
// then up to 30 lower-case letters and digits. The name prefixes table
// names, so it has no underscore (the separator) and needs no quoting.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 31 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Table returns the name of table name of version version of projection
// projection: "<projection>_v<version>_<name>", e.g. orders_v2_orders. Every
// table and index a projection creates carries this prefix, which is how a
// new version is built beside the one serving, and how a retired version's
// tables are found and dropped.
func Table(projection string, version int, name string) string {
	return fmt.Sprintf("%s_v%d_%s", projection, version, name)
}

// tablePrefix is the prefix of every table of one projection version.
func tablePrefix(projection string, version int) string {
	return fmt.Sprintf("%s_v%d_", projection, version)
}

// Tx is the transaction a projection writes in, bound to one version of the
// projection: Table names that version's tables. The runner owns the
// transaction (begins, commits, rolls back); a projection only runs
// statements in it.
//
// In Apply, each query text is prepared once per runner and reused, so a
// query must be a single statement and should take its values as arguments.
// In Setup, statements run as they are, several at once if need be.
type Tx struct {
	tx      *sql.Tx
	name    string
	version int
	stmts   *statements          // nil: no statement cache (Setup)
	bound   map[string]*sql.Stmt // statements of stmts bound to tx
}

func newTx(tx *sql.Tx, name string, version int, stmts *statements) *Tx {
	return &Tx{tx: tx, name: name, version: version, stmts: stmts}
}

// Version is the version of the projection the transaction writes.
func (t *Tx) Version() int { return t.version }

// Table returns the name of one of the projection's tables in this version,
// e.g. tx.Table("orders") is "orders_v2_orders" in version 2 of orders.
func (t *Tx) Table(name string) string { return Table(t.name, t.version, name) }

// ExecContext runs a statement that returns no rows.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return t.tx.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

// QueryContext runs a query that returns rows.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return t.tx.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext runs a query that returns at most one row.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := t.stmt(ctx, query)
	if err != nil || st == nil {
		// A failed prepare surfaces again, as the Row's error, here.
		return t.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// stmt returns query prepared and bound to the transaction; nil when the
// transaction caches no statements.
func (t *Tx) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if t.stmts == nil {
		return nil, nil
	}
	if st, ok := t.bound[query]; ok {
		return st, nil
	}
	prepared, err := t.stmts.get(ctx, query)
	if err != nil {
		return nil, err
	}
	if t.bound == nil {
		t.bound = make(map[string]*sql.Stmt, 8)
	}
	st := t.tx.StmtContext(ctx, prepared)
	t.bound[query] = st
	return st, nil
}

// statements caches prepared statements by query text. database/sql keeps
// each prepared on every connection it was used on, so binding one to a
// transaction (Tx.StmtContext) skips parsing the SQL again. Safe for
// concurrent use.
type statements struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStatements(db *sql.DB) *statements {
	return &statements{db: db, m: map[string]*sql.Stmt{}}
}

func (s *statements) get(ctx context.Context, query string) (*sql.Stmt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	s.m[query] = st
	return st, nil
}

// close closes every cached statement.
func (s *statements) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for q, st := range s.m {
		if err := st.Close(); err != nil && first == nil {
			first = fmt.Errorf("close statement %q: %w", q, err)
		}
		delete(s.m, q)
	}
	return first
}

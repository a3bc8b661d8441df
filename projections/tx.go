package projections

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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
//
// In Apply, a statement that has begun runs to its end even when ctx ends
// meanwhile (the SQLite driver would otherwise start a goroutine per
// statement to watch ctx, a measurable cost at tens of thousands of
// statements per second); the next statement, and the transaction, fail once
// ctx is done.
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return st.ExecContext(context.WithoutCancel(ctx), args...)
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return st.QueryContext(context.WithoutCancel(ctx), args...)
}

// QueryRowContext runs a query that returns at most one row.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := t.stmt(ctx, query)
	if err != nil || st == nil || ctx.Err() != nil {
		// A failed prepare, or the end of ctx, surfaces as the Row's
		// error here.
		return t.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(context.WithoutCancel(ctx), args...)
}

// maxRowsPerInsert bounds the rows of one statement of ExecRows.
const maxRowsPerInsert = 64

// maxArgsPerStatement is SQLite's default limit on the arguments of one
// statement (SQLITE_MAX_VARIABLE_NUMBER).
const maxArgsPerStatement = 32766

// ExecRows runs one multi-row INSERT (or REPLACE) for many rows:
// head is the statement up to and including VALUES
// ("INSERT INTO t (a, b) VALUES"), tail what follows the rows (an ON
// CONFLICT clause, or ""), and args the values of the rows, width values
// per row, row after row. It returns how many rows the statements changed
// (ON CONFLICT DO NOTHING does not count a row it left out).
//
// Rows are inserted in order, as one INSERT per row would insert them: a
// row that conflicts with an earlier row of the same call meets that row.
// The work is split into statements of up to 64 rows, of sizes that are
// powers of two, so that few texts are prepared (once per runner, as in
// ExecContext). A statement per row costs SQLite and the driver about as
// much again as the row itself; folding a batch's rows into a few statements
// is what makes Projection.Apply's batch form (BatchApplier) fast.
func (t *Tx) ExecRows(ctx context.Context, head string, width int, tail string, args []any) (int64, error) {
	if width < 1 || len(args)%width != 0 {
		return 0, fmt.Errorf("insert rows: %d values do not make rows of %d", len(args), width)
	}
	chunk := maxRowsPerInsert
	for chunk > 1 && chunk*width > maxArgsPerStatement {
		chunk /= 2
	}
	var changed int64
	for rows := len(args) / width; rows > 0; {
		n := chunk
		for n > rows {
			n /= 2
		}
		var query string
		if t.stmts != nil {
			query = t.stmts.rowsText(head, width, tail, n)
		} else {
			query = rowsText(head, width, tail, n)
		}
		res, err := t.ExecContext(ctx, query, args[:n*width]...)
		if err != nil {
			return changed, err
		}
		c, err := res.RowsAffected()
		if err != nil {
			return changed, err
		}
		changed += c
		args, rows = args[n*width:], rows-n
	}
	return changed, nil
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
	db    *sql.DB
	mu    sync.Mutex
	m     map[string]*sql.Stmt
	texts map[rowsKey]string // texts of ExecRows statements
}

// rowsKey names the text of an ExecRows statement of n rows.
type rowsKey struct {
	head, tail string
	width, n   int
}

func newStatements(db *sql.DB) *statements {
	return &statements{db: db, m: map[string]*sql.Stmt{}, texts: map[rowsKey]string{}}
}

// rowsText is the text of an ExecRows statement, built once.
func (s *statements) rowsText(head string, width int, tail string, n int) string {
	k := rowsKey{head: head, tail: tail, width: width, n: n}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.texts[k]
	if !ok {
		q = rowsText(head, width, tail, n)
		s.texts[k] = q
	}
	return q
}

// rowsText returns "head (?, ?), (?, ?) tail" for n rows of width values.
func rowsText(head string, width int, tail string, n int) string {
	row := "(" + strings.Repeat("?, ", width-1) + "?)"
	var b strings.Builder
	b.Grow(len(head) + len(tail) + n*(len(row)+2) + 2)
	b.WriteString(head)
	b.WriteByte(' ')
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	if tail != "" {
		b.WriteByte(' ')
		b.WriteString(tail)
	}
	return b.String()
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

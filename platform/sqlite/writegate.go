package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// ErrBusy is wrapped by the error of a write that waited the whole busy
// timeout for the write gate of its pool (see the package documentation):
// another write of the same process held the database that long.
var ErrBusy = errors.New("database is locked: another write of this process held it for the whole busy timeout")

// writeGate lets one write of a pool at a time into SQLite. Writers that
// find it taken queue in Go, in arrival order, and are let in the moment the
// holder is done, instead of sleeping in SQLite's busy handler between
// retries. It is safe for concurrent use.
type writeGate struct {
	slot    chan struct{} // holds a token while a writer is inside
	maxWait time.Duration
}

func newWriteGate(maxWait time.Duration) *writeGate {
	return &writeGate{slot: make(chan struct{}, 1), maxWait: maxWait}
}

// enter waits until the gate is free and takes it, for at most maxWait and
// as long as ctx lives. The caller leaves once its write is over.
func (g *writeGate) enter(ctx context.Context) error {
	select {
	case g.slot <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(g.maxWait)
	defer timer.Stop()
	select {
	case g.slot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the write gate: %w", ctx.Err())
	case <-timer.C:
		return fmt.Errorf("wait for the write gate for %s: %w", g.maxWait, ErrBusy)
	}
}

// leave frees the gate for the next writer.
func (g *writeGate) leave() { <-g.slot }

// gatedConnector opens connections of one pool that share a write gate.
type gatedConnector struct {
	base driver.Connector
	gate *writeGate
}

// Connect implements driver.Connector.
func (c *gatedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	g, err := newGatedConn(conn, c.gate)
	if err != nil {
		_ = conn.Close() // the driver lacking an interface is the error to report
		return nil, err
	}
	return g, nil
}

// Driver implements driver.Connector.
func (c *gatedConnector) Driver() driver.Driver { return c.base.Driver() }

// gatedConn is a connection whose writes pass the pool's gate: a write
// transaction holds it from BeginTx to Commit or Rollback, a statement run
// with Exec outside a transaction holds it while it runs. It forwards every
// optional interface of modernc.org/sqlite's connections, so that
// database/sql keeps using the context-aware methods.
//
// database/sql never uses a connection from two goroutines at once, so its
// fields need no lock.
type gatedConn struct {
	driver.Conn
	beginTx driver.ConnBeginTx
	prepare driver.ConnPrepareContext
	exec    driver.ExecerContext
	query   driver.QueryerContext
	ping    driver.Pinger
	reset   driver.SessionResetter
	valid   driver.Validator

	gate *writeGate
	// tx is the transaction open on this connection, nil when none.
	tx *gatedTx
}

func newGatedConn(conn driver.Conn, gate *writeGate) (*gatedConn, error) {
	c := &gatedConn{Conn: conn, gate: gate}
	var ok [7]bool
	c.beginTx, ok[0] = conn.(driver.ConnBeginTx)
	c.prepare, ok[1] = conn.(driver.ConnPrepareContext)
	c.exec, ok[2] = conn.(driver.ExecerContext)
	c.query, ok[3] = conn.(driver.QueryerContext)
	c.ping, ok[4] = conn.(driver.Pinger)
	c.reset, ok[5] = conn.(driver.SessionResetter)
	c.valid, ok[6] = conn.(driver.Validator)
	for _, has := range ok {
		if !has {
			return nil, fmt.Errorf("open sqlite connection: the driver's %T lacks an interface database/sql needs for context handling", conn)
		}
	}
	return c, nil
}

// Unwrap returns the driver's own connection (modernc.org/sqlite's Limit
// looks through wrappers with it).
func (c *gatedConn) Unwrap() driver.Conn { return c.Conn }

// BeginTx implements driver.ConnBeginTx. A write transaction first waits
// for the gate, under ctx; a read-only one never does.
func (c *gatedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if !opts.ReadOnly {
		if err := c.gate.enter(ctx); err != nil {
			return nil, err
		}
	}
	tx, err := c.beginTx.BeginTx(ctx, opts)
	if err != nil {
		if !opts.ReadOnly {
			c.gate.leave()
		}
		return nil, err
	}
	c.tx = &gatedTx{Tx: tx, conn: c, holdsGate: !opts.ReadOnly}
	return c.tx, nil
}

// Begin implements driver.Conn; database/sql calls BeginTx instead.
func (c *gatedConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// ExecContext implements driver.ExecerContext. Outside a transaction the
// statement is a write in a transaction of its own (autocommit): it runs
// through the gate.
func (c *gatedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.tx != nil {
		return c.exec.ExecContext(ctx, query, args)
	}
	if err := c.gate.enter(ctx); err != nil {
		return nil, err
	}
	defer c.gate.leave()
	return c.exec.ExecContext(ctx, query, args)
}

// QueryContext implements driver.QueryerContext. Queries never take the
// gate: a statement that writes and returns rows (INSERT … RETURNING) run
// outside a transaction waits for the write lock in SQLite's busy handler.
func (c *gatedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.query.QueryContext(ctx, query, args)
}

// PrepareContext implements driver.ConnPrepareContext.
func (c *gatedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.prepare.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	exec, okExec := st.(driver.StmtExecContext)
	query2, okQuery := st.(driver.StmtQueryContext)
	if !okExec || !okQuery {
		_ = st.Close() // the missing interface is the error to report
		return nil, fmt.Errorf("prepare sqlite statement: the driver's %T lacks the context-aware methods", st)
	}
	return &gatedStmt{Stmt: st, exec: exec, query: query2, conn: c}, nil
}

// Ping implements driver.Pinger.
func (c *gatedConn) Ping(ctx context.Context) error { return c.ping.Ping(ctx) }

// ResetSession implements driver.SessionResetter.
func (c *gatedConn) ResetSession(ctx context.Context) error { return c.reset.ResetSession(ctx) }

// IsValid implements driver.Validator.
func (c *gatedConn) IsValid() bool { return c.valid.IsValid() }

// Close implements driver.Conn. Closing the connection ends a transaction
// still open on it (SQLite rolls it back), and so frees the gate it held.
func (c *gatedConn) Close() error {
	err := c.Conn.Close()
	if c.tx != nil {
		c.tx.end()
	}
	return err
}

// gatedTx is a transaction of a gatedConn; a write transaction holds the
// gate until Commit or Rollback, whatever their outcome (a failed COMMIT
// leaves no transaction open: the driver rolls it back).
type gatedTx struct {
	driver.Tx
	conn      *gatedConn
	holdsGate bool
	ended     bool
}

// Commit implements driver.Tx.
func (t *gatedTx) Commit() error {
	defer t.end()
	return t.Tx.Commit()
}

// Rollback implements driver.Tx.
func (t *gatedTx) Rollback() error {
	defer t.end()
	return t.Tx.Rollback()
}

// end marks the transaction over and frees the gate, once.
func (t *gatedTx) end() {
	if t.ended {
		return
	}
	t.ended = true
	if t.conn.tx == t {
		t.conn.tx = nil
	}
	if t.holdsGate {
		t.conn.gate.leave()
	}
}

// gatedStmt is a prepared statement of a gatedConn. Executed outside a
// transaction it passes the gate, like gatedConn.ExecContext.
type gatedStmt struct {
	driver.Stmt
	exec  driver.StmtExecContext
	query driver.StmtQueryContext
	conn  *gatedConn
}

// ExecContext implements driver.StmtExecContext.
func (s *gatedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if s.conn.tx != nil {
		return s.exec.ExecContext(ctx, args)
	}
	if err := s.conn.gate.enter(ctx); err != nil {
		return nil, err
	}
	defer s.conn.gate.leave()
	return s.exec.ExecContext(ctx, args)
}

// QueryContext implements driver.StmtQueryContext; queries never take the gate.
func (s *gatedStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.query.QueryContext(ctx, args)
}

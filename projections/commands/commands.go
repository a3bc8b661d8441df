// Package commands is the command log: for every command id, what became of
// it (pending, succeeded with the events it caused, or rejected with a code
// and reason). A projections.Runner folds the command and event topics into
// it; the gateway answers GET /v1/commands/{id} from it ([Projection.Get],
// [Projection.Wait]) and looks retries with an Idempotency-Key up in it.
//
// The log learns everything it records about a command from the command
// message itself: type, aggregate id, acceptance time (ce_time) and the
// gateway's digest of the HTTP request (the ce_requesthash extension), with
// which a retry is told from another request reusing the key. The gateway
// does not write to the log: it answers 202 once the broker acknowledged the
// command. ([Projection.Accept], the synchronous record older gateways made,
// still works and is served by the query edge's PUT; nothing on the intake
// path calls it.)
//
// Commands and their events travel on different topics and may be consumed in
// either order: an event can complete a command the log has not seen yet, and
// the command, when it arrives, only fills in what was missing. A completed
// outcome is never turned back into a pending one.
//
// Every outcome carries the positions (topic, partition, offset) of the events
// the command caused, as this log consumed them: a client that just sent a
// command can ask a query to wait until a read model has reached them
// (read-your-writes, see package gateway).
//
// Its table carries the projection version in its name (commands_v1_outcomes,
// commands_v2_outcomes, …). A rebuild reads the request hashes back from the
// command topics; records made by Accept go to the version that serves and to
// a version being rebuilt, and a rebuild starts by carrying them over
// (CarryOver): the hashes of commands published without ce_requesthash (by
// gateways older than the extension) exist nowhere in the log.
package commands

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections"
)

// Status is what became of a command.
type Status string

// Statuses of a command.
const (
	StatusPending   Status = "pending"
	StatusSucceeded Status = "succeeded"
	StatusRejected  Status = "rejected"
)

// ErrNotFound is returned for a command id the log does not know.
var ErrNotFound = errors.New("command not found")

// Outcome is what the log knows of one command.
type Outcome struct {
	CommandID   string `json:"command_id"`
	Type        string `json:"type"`
	AggregateID string `json:"aggregate_id"`
	Status      Status `json:"status"`
	// EventIDs and EventTypes are the events the command caused, in the
	// order the log saw them, with the wire names they were written with.
	EventIDs   []string `json:"event_ids,omitempty"`
	EventTypes []string `json:"event_types,omitempty"`
	// Positions are where those events are in the log, one per event;
	// a query can wait for a read model to reach them.
	Positions []projections.Position `json:"positions,omitempty"`
	// Code and Reason explain a rejection (see the events.Code… constants).
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// AcceptedAt is when the gateway accepted the command; zero while only
	// its events are known.
	AcceptedAt  time.Time  `json:"accepted_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// RequestHash is the gateway's digest of the request that carried the
	// command, to tell a retry from a different request reusing an id.
	RequestHash string `json:"-"`
}

// Accepted is a command as the gateway accepted it.
type Accepted struct {
	CommandID, Type, AggregateID, RequestHash string
	AcceptedAt                                time.Time
}

// pollInterval is how soon Wait reads the log again when nothing woke it,
// doubling up to maxPollInterval while it waits: the runner of this process
// wakes it when a commit touched its command (Committed), the polls catch
// the commits of other processes writing the same file. (A poll per waiter
// every 10 ms was, with the thousands of requests waiting when the pipeline
// fell behind, most of the CPU: the lookups made it fall further behind.)
const (
	pollInterval    = 10 * time.Millisecond
	maxPollInterval = 250 * time.Millisecond
)

// Projection is the command log. Apply is called by a projections.Runner;
// the other methods are safe for concurrent use with it and with each other.
// It does not own the database.
type Projection struct {
	db *sql.DB

	// reads are the prepared reads of Get, one per version (readStmt).
	stmtMu sync.Mutex
	reads  map[int]*sql.Stmt

	// Wait's waiters, woken when their command's outcome may have changed:
	// Apply notes the ids it changed that someone waits for, Committed
	// wakes them once the runner committed.
	mu      sync.Mutex
	waiters map[string]*waiter
	changed []string
}

// waiter is the signal of the requests waiting for one command.
type waiter struct {
	signal projections.Signal
	n      int // requests waiting
}

// New returns the command log, reading and writing db.
func New(db *sql.DB) *Projection { return &Projection{db: db} }

// Name implements projections.Projection.
func (*Projection) Name() string { return "commands" }

// Committed implements projections.CommitObserver: the requests waiting for
// an outcome the committed transactions changed look again.
func (p *Projection) Committed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.changed {
		if w := p.waiters[id]; w != nil {
			w.signal.Broadcast()
		}
	}
	p.changed = p.changed[:0]
}

// touched notes that Apply changed the outcome of command id, for Committed.
// Only ids someone waits for are noted. (A transaction rolled back after
// noting one wakes its waiters for nothing: they look, and wait again.)
func (p *Projection) touched(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiters[id] != nil {
		p.changed = append(p.changed, id)
	}
}

// await registers a request waiting for command id; release it when done.
func (p *Projection) await(id string) (w *waiter, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiters == nil {
		p.waiters = map[string]*waiter{}
	}
	w = p.waiters[id]
	if w == nil {
		w = &waiter{}
		p.waiters[id] = w
	}
	w.n++
	return w, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if w.n--; w.n == 0 {
			delete(p.waiters, id)
		}
	}
}

// Topics implements projections.Projection.
func (*Projection) Topics() []string {
	return []string{events.TopicUserCommands, events.TopicOrderCommands, events.TopicUserEvents, events.TopicOrderEvents}
}

// WantsCommands implements projections.CommandConsumer: the log needs the
// commands themselves, not only their events.
func (*Projection) WantsCommands() bool { return true }

// Times are stored as Unix nanoseconds, 0 for none.
const setupSQL = `
CREATE TABLE IF NOT EXISTS %s (
	command_id   TEXT PRIMARY KEY,
	type         TEXT    NOT NULL,
	aggregate_id TEXT    NOT NULL,
	status       TEXT    NOT NULL,
	event_ids    TEXT    NOT NULL,
	event_types  TEXT    NOT NULL,
	code         TEXT    NOT NULL,
	reason       TEXT    NOT NULL,
	accepted_at  INTEGER NOT NULL,
	completed_at INTEGER NOT NULL,
	request_hash TEXT    NOT NULL,
	positions    TEXT    NOT NULL DEFAULT '[]'
) WITHOUT ROWID;`

// Setup implements projections.Projection. Tables of version 1 made before
// outcomes carried positions get the column.
func (*Projection) Setup(ctx context.Context, tx *projections.Tx) error {
	table := tx.Table("outcomes")
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(setupSQL, table)); err != nil {
		return fmt.Errorf("create command log table: %w", err)
	}
	if err := projections.EnsureColumn(ctx, tx, table, "positions", `TEXT NOT NULL DEFAULT '[]'`); err != nil {
		return fmt.Errorf("create command log table: %w", err)
	}
	return nil
}

// CarryOver implements projections.Carrier: the commands the gateway
// accepted, with their request hashes and acceptance times, become pending
// outcomes of the new version; the rebuild then completes them from the log.
func (*Projection) CarryOver(ctx context.Context, tx *projections.Tx, from int) error {
	if _, err := tx.ExecContext(ctx, `
INSERT INTO `+tx.Table("outcomes")+`
	(command_id, type, aggregate_id, status, event_ids, event_types, code, reason, accepted_at, completed_at, request_hash, positions)
SELECT command_id, type, aggregate_id, ?, '[]', '[]', '', '', accepted_at, 0, request_hash, '[]'
FROM `+projections.Table("commands", from, "outcomes")+` WHERE request_hash != ''
ON CONFLICT (command_id) DO NOTHING`, string(StatusPending)); err != nil {
		return fmt.Errorf("carry accepted commands over from v%d: %w", from, err)
	}
	return nil
}

// Apply implements projections.Projection:
//   - a command makes a pending outcome, or fills in the type, aggregate id,
//     acceptance time (ce_time) and request hash (ce_requesthash) of one its
//     events created first; a hash already recorded is kept, so a command
//     re-sent with another body (a reused Idempotency-Key racing the first
//     request) does not replace the digest of the request the command
//     handler acted on, the first in the partition;
//   - a CommandRejected marks its command rejected with code and reason;
//   - any other event with a causation id marks its command succeeded and
//     adds its id, wire type and position to the outcome.
//
// Events without a causation id are not about a command and are ignored.
func (p *Projection) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	table := tx.Table("outcomes")
	if t, ok := events.Lookup(e.Type); ok && t.Kind == events.KindCommand {
		p.touched(e.ID)
		return update(ctx, tx, table, e.ID, func(o *Outcome) {
			o.Type = e.Type
			if e.Key != "" {
				o.AggregateID = e.Key
			}
			if o.AcceptedAt.IsZero() {
				o.AcceptedAt = e.Time
			}
			fill(&o.RequestHash, e.Metadata.Get(cloudevents.RequestHash))
		})
	}
	at := projections.Position{Topic: e.Topic, Partition: e.Partition, Offset: e.Offset}

	if r, ok := e.Data.(*events.CommandRejected); ok {
		id := r.CommandID
		if id == "" {
			id = e.CausationID
		}
		if id == "" {
			return nil
		}
		p.touched(id)
		return update(ctx, tx, table, id, func(o *Outcome) {
			fill(&o.Type, r.CommandType)
			fill(&o.AggregateID, r.AggregateID)
			if o.Status != StatusPending {
				return
			}
			o.Status, o.Code, o.Reason = StatusRejected, r.Code, r.Reason
			o.CompletedAt = completedAt(r.RejectedAt, e.Time)
			o.Positions = append(o.Positions, at)
		})
	}

	if e.CausationID == "" {
		return nil
	}
	p.touched(e.CausationID)
	return update(ctx, tx, table, e.CausationID, func(o *Outcome) {
		fill(&o.AggregateID, e.Key)
		if o.Status == StatusRejected {
			return
		}
		if o.Status == StatusPending {
			o.Status = StatusSucceeded
			o.CompletedAt = completedAt(e.Time, time.Time{})
		}
		if !slices.Contains(o.EventIDs, e.ID) {
			o.EventIDs = append(o.EventIDs, e.ID)
			o.EventTypes = append(o.EventTypes, e.WireType)
			o.Positions = append(o.Positions, at)
		}
	})
}

// Accept records a command the gateway accepted, as pending, and returns it
// with created true. The gateway no longer calls it (the log learns the same
// from the command message); it serves the query edge's PUT, which gateways
// older than the ce_requesthash extension use. For an id already known it returns what is known, with
// created false, after filling in whatever of a that was still missing (when
// the log learnt of the command from its events first). While a rebuild
// builds a new version of the log, the command is recorded there too.
func (p *Projection) Accept(ctx context.Context, a Accepted) (current Outcome, created bool, err error) {
	if a.CommandID == "" {
		return Outcome{}, false, errors.New("accept command: a command id is required")
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return Outcome{}, false, fmt.Errorf("accept command %s: begin: %w", a.CommandID, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	active, building, err := projections.VersionsOf(ctx, tx, p.Name())
	if err != nil {
		return Outcome{}, false, fmt.Errorf("accept command %s: %w", a.CommandID, err)
	}
	versions := []int{active}
	if building != 0 {
		versions = append(versions, building)
	}
	for i, v := range versions {
		table := projections.Table(p.Name(), v, "outcomes")
		o, found, err := load(ctx, tx, table, a.CommandID)
		if err != nil {
			return Outcome{}, false, fmt.Errorf("accept command %s: %w", a.CommandID, err)
		}
		if !found {
			o = Outcome{CommandID: a.CommandID, Status: StatusPending}
		}
		fill(&o.Type, a.Type)
		fill(&o.AggregateID, a.AggregateID)
		fill(&o.RequestHash, a.RequestHash)
		if o.AcceptedAt.IsZero() {
			o.AcceptedAt = a.AcceptedAt.UTC()
		}
		if err := store(ctx, tx, table, o); err != nil {
			return Outcome{}, false, fmt.Errorf("accept command %s: %w", a.CommandID, err)
		}
		if i == 0 {
			current, created = o, !found
		}
	}
	if err := tx.Commit(); err != nil {
		return Outcome{}, false, fmt.Errorf("accept command %s: commit: %w", a.CommandID, err)
	}
	return current, created, nil
}

// Get returns what the log knows of a command, or ErrNotFound.
func (p *Projection) Get(ctx context.Context, id string) (Outcome, error) {
	var (
		o     Outcome
		found bool
	)
	err := projections.Read(ctx, p.db, p.Name(), func(tx *sql.Tx, v int) error {
		stmt, err := p.readStmt(ctx, v)
		if err != nil {
			return err
		}
		o, found, err = scanOutcome(tx.StmtContext(ctx, stmt).QueryRowContext(ctx, id))
		return err
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("read command %s: %w", id, err)
	}
	if !found {
		return Outcome{}, fmt.Errorf("read command %s: %w", id, ErrNotFound)
	}
	return o, nil
}

// Wait returns a command's outcome once it is no longer pending, reading the
// log after every commit of this process's runner that touched the command,
// and on a timer (10 ms, doubling to 250 ms) for the commits of others. When ctx is done first it returns the latest outcome read,
// still pending, and a nil error; if the log never knew the command by then,
// ErrNotFound. Other read failures are returned at once.
func (p *Projection) Wait(ctx context.Context, id string) (Outcome, error) {
	poll := pollInterval
	timer := time.NewTimer(poll)
	defer timer.Stop()
	var (
		latest Outcome
		known  bool
	)
	w, release := p.await(id)
	defer release()
	for {
		woken := w.signal.Wait() // before reading: a commit meanwhile is not missed
		o, err := p.Get(ctx, id)
		switch {
		case err == nil:
			latest, known = o, true
			if o.Status != StatusPending {
				return o, nil
			}
		case ctx.Err() != nil:
			// The read failed because ctx is done: answer with what is known.
		case !errors.Is(err, ErrNotFound):
			return Outcome{}, fmt.Errorf("wait for command %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			if !known {
				return Outcome{}, fmt.Errorf("wait for command %s: %w", id, ErrNotFound)
			}
			return latest, nil
		case <-woken:
		case <-timer.C:
			// Nothing this process committed touched it: look less
			// often, so that many waiters do not add up to a load.
			poll = min(2*poll, maxPollInterval)
			timer.Reset(poll)
		}
	}
}

// rw is a *sql.Tx or a *projections.Tx.
type rw interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// update loads the outcome of a command from table (a new pending one if
// unknown), changes it and stores it.
func update(ctx context.Context, tx rw, table, id string, change func(*Outcome)) error {
	o, found, err := load(ctx, tx, table, id)
	if err != nil {
		return fmt.Errorf("update command %s: %w", id, err)
	}
	if !found {
		o = Outcome{CommandID: id, Status: StatusPending}
	}
	change(&o)
	if err := store(ctx, tx, table, o); err != nil {
		return fmt.Errorf("update command %s: %w", id, err)
	}
	return nil
}

// queryer is a *sql.DB, a *sql.Tx or a *projections.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func load(ctx context.Context, q queryer, table, id string) (Outcome, bool, error) {
	return scanOutcome(q.QueryRowContext(ctx, selectOutcome(table), id))
}

// selectOutcome reads one outcome of table by command id.
func selectOutcome(table string) string {
	return `
SELECT command_id, type, aggregate_id, status, event_ids, event_types, code, reason, accepted_at, completed_at, request_hash, positions
FROM ` + table + ` WHERE command_id = ?`
}

// readStmt is selectOutcome of version v's table, prepared once: Get is
// what every waiting request asks, and parsing its SQL each time cost more
// than running it.
func (p *Projection) readStmt(ctx context.Context, v int) (*sql.Stmt, error) {
	p.stmtMu.Lock()
	defer p.stmtMu.Unlock()
	if stmt := p.reads[v]; stmt != nil {
		return stmt, nil
	}
	stmt, err := p.db.PrepareContext(ctx, selectOutcome(projections.Table(p.Name(), v, "outcomes")))
	if err != nil {
		return nil, fmt.Errorf("prepare the read of an outcome: %w", err)
	}
	if p.reads == nil {
		p.reads = map[int]*sql.Stmt{}
	}
	p.reads[v] = stmt
	return stmt, nil
}

// scanOutcome reads the row of selectOutcome; false when there is none.
func scanOutcome(row *sql.Row) (Outcome, bool, error) {
	var (
		o                     Outcome
		status                string
		ids, types, positions string
		accepted, completed   int64
	)
	err := row.Scan(
		&o.CommandID, &o.Type, &o.AggregateID, &status, &ids, &types, &o.Code, &o.Reason, &accepted, &completed, &o.RequestHash, &positions)
	if errors.Is(err, sql.ErrNoRows) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, fmt.Errorf("load outcome: %w", err)
	}
	o.Status = Status(status)
	if err := json.Unmarshal([]byte(ids), &o.EventIDs); err != nil {
		return Outcome{}, false, fmt.Errorf("load outcome: decode event ids: %w", err)
	}
	if err := json.Unmarshal([]byte(types), &o.EventTypes); err != nil {
		return Outcome{}, false, fmt.Errorf("load outcome: decode event types: %w", err)
	}
	if err := json.Unmarshal([]byte(positions), &o.Positions); err != nil {
		return Outcome{}, false, fmt.Errorf("load outcome: decode positions: %w", err)
	}
	if len(o.EventIDs) == 0 {
		o.EventIDs, o.EventTypes = nil, nil
	}
	if len(o.Positions) == 0 {
		o.Positions = nil
	}
	o.AcceptedAt = fromNanos(accepted)
	if completed != 0 {
		t := fromNanos(completed)
		o.CompletedAt = &t
	}
	return o, true, nil
}

func store(ctx context.Context, tx rw, table string, o Outcome) error {
	ids, err := json.Marshal(nonNil(o.EventIDs))
	if err != nil {
		return fmt.Errorf("store outcome: encode event ids: %w", err)
	}
	types, err := json.Marshal(nonNil(o.EventTypes))
	if err != nil {
		return fmt.Errorf("store outcome: encode event types: %w", err)
	}
	positions := o.Positions
	if positions == nil {
		positions = []projections.Position{}
	}
	pos, err := json.Marshal(positions)
	if err != nil {
		return fmt.Errorf("store outcome: encode positions: %w", err)
	}
	var completed int64
	if o.CompletedAt != nil {
		completed = nanos(*o.CompletedAt)
	}
	_, err = tx.ExecContext(ctx, `
INSERT INTO `+table+`
	(command_id, type, aggregate_id, status, event_ids, event_types, code, reason, accepted_at, completed_at, request_hash, positions)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (command_id) DO UPDATE SET
	type = excluded.type, aggregate_id = excluded.aggregate_id, status = excluded.status,
	event_ids = excluded.event_ids, event_types = excluded.event_types, code = excluded.code,
	reason = excluded.reason, accepted_at = excluded.accepted_at, completed_at = excluded.completed_at,
	request_hash = excluded.request_hash, positions = excluded.positions`,
		o.CommandID, o.Type, o.AggregateID, string(o.Status), string(ids), string(types), o.Code, o.Reason,
		nanos(o.AcceptedAt), completed, o.RequestHash, string(pos))
	if err != nil {
		return fmt.Errorf("store outcome: %w", err)
	}
	return nil
}

// fill sets *dst to v when *dst is empty.
func fill(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// completedAt returns the first non-zero time, in UTC, or nil.
func completedAt(times ...time.Time) *time.Time {
	for _, t := range times {
		if !t.IsZero() {
			t = t.UTC()
			return &t
		}
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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

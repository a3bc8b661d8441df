package commandstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/millrace/millrace/platform/cloudevents"
)

// ErrNoMessage is returned by Apply when its context carries no incoming
// Watermill message: Apply must run inside a cqrs handler, which puts it there.
var ErrNoMessage = errors.New("no incoming message in context: Apply must be called from a cqrs handler")

// ErrVersionConflict is returned by Apply when the aggregate changed between
// loading and saving it. It is transient: the redelivered message runs again
// on the new state.
var ErrVersionConflict = errors.New("aggregate changed concurrently")

// AggregateConfig names one kind of aggregate and where its events go.
type AggregateConfig struct {
	// Name is the kind of aggregate, e.g. "order"; ids are unique per name.
	Name string
	// Handler is the inbox namespace, e.g. "orders": a message id is applied
	// once per handler.
	Handler string
	// Topic is where emitted events are published, e.g. "orders.events".
	Topic string
	// Source is the ce_source of emitted events, e.g. "/millrace/orders".
	Source string
	// Now stamps stored rows and ce_time; time.Now when nil.
	Now func() time.Time
}

func (c *AggregateConfig) setDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every missing field at once.
func (c AggregateConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("aggregate name is empty"))
	}
	if c.Handler == "" {
		errs = append(errs, errors.New("handler (inbox namespace) is empty"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("events topic is empty"))
	}
	if c.Source == "" {
		errs = append(errs, errors.New("ce_source is empty"))
	}
	return errors.Join(errs...)
}

// Aggregate stores aggregates of state type S that emit events of type E
// (usually an interface such as events.Message). S is stored as JSON, so its
// exported fields need JSON tags that stay compatible across releases. An
// Aggregate is safe for concurrent use; calls for the same id are serialised
// by SQLite's write lock.
type Aggregate[S any, E cloudevents.Named] struct {
	store     *Store
	cfg       AggregateConfig
	marshaler cloudevents.Marshaler
}

// NewAggregate returns the typed adapter for one kind of aggregate in store.
func NewAggregate[S any, E cloudevents.Named](store *Store, cfg AggregateConfig) (*Aggregate[S, E], error) {
	if store == nil {
		return nil, fmt.Errorf("create aggregate %q: no store given", cfg.Name)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("create aggregate %q: %w", cfg.Name, err)
	}
	return &Aggregate[S, E]{
		store:     store,
		cfg:       cfg,
		marshaler: cloudevents.Marshaler{Source: cfg.Source, Now: cfg.Now},
	}, nil
}

// Apply handles the incoming message found in ctx (see
// cqrs.OriginalMessageFromCtx) for the aggregate id, in one transaction:
//
//   - if the message id is already in this handler's inbox, it does nothing
//     and returns nil: a repeated command has no second effect;
//   - otherwise it loads the current state (nil when the aggregate does not
//     exist) and calls fn with it;
//   - if fn fails, nothing is written and fn's error is returned, so that the
//     message is redelivered;
//   - a non-nil next state is saved with the version incremented; a nil next
//     state leaves the stored state as it is;
//   - every emitted event is appended to the outbox, with ce_causationid set
//     to the incoming message id, ce_correlationid carried over (or the
//     incoming id when the message had none) and the W3C trace context
//     copied;
//   - the message id is recorded in the inbox.
//
// After the commit it wakes the relay. fn may run more than once for one
// message (after a failure or a redelivery) and must not have side effects.
func (a *Aggregate[S, E]) Apply(ctx context.Context, id string, fn func(current *S) (next *S, emitted []E, err error)) error {
	in := cqrs.OriginalMessageFromCtx(ctx)
	if in == nil {
		return fmt.Errorf("apply to %s %s: %w", a.cfg.Name, id, ErrNoMessage)
	}
	applied, err := a.apply(ctx, in.UUID, in.Metadata.Get, id, fn)
	if err != nil {
		return err
	}
	if applied {
		a.store.notify()
	}
	return nil
}

// apply runs the transaction of Apply and reports whether it committed
// anything. It runs four statements for a command with one event (inbox,
// load, save, outbox), each prepared once for the store.
func (a *Aggregate[S, E]) apply(ctx context.Context, msgID string, meta func(string) string, id string, fn func(*S) (*S, []E, error)) (applied bool, err error) {
	tx, err := a.store.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("apply %s to %s %s: begin: %w", msgID, a.cfg.Name, id, err)
	}
	defer func() {
		if !applied {
			_ = tx.Rollback() // nothing was written that must be kept
		}
	}()

	// Recording the message in the inbox first doubles as the check
	// whether it was seen: an id already there inserts nothing. Should fn
	// or anything after fail, the rollback takes the row back out.
	now := formatTime(a.cfg.Now())
	res, err := tx.StmtContext(ctx, a.store.stmts.inboxAdd).ExecContext(ctx, a.cfg.Handler, msgID, now)
	if err != nil {
		return false, fmt.Errorf("apply %s to %s %s: record in inbox: %w", msgID, a.cfg.Name, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("apply %s to %s %s: record in inbox: %w", msgID, a.cfg.Name, id, err)
	} else if n == 0 {
		return false, nil // seen before
	}

	current, version, err := load[S](ctx, tx.StmtContext(ctx, a.store.stmts.load), a.cfg.Name, id)
	if err != nil {
		return false, fmt.Errorf("apply %s to %s %s: %w", msgID, a.cfg.Name, id, err)
	}
	next, emitted, err := fn(current)
	if err != nil {
		return false, fmt.Errorf("apply %s to %s %s: %w", msgID, a.cfg.Name, id, err)
	}

	if next != nil {
		if err := a.save(ctx, tx, id, version, next, now); err != nil {
			return false, fmt.Errorf("apply %s to %s %s: %w", msgID, a.cfg.Name, id, err)
		}
	}
	if len(emitted) > 0 {
		outbox := tx.StmtContext(ctx, a.store.stmts.outboxAdd)
		for _, e := range emitted {
			if err := a.appendEvent(ctx, outbox, msgID, meta, e, now); err != nil {
				return false, fmt.Errorf("apply %s to %s %s: %w", msgID, a.cfg.Name, id, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("apply %s to %s %s: commit: %w", msgID, a.cfg.Name, id, err)
	}
	return true, nil
}

// appendEvent marshals e as a CloudEvent caused by the incoming message and
// appends it to the outbox.
func (a *Aggregate[S, E]) appendEvent(ctx context.Context, outbox *sql.Stmt, causeID string, causeMeta func(string) string, e E, now string) error {
	msg, err := a.marshaler.Marshal(e)
	if err != nil {
		return fmt.Errorf("marshal event: %w", err)
	}
	msg.Metadata.Set(cloudevents.CausationID, causeID)
	correlation := causeMeta(cloudevents.CorrelationID)
	if correlation == "" {
		correlation = causeID
	}
	msg.Metadata.Set(cloudevents.CorrelationID, correlation)
	for _, k := range []string{cloudevents.Traceparent, cloudevents.Tracestate} {
		if v := causeMeta(k); v != "" {
			msg.Metadata.Set(k, v)
		}
	}
	metadata, err := json.Marshal(msg.Metadata)
	if err != nil {
		return fmt.Errorf("encode metadata of %s: %w", msg.UUID, err)
	}
	if _, err := outbox.ExecContext(ctx,
		a.cfg.Topic, msg.UUID, string(metadata), []byte(msg.Payload), now); err != nil {
		return fmt.Errorf("append %s %s to outbox: %w", msg.Metadata.Get(cloudevents.Type), msg.UUID, err)
	}
	return nil
}

// Exists reports whether an aggregate with this id has been saved.
func (a *Aggregate[S, E]) Exists(ctx context.Context, id string) (bool, error) {
	var exists bool
	if err := a.store.stmts.exists.QueryRowContext(ctx, a.cfg.Name, id).Scan(&exists); err != nil {
		return false, fmt.Errorf("check whether %s %s exists: %w", a.cfg.Name, id, err)
	}
	return exists, nil
}

// Load returns the stored state of an aggregate and its version (the number
// of saves so far), or nil and 0 when it does not exist.
func (a *Aggregate[S, E]) Load(ctx context.Context, id string) (*S, int64, error) {
	state, version, err := load[S](ctx, a.store.stmts.load, a.cfg.Name, id)
	if err != nil {
		return nil, 0, err
	}
	return state, version, nil
}

// load runs the store's load statement (bound to a transaction or not).
func load[S any](ctx context.Context, stmt *sql.Stmt, name, id string) (*S, int64, error) {
	var (
		version int64
		state   []byte
	)
	err := stmt.QueryRowContext(ctx, name, id).Scan(&version, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load %s %s: %w", name, id, err)
	}
	s := new(S)
	if err := json.Unmarshal(state, s); err != nil {
		return nil, 0, fmt.Errorf("decode %s %s version %d: %w", name, id, version, err)
	}
	return s, version, nil
}

// save writes state as version+1, provided the stored version is still the
// one that was loaded.
func (a *Aggregate[S, E]) save(ctx context.Context, tx *sql.Tx, id string, version int64, state *S, now string) error {
	name := a.cfg.Name
	data, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", name, id, err)
	}
	var res sql.Result
	if version == 0 {
		res, err = tx.StmtContext(ctx, a.store.stmts.insertState).ExecContext(ctx, name, id, string(data), now)
	} else {
		res, err = tx.StmtContext(ctx, a.store.stmts.updateState).ExecContext(ctx, string(data), now, name, id, version)
	}
	if err != nil {
		return fmt.Errorf("save %s %s: %w", name, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("save %s %s: %w", name, id, err)
	}
	if n != 1 {
		return fmt.Errorf("save %s %s at version %d: %w", name, id, version+1, ErrVersionConflict)
	}
	return nil
}

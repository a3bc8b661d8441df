package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
)

// ErrMalformedEvent is wrapped by the error [Runner.Handle] returns for a
// message of a known type whose payload or attributes cannot be decoded. It is
// permanent: retrying cannot help, so the router sends the message to the
// poison queue. The position does not advance past it.
var ErrMalformedEvent = errors.New("malformed event")

// Event is one decoded event (or command) as a projection sees it.
type Event struct {
	// ID is the message UUID (ce_id): the event id, or for a command its command id.
	ID string
	// Type is the wire name (ce_type), e.g. "orders.order-placed.v1".
	Type string
	// Key is the aggregate id: ce_subject, else ce_partitionkey, else Data.Key().
	Key string
	// Source is ce_source, e.g. "/millrace/orders".
	Source string
	// CausationID is ce_causationid: on events, the id of the command that caused them.
	CausationID string
	// Time is ce_time; zero when the message carries none.
	Time time.Time

	// Topic, Partition and Offset say where the message was consumed from.
	Topic     string
	Partition int32
	Offset    int64

	// Data is the decoded payload, a pointer such as *events.OrderPlaced.
	Data events.Message
}

// Projection folds events into tables of its own.
//
// The runner calls Setup once, from [NewRunner], and Apply once per event, each
// inside a transaction it owns (commits or rolls back; the projection must not).
// Apply is called with at most one transaction open at a time per database
// (SQLite serialises writers), but a projection's query methods may run
// concurrently with it from other goroutines.
type Projection interface {
	// Name is stable and unique among projections, e.g. "orders".
	Name() string
	// Version is bumped (starting at 1) when the read model must be rebuilt:
	// a new version has its own positions and consumer group.
	Version() int
	// Topics lists the topics the projection consumes.
	Topics() []string
	// Setup creates the projection's tables (CREATE TABLE IF NOT EXISTS …).
	Setup(ctx context.Context, tx *sql.Tx) error
	// Apply folds one event into the read model. An error rolls back the
	// read-model change and the position alike; the message is delivered again.
	Apply(ctx context.Context, tx *sql.Tx, e Event) error
}

// CommandConsumer is implemented by projections that want commands as well as
// events passed to Apply (projections/commands keeps the command log). The
// runner skips commands for every other projection.
type CommandConsumer interface {
	WantsCommands() bool
}

// Position is how far a projection got in one partition: the offset of the
// last message it applied or skipped.
type Position struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Runner applies consumed messages to one projection, exactly once per event.
//
// Its Handle method is a Watermill NoPublishHandlerFunc. It is safe for
// concurrent use, e.g. from subscribers of different partitions: each message
// is handled in its own immediate (write-locking) transaction, so the database
// must be opened with `_txlock=immediate` and a busy timeout, as
// platform/sqlite does. The runner does not own the database and never closes it.
type Runner struct {
	db            *sql.DB
	p             Projection
	name          string
	version       int
	wantsCommands bool
	logger        *slog.Logger
}

const setupRunnerSQL = `
CREATE TABLE IF NOT EXISTS projection_positions (
	projection  TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	topic       TEXT    NOT NULL,
	"partition" INTEGER NOT NULL,
	"offset"    INTEGER NOT NULL,
	PRIMARY KEY (projection, version, topic, "partition")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_applied (
	projection TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	event_id   TEXT    NOT NULL,
	PRIMARY KEY (projection, version, event_id)
) WITHOUT ROWID;`

// NewRunner creates the runner's tables and the projection's (p.Setup) in one
// transaction, and returns a runner ready to handle messages. A nil logger
// discards logs.
func NewRunner(ctx context.Context, db *sql.DB, p Projection, logger *slog.Logger) (*Runner, error) {
	if db == nil || p == nil {
		return nil, errors.New("new projection runner: database and projection are required")
	}
	if p.Name() == "" || p.Version() < 1 {
		return nil, fmt.Errorf("new projection runner: projection %q version %d: a name and a version of at least 1 are required", p.Name(), p.Version())
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		db:      db,
		p:       p,
		name:    p.Name(),
		version: p.Version(),
		logger:  logger.With("projection", p.Name(), "version", p.Version()),
	}
	if c, ok := p.(CommandConsumer); ok {
		r.wantsCommands = c.WantsCommands()
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("set up projection %s: begin: %w", r.name, err)
	}
	defer rollback(tx)
	if _, err := tx.ExecContext(ctx, setupRunnerSQL); err != nil {
		return nil, fmt.Errorf("set up projection %s: create runner tables: %w", r.name, err)
	}
	if err := p.Setup(ctx, tx); err != nil {
		return nil, fmt.Errorf("set up projection %s: %w", r.name, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("set up projection %s: commit: %w", r.name, err)
	}
	return r, nil
}

// Group is the Kafka consumer group the projection consumes under:
// "projection.<name>.v<version>".
func (r *Runner) Group() string {
	return fmt.Sprintf("projection.%s.v%d", r.name, r.version)
}

// Handle applies one consumed message, in one transaction with its position:
//   - an offset at or below the stored position of its partition is a
//     redelivery: nothing happens;
//   - an event id already applied (an outbox re-publish at a new offset), a
//     type this build does not know (forward compatibility) and a command the
//     projection did not ask for are skipped, but the position advances;
//   - otherwise the payload is decoded and applied, and the position and the
//     event id are stored.
//
// The message must carry the x-kafka-topic, x-kafka-partition and
// x-kafka-offset metadata. A known type that does not decode returns an error
// wrapping [ErrMalformedEvent]. The message's context bounds the transaction.
func (r *Runner) Handle(msg *message.Message) error {
	ctx := msg.Context()
	at, err := positionOf(msg)
	if err != nil {
		return fmt.Errorf("projection %s: handle message %s: %w", r.name, msg.UUID, err)
	}

	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projection %s: handle message %s: begin: %w", r.name, msg.UUID, err)
	}
	defer rollback(tx)

	// One read answers both questions: how far the partition got, and
	// whether this event id was applied before (at another offset).
	var (
		stored        sql.NullInt64
		appliedBefore bool
	)
	if err := tx.QueryRowContext(ctx, `
SELECT
	(SELECT "offset" FROM projection_positions WHERE projection = ?1 AND version = ?2 AND topic = ?3 AND "partition" = ?4),
	EXISTS (SELECT 1 FROM projection_applied WHERE projection = ?1 AND version = ?2 AND event_id = ?5)`,
		r.name, r.version, at.Topic, at.Partition, msg.UUID).Scan(&stored, &appliedBefore); err != nil {
		return fmt.Errorf("projection %s: handle message %s: read position: %w", r.name, msg.UUID, err)
	}
	if stored.Valid && at.Offset <= stored.Int64 {
		r.skipped(ctx, msg, at, "redelivered")
		return nil
	}

	if err := r.apply(ctx, tx, msg, at, appliedBefore); err != nil {
		return fmt.Errorf("projection %s: handle message %s at %s/%d@%d: %w", r.name, msg.UUID, at.Topic, at.Partition, at.Offset, err)
	}

	if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_positions (projection, version, topic, "partition", "offset") VALUES (?, ?, ?, ?, ?)
ON CONFLICT (projection, version, topic, "partition") DO UPDATE SET "offset" = excluded."offset"`,
		r.name, r.version, at.Topic, at.Partition, at.Offset); err != nil {
		return fmt.Errorf("projection %s: handle message %s: store position: %w", r.name, msg.UUID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection %s: handle message %s: commit: %w", r.name, msg.UUID, err)
	}
	return nil
}

// apply decides whether msg is applied or skipped and, when applied, applies
// it and records its id. The caller stores the position in both cases.
func (r *Runner) apply(ctx context.Context, tx *sql.Tx, msg *message.Message, at Position, appliedBefore bool) error {
	ceType := msg.Metadata.Get(cloudevents.Type)
	if msg.UUID == "" {
		return fmt.Errorf("%w: %s has no message id", ErrMalformedEvent, ceType)
	}

	if appliedBefore {
		r.skipped(ctx, msg, at, "event applied before")
		return nil
	}

	typ, ok := events.Lookup(ceType)
	if !ok {
		r.skipped(ctx, msg, at, "unknown type")
		return nil
	}
	if typ.Kind == events.KindCommand && !r.wantsCommands {
		r.skipped(ctx, msg, at, "command")
		return nil
	}

	e, err := decode(msg, typ, at)
	if err != nil {
		return err
	}
	if err := r.p.Apply(ctx, tx, e); err != nil {
		return fmt.Errorf("apply %s: %w", ceType, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO projection_applied (projection, version, event_id) VALUES (?, ?, ?)`,
		r.name, r.version, msg.UUID); err != nil {
		return fmt.Errorf("record applied id: %w", err)
	}
	return nil
}

// skipped logs, at debug level, a message the runner did not apply.
func (r *Runner) skipped(ctx context.Context, msg *message.Message, at Position, why string) {
	r.logger.DebugContext(ctx, "projection skipped message", "reason", why,
		"topic", at.Topic, "partition", at.Partition, "offset", at.Offset,
		"message_id", msg.UUID, "type", msg.Metadata.Get(cloudevents.Type))
}

// Positions reports, per topic and partition, the offset of the last message
// the projection's current version handled, ordered by topic and partition.
func (r *Runner) Positions(ctx context.Context) ([]Position, error) {
	rows, err := r.db.QueryContext(ctx,
		`SELECT topic, "partition", "offset" FROM projection_positions WHERE projection = ? AND version = ? ORDER BY topic, "partition"`,
		r.name, r.version)
	if err != nil {
		return nil, fmt.Errorf("read positions of projection %s: %w", r.name, err)
	}
	defer rows.Close()
	positions := []Position{}
	for rows.Next() {
		var p Position
		if err := rows.Scan(&p.Topic, &p.Partition, &p.Offset); err != nil {
			return nil, fmt.Errorf("read positions of projection %s: %w", r.name, err)
		}
		positions = append(positions, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read positions of projection %s: %w", r.name, err)
	}
	return positions, nil
}

// positionOf reads where msg was consumed from.
func positionOf(msg *message.Message) (Position, error) {
	topic := msg.Metadata.Get(cloudevents.KafkaTopic)
	partition := msg.Metadata.Get(cloudevents.KafkaPartition)
	offset := msg.Metadata.Get(cloudevents.KafkaOffset)
	if topic == "" || partition == "" || offset == "" {
		return Position{}, fmt.Errorf("read position: metadata %s, %s and %s are required (is the message from the Kafka subscriber?)",
			cloudevents.KafkaTopic, cloudevents.KafkaPartition, cloudevents.KafkaOffset)
	}
	p, err := strconv.ParseInt(partition, 10, 32)
	if err != nil {
		return Position{}, fmt.Errorf("read position: %s %q: %w", cloudevents.KafkaPartition, partition, err)
	}
	o, err := strconv.ParseInt(offset, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("read position: %s %q: %w", cloudevents.KafkaOffset, offset, err)
	}
	return Position{Topic: topic, Partition: int32(p), Offset: o}, nil
}

// decode builds the Event a projection sees from a message of a known type.
func decode(msg *message.Message, typ events.Type, at Position) (Event, error) {
	data := typ.New()
	if err := json.Unmarshal(msg.Payload, data); err != nil {
		return Event{}, fmt.Errorf("%w: decode %s payload: %v", ErrMalformedEvent, typ.Name, err)
	}
	var when time.Time
	if v := msg.Metadata.Get(cloudevents.Time); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return Event{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time", ErrMalformedEvent, cloudevents.Time, v)
		}
		when = t
	}
	key := msg.Metadata.Get(cloudevents.Subject)
	if key == "" {
		key = msg.Metadata.Get(cloudevents.PartitionKey)
	}
	if key == "" {
		key = data.Key()
	}
	return Event{
		ID:          msg.UUID,
		Type:        typ.Name,
		Key:         key,
		Source:      msg.Metadata.Get(cloudevents.Source),
		CausationID: msg.Metadata.Get(cloudevents.CausationID),
		Time:        when,
		Topic:       at.Topic,
		Partition:   at.Partition,
		Offset:      at.Offset,
		Data:        data,
	}, nil
}

// rollback ends a transaction that was not committed. After Commit it is a
// no-op (sql.ErrTxDone); any other failure leaves nothing to undo, as SQLite
// discards an unfinished transaction with its connection.
func rollback(tx *sql.Tx) { _ = tx.Rollback() }

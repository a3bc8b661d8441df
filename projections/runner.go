package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
	// Type is the wire name of Data: the current version of the event,
	// e.g. "orders.order-placed.v2", also when an older version was read
	// and upcast (see events.Upcast).
	Type string
	// WireType is the wire name the message carried (ce_type); it differs
	// from Type when the runner upcast an older version.
	WireType string
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

	// Data is the decoded payload, a pointer such as *events.OrderPlacedV2,
	// always of the current version of its type.
	Data events.Message

	// Metadata is every header the message carried: the CloudEvents
	// attributes above and extensions such as ce_requesthash (see package
	// cloudevents). It is the consumed message's own: read it, do not change it.
	Metadata message.Metadata
}

// Projection folds events into tables of its own, one set of tables per
// version (see Table): version N keeps serving while version N+1 is built
// beside it from the log, and is dropped once N+1 took over.
//
// The runner calls Setup when it prepares a version (and again at every start,
// so that Setup can bring tables created by older code up to date, e.g. add a
// column) and Apply once per event (or ApplyBatch for many, see
// BatchApplier), each inside a transaction it owns. Apply calls of one
// version never overlap (SQLite serialises writers); the query
// methods of a read model may run concurrently with them, and read the active
// version with Read.
type Projection interface {
	// Name is stable and unique among projections: a lower-case letter,
	// then lower-case letters and digits, e.g. "orders".
	Name() string
	// Topics lists the topics the projection consumes.
	Topics() []string
	// Setup creates the tables of version tx.Version() if they do not
	// exist, named with tx.Table.
	Setup(ctx context.Context, tx *Tx) error
	// Apply folds one event into the tables of version tx.Version(). An
	// error rolls back the read-model change and the position alike; the
	// message is delivered again. Whether the event is replayed (a rebuild)
	// is in ctx: cloudevents.IsReplaying.
	Apply(ctx context.Context, tx *Tx, e Event) error
}

// CommandConsumer is implemented by projections that want commands as well as
// events passed to Apply (projections/commands keeps the command log). The
// runner skips commands for every other projection.
type CommandConsumer interface {
	WantsCommands() bool
}

// BatchApplier is implemented by projections that can apply many events in
// fewer statements than Apply takes one by one: several events of one key
// folded into one row write, rows written many per statement (Tx.ExecRows).
// A statement costs SQLite and the driver about as much as the row it
// writes, so this is what makes a rebuild fast (docs/benchmarks.md, Replay).
//
// The runner then calls ApplyBatch instead of Apply, in the transaction of a
// batch of messages (HandleBatch; Handle passes one event), with the events
// it is to apply, in log order: redeliveries, events applied before, types
// the projection does not take and malformed events are left out, and every
// event is already recorded as applied (its outbox sequence or its id). The
// effect must be exactly that of Apply called for each event in turn. The
// events are either all replays or all not (cloudevents.IsReplaying in ctx);
// the slice is the runner's, valid until ApplyBatch returns. An error rolls
// back the whole transaction; the runner then applies the messages one per
// transaction, to keep those before the failing one.
type BatchApplier interface {
	ApplyBatch(ctx context.Context, tx *Tx, events []Event) error
}

// Carrier is implemented by projections that hold state the log does not
// have: rows written by other means than Apply (the command log's request
// hashes, which the gateway writes). When a rebuild prepares a new version,
// CarryOver copies that state from version from into tx.Version(), in the
// same transaction that creates the new tables.
type Carrier interface {
	CarryOver(ctx context.Context, tx *Tx, from int) error
}

// Position is how far a projection got in one partition: the offset of the
// last message it applied or skipped.
type Position struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// partitionKey names a topic partition.
type partitionKey struct {
	topic     string
	partition int32
}

// Runner applies consumed messages to one version of one projection, exactly
// once per event.
//
// Handle takes one message per transaction (a Watermill handler on the
// router); HandleBatch takes many in one transaction (a batch consumer, as
// rebuilds use). Both are safe for concurrent use, e.g. from consumers of
// different partitions: every transaction is immediate (write-locking), so
// the database must be opened with `_txlock=immediate` and a busy timeout,
// as platform/sqlite does. The runner does not own the database and never
// closes it; Close releases its prepared statements.
type Runner struct {
	db            *sql.DB
	p             Projection
	name          string
	version       int
	topics        []string
	wantsCommands bool
	logger        *slog.Logger
	stmts         *statements
	batch         BatchApplier // nil: Apply per event
	// nameArg and versionArg are name and version as statement arguments,
	// converted once.
	nameArg, versionArg any
	// writeMu serialises the runner's transactions, and those of the other
	// runners of its Manager.
	writeMu *sync.Mutex
	// committed is broadcast after every commit (Manager.Advanced); shared
	// by the versions of one projection in a Manager.
	committed *Signal
	// evs and args are buffers of the transaction holding writeMu: the
	// events handed to ApplyBatch, the arguments of the id inserts.
	evs  []Event
	args []any

	// replayUntil marks as replays the messages below these offsets.
	replayUntil map[partitionKey]int64
	// legacy: this version has applied ids in the legacy table.
	legacy bool
	// skipMalformed: HandleBatch skips malformed events instead of failing.
	skipMalformed bool
	// types are events.Types() by wire name, and upcast the names an
	// upcaster starts from: looked up once, not per message.
	types  map[string]events.Type
	upcast map[string]bool

	mu        sync.Mutex
	handled   int64 // messages handled since the runner was created
	skipped   int64 // malformed events skipped by HandleBatch
	failing   bool  // the latest attempt failed
	lastErr   string
	lastErrAt time.Time
}

// NewRunner sets up the runner's tables and registers the projection (version
// 1 is active for a projection seen for the first time), sets up the tables
// of the active version (p.Setup) in the same transaction, and returns a
// runner for the active version. A nil logger discards logs.
func NewRunner(ctx context.Context, db *sql.DB, p Projection, logger *slog.Logger) (*Runner, error) {
	if err := checkProjection(db, p); err != nil {
		return nil, fmt.Errorf("new projection runner: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("set up projection %s: begin: %w", p.Name(), err)
	}
	defer rollback(tx)
	if err := setupCatalog(ctx, tx); err != nil {
		return nil, fmt.Errorf("set up projection %s: %w", p.Name(), err)
	}
	active, _, err := register(ctx, tx, p.Name())
	if err != nil {
		return nil, err
	}
	if err := setupVersion(ctx, tx, p, active); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("set up projection %s: commit: %w", p.Name(), err)
	}
	return openRunner(ctx, db, p, active, runnerOptions{logger: logger})
}

// newRunnerShared is NewRunner for a Manager: its runners share writeMu,
// and the versions of one projection share committed.
func newRunnerShared(ctx context.Context, db *sql.DB, p Projection, logger *slog.Logger, writeMu *sync.Mutex, committed *Signal) (*Runner, error) {
	r, err := NewRunner(ctx, db, p, logger)
	if err != nil {
		return nil, err
	}
	r.writeMu, r.committed = writeMu, committed
	return r, nil
}

func checkProjection(db *sql.DB, p Projection) error {
	if db == nil || p == nil {
		return errors.New("a database and a projection are required")
	}
	if !validName(p.Name()) {
		return fmt.Errorf("projection name %q: want a lower-case letter, then up to 30 lower-case letters and digits", p.Name())
	}
	if len(p.Topics()) == 0 {
		return fmt.Errorf("projection %s: consumes no topics", p.Name())
	}
	return nil
}

// runnerOptions tune a runner beyond the defaults.
type runnerOptions struct {
	logger        *slog.Logger
	writeMu       *sync.Mutex // nil: a mutex of its own
	committed     *Signal     // nil: a signal of its own
	replayUntil   map[partitionKey]int64
	skipMalformed bool
}

// openRunner returns a runner for a version whose tables exist.
func openRunner(ctx context.Context, db *sql.DB, p Projection, version int, o runnerOptions) (*Runner, error) {
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		db:            db,
		p:             p,
		name:          p.Name(),
		version:       version,
		topics:        append([]string(nil), p.Topics()...),
		logger:        logger.With("projection", p.Name(), "version", version),
		stmts:         newStatements(db),
		replayUntil:   o.replayUntil,
		skipMalformed: o.skipMalformed,
		writeMu:       o.writeMu,
		committed:     o.committed,
	}
	if r.committed == nil {
		r.committed = &Signal{}
	}
	if r.writeMu == nil {
		r.writeMu = &sync.Mutex{}
	}
	if c, ok := p.(CommandConsumer); ok {
		r.wantsCommands = c.WantsCommands()
	}
	if b, ok := p.(BatchApplier); ok {
		r.batch = b
	}
	r.nameArg, r.versionArg = r.name, int64(version)
	r.types = map[string]events.Type{}
	for _, t := range events.Types() {
		r.types[t.Name] = t
	}
	r.upcast = map[string]bool{}
	for _, u := range events.Upcasters() {
		r.upcast[u.From] = true
	}
	legacy, err := tableExists(ctx, db, legacyAppliedTable)
	if err != nil {
		return nil, fmt.Errorf("open projection %s v%d: %w", r.name, version, err)
	}
	if legacy {
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+legacyAppliedTable+` WHERE projection = ? AND version = ?)`,
			r.name, version).Scan(&r.legacy); err != nil {
			return nil, fmt.Errorf("open projection %s v%d: read legacy applied ids: %w", r.name, version, err)
		}
	}
	return r, nil
}

// Close releases the runner's prepared statements. Handle and HandleBatch
// must not be called after.
func (r *Runner) Close() error { return r.stmts.close() }

// Name is the projection's name.
func (r *Runner) Name() string { return r.name }

// Version is the version of the projection the runner writes.
func (r *Runner) Version() int { return r.version }

// Topics are the topics the projection consumes.
func (r *Runner) Topics() []string { return append([]string(nil), r.topics...) }

// Group is the stem of the consumer groups of this version:
// "projection.<name>.v<version>".
func (r *Runner) Group() string { return GroupStem(r.name, r.version) }

// GroupFor is the consumer group this version consumes topic in:
// "projection.<name>.v<version>.<topic>". Names are derived, never chosen.
func (r *Runner) GroupFor(topic string) string { return GroupFor(r.name, r.version, topic) }

// GroupStem is the stem of the consumer group names of one version of a
// projection: "projection.<name>.v<version>".
func GroupStem(name string, version int) string {
	return fmt.Sprintf("projection.%s.v%d", name, version)
}

// GroupFor is the consumer group version version of projection name consumes
// topic in: "projection.<name>.v<version>.<topic>".
func GroupFor(name string, version int, topic string) string {
	return GroupStem(name, version) + "." + topic
}

// Handle applies one consumed message, in one transaction with its position:
//   - an offset at or below the stored position of its partition is a
//     redelivery: nothing happens;
//   - an event applied before (an outbox re-publish at a new offset: its
//     outbox sequence is not above the highest applied from that outbox in
//     that partition, or, for an event without one, its id is stored), a
//     type this build does not know (forward compatibility) and a command the
//     projection did not ask for are skipped, but the position advances;
//   - otherwise the payload is decoded, upcast to the current version of its
//     type (events.Upcast) and applied, and the position and the outbox
//     sequence (or the event id) are stored.
//
// The message must carry the x-kafka-topic, x-kafka-partition and
// x-kafka-offset metadata. A known type that does not decode returns an error
// wrapping [ErrMalformedEvent]. The message's context bounds the transaction.
// Handle is a Watermill NoPublishHandlerFunc.
func (r *Runner) Handle(msg *message.Message) error {
	ctx := msg.Context()
	_, err := r.applyInTx(ctx, []*message.Message{msg}, false)
	r.note(ctx, 1, err)
	if err != nil {
		return fmt.Errorf("projection %s: handle message %s: %w", r.name, msg.UUID, err)
	}
	return nil
}

// HandleBatch applies consecutive messages in one transaction, with the same
// rules as Handle, and stores one position per partition. When the
// transaction fails, it applies the messages one per transaction instead, so
// that those before the failing one are kept, and returns the failing one's
// error. A runner made for a rebuild skips malformed events (the live
// version's consumer sent them to the poison queue when it met them), logging
// and counting them, instead of failing.
func (r *Runner) HandleBatch(ctx context.Context, msgs []*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	n, err := r.applyInTx(ctx, msgs, r.skipMalformed)
	if err != nil && len(msgs) > 1 && ctx.Err() == nil {
		// Find the failing message, keeping the ones before it.
		n = 0
		for _, msg := range msgs {
			if _, err = r.applyInTx(ctx, []*message.Message{msg}, r.skipMalformed); err != nil {
				break
			}
			n++
		}
	}
	r.note(ctx, n, err)
	if err != nil {
		return fmt.Errorf("projection %s v%d: %w", r.name, r.version, err)
	}
	return nil
}

// note records the outcome of handling n messages for Status.
func (r *Runner) note(ctx context.Context, n int, err error) {
	if n > 0 {
		// Something was committed (or, for Handle, tried: a spurious
		// wake-up only makes a waiter look again): wake who waits for it.
		r.committed.Broadcast()
		if o, ok := r.p.(CommitObserver); ok {
			o.Committed()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled += int64(n)
	if err == nil {
		r.failing = false
		return
	}
	if ctx.Err() != nil {
		return // cancelled, not failed
	}
	r.failing = true
	r.lastErr = err.Error()
	r.lastErrAt = time.Now().UTC()
}

// health is what the runner knows of its own state.
type health struct {
	handled, skipped int64
	failing          bool
	lastErr          string
	lastErrAt        time.Time
}

func (r *Runner) health() health {
	r.mu.Lock()
	defer r.mu.Unlock()
	return health{handled: r.handled, skipped: r.skipped, failing: r.failing, lastErr: r.lastErr, lastErrAt: r.lastErrAt}
}

// prepared is one message made ready for a transaction: where it was read,
// and the event to apply (nil when the message is skipped for what it is, or
// failed to decode, see err).
type prepared struct {
	msg  *message.Message
	at   Position
	e    *Event // &ev, or nil
	ev   Event
	skip string // why it is skipped without being applied
	err  error  // a malformed message
	// outbox and seq are the event's cloudevents.OutboxID and Sequence;
	// seq is 0 when it carries none (or none that reads as a number
	// above 0): its id then tells whether it was applied before.
	outbox string
	seq    int64
	// dup: the event was applied before (set inside the transaction).
	dup bool
}

// sequenceKey names the events of one outbox in one partition.
type sequenceKey struct {
	topic     string
	partition int32
	outbox    string
}

// prepare reads positions and decodes payloads before the transaction, so
// that the decoding of one partition's batch overlaps the transaction of
// another's.
func (r *Runner) prepare(msgs []*message.Message) ([]prepared, error) {
	out := make([]prepared, len(msgs)) // one allocation for the batch's events
	for i, msg := range msgs {
		at, err := positionOf(msg)
		if err != nil {
			return nil, fmt.Errorf("message %s: %w", msg.UUID, err)
		}
		p := &out[i]
		p.msg, p.at = msg, at
		ceType := msg.Metadata.Get(cloudevents.Type)
		typ, known := r.types[ceType]
		switch {
		case msg.UUID == "":
			p.err = fmt.Errorf("%w: %s has no message id", ErrMalformedEvent, ceType)
		case !known:
			p.skip = "unknown type"
		case typ.Kind == events.KindCommand && !r.wantsCommands:
			p.skip = "command"
		default:
			if p.ev, p.err = decode(msg, typ, at, r.upcast[ceType]); p.err == nil {
				p.e = &p.ev
				p.outbox, p.seq = sequenceOf(msg)
			}
		}
	}
	return out, nil
}

// applyInTx applies msgs in one transaction and commits. It returns how many
// messages it handled (all of them, or 0 on error). Transactions of the
// runners of one Manager take turns on a mutex rather than on SQLite's busy
// timeout, which polls.
//
// Within the transaction it sorts the messages out first (redeliveries,
// skipped types, malformed events), then leaves out the events applied
// before (see dedupe), applies the rest in log order, and stores one
// position per partition and one sequence per outbox and partition: fewer,
// larger statements than one message after the other, with the same
// outcome.
func (r *Runner) applyInTx(ctx context.Context, msgs []*message.Message, skipMalformed bool) (int, error) {
	items, err := r.prepare(msgs)
	if err != nil {
		return 0, err
	}
	err = r.write(ctx, items, skipMalformed, true)
	if errors.Is(err, errAppliedBefore) {
		// An event of the batch was applied before (or is in it twice):
		// the rare case, in which each id is recorded on its own.
		err = r.write(ctx, items, skipMalformed, false)
	}
	if err != nil {
		return 0, err
	}
	return len(msgs), nil
}

// write is applyInTx's transaction. With manyIDs, the ids of the events to
// apply are recorded many per statement, and when one of them was recorded
// before, write rolls back and returns errAppliedBefore (see recordIDs).
func (r *Runner) write(ctx context.Context, items []prepared, skipMalformed, manyIDs bool) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	sqlTx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer rollback(sqlTx)
	tx := newTx(sqlTx, r.name, r.version, r.stmts)

	stored := map[partitionKey]int64{}  // positions read or advanced in this transaction
	changed := map[partitionKey]int64{} // positions to write
	apply := make([]*prepared, 0, len(items))
	malformed := 0 // skipped, counted once committed
	for i := range items {
		it := &items[i]
		at := it.at
		k := partitionKey{at.Topic, at.Partition}
		pos, known := stored[k]
		if !known {
			var p sql.NullInt64
			if err := tx.QueryRowContext(ctx,
				`SELECT "offset" FROM projection_positions WHERE projection = ? AND version = ? AND topic = ? AND "partition" = ?`,
				r.nameArg, r.versionArg, at.Topic, at.Partition).Scan(&p); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read position of %s/%d: %w", at.Topic, at.Partition, err)
			}
			pos, known = p.Int64, p.Valid
			if known {
				stored[k] = pos
			}
		}
		if known && at.Offset <= pos {
			r.skippedMsg(ctx, it.msg, at, "redelivered")
			continue
		}
		switch {
		case it.err != nil && !skipMalformed:
			return fmt.Errorf("message %s at %s/%d@%d: %w", it.msg.UUID, at.Topic, at.Partition, at.Offset, it.err)
		case it.err != nil:
			malformed++
			r.logger.WarnContext(ctx, "projection skipped a malformed event", "topic", at.Topic, "partition", at.Partition,
				"offset", at.Offset, "message_id", it.msg.UUID, "error", it.err)
		case it.e == nil:
			r.skippedMsg(ctx, it.msg, at, it.skip)
		default:
			apply = append(apply, it)
		}
		stored[k] = at.Offset
		changed[k] = at.Offset
	}
	apply, seqs, err := r.dedupe(ctx, tx, apply, manyIDs)
	if err != nil {
		return err
	}
	if err := r.applyEvents(ctx, tx, apply); err != nil {
		return err
	}
	for k, seq := range seqs {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_sequences (projection, version, topic, "partition", outbox, seq) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (projection, version, topic, "partition", outbox) DO UPDATE SET seq = excluded.seq`,
			r.nameArg, r.versionArg, k.topic, k.partition, k.outbox, seq); err != nil {
			return fmt.Errorf("store sequence of outbox %s in %s/%d: %w", k.outbox, k.topic, k.partition, err)
		}
	}
	for k, offset := range changed {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO projection_positions (projection, version, topic, "partition", "offset") VALUES (?, ?, ?, ?, ?)
ON CONFLICT (projection, version, topic, "partition") DO UPDATE SET "offset" = excluded."offset"`,
			r.nameArg, r.versionArg, k.topic, k.partition, offset); err != nil {
			return fmt.Errorf("store position of %s/%d: %w", k.topic, k.partition, err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if malformed > 0 {
		r.mu.Lock()
		r.skipped += int64(malformed)
		r.mu.Unlock()
	}
	return nil
}

// dedupe leaves out of items, which are about to be applied, the events
// that were applied before, and returns the rest in order, with the highest
// sequence per outbox and partition to store. An event with an outbox
// sequence was applied before when its sequence is at or below the highest
// applied from its outbox in its partition (ADR 0007): one read per outbox
// and partition of the batch, and no row per event. The others are told by
// their ids (recordIDs, which also records them).
func (r *Runner) dedupe(ctx context.Context, tx *Tx, items []*prepared, manyIDs bool) ([]*prepared, map[sequenceKey]int64, error) {
	var (
		highest    map[sequenceKey]int64 // read or advanced in this transaction
		changed    map[sequenceKey]int64 // to store
		unnumbered []*prepared
	)
	for _, it := range items {
		it.dup = false
		if it.seq == 0 {
			unnumbered = append(unnumbered, it)
			continue
		}
		if highest == nil {
			highest, changed = map[sequenceKey]int64{}, map[sequenceKey]int64{}
		}
		k := sequenceKey{it.at.Topic, it.at.Partition, it.outbox}
		top, known := highest[k]
		if !known {
			if err := tx.QueryRowContext(ctx,
				`SELECT seq FROM projection_sequences WHERE projection = ? AND version = ? AND topic = ? AND "partition" = ? AND outbox = ?`,
				r.nameArg, r.versionArg, k.topic, k.partition, k.outbox).Scan(&top); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, nil, fmt.Errorf("read sequence of outbox %s in %s/%d: %w", k.outbox, k.topic, k.partition, err)
			}
		}
		if it.seq <= top {
			it.dup = true
			highest[k] = top
			r.skippedMsg(ctx, it.msg, it.at, "event applied before")
			continue
		}
		highest[k], changed[k] = it.seq, it.seq
	}
	if len(unnumbered) > 0 {
		fresh, err := r.recordIDs(ctx, tx, unnumbered, manyIDs)
		if err != nil {
			return nil, nil, err
		}
		// fresh is unnumbered less the events applied before, in order.
		for _, it := range unnumbered {
			if len(fresh) > 0 && fresh[0] == it {
				fresh = fresh[1:]
				continue
			}
			it.dup = true
		}
	}
	kept := items[:0]
	for _, it := range items {
		if !it.dup {
			kept = append(kept, it)
		}
	}
	return kept, changed, nil
}

// sequenceOf reads the outbox sequence of msg: its outbox's id and its
// number, or ("", 0) when it carries no usable pair (a producer other than
// millrace's relay, or an outbox row written before numbering).
func sequenceOf(msg *message.Message) (outbox string, seq int64) {
	outbox = msg.Metadata.Get(cloudevents.OutboxID)
	v := msg.Metadata.Get(cloudevents.Sequence)
	if outbox == "" || v == "" {
		return "", 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return "", 0
	}
	return outbox, n
}

// insertIDHead makes the statements that record applied event ids, one row
// or many (Tx.ExecRows). OR IGNORE rather than ON CONFLICT DO NOTHING: the
// same for these rows, whose values are never NULL (an event without an id
// is malformed), but a statement that cannot fail halfway needs no statement
// journal, a copy of every page it changes.
const insertIDHead = `INSERT OR IGNORE INTO projection_event_ids (projection, version, at, event_id) VALUES`

// errAppliedBefore is returned by recordIDs, recording many ids at once,
// when one of them was recorded before.
var errAppliedBefore = errors.New("an event of the batch was applied before")

// recordIDs records the event ids of items, which are about to be applied,
// and returns those that were not applied before, in order: the rest are
// events an outbox relay published again (the same ce_id and ce_time at a
// new offset), or the same event twice in items.
//
// With many, the ids go into a few multi-row inserts. When they stored as
// many rows as there are ids, none was applied before: what a rebuild meets
// but for the rare re-published event. When they stored fewer, recordIDs
// returns errAppliedBefore, and the caller rolls the transaction back and
// goes again without many: each id then has an insert of its own, which
// tells whether it was new. Either way the answer is exact: the primary key
// of projection_event_ids decides, not a guess. (A savepoint around the
// multi-row inserts would spare the second pass, but costs more: SQLite
// copies every page the inserts change to a sub-journal, a temporary file
// once a batch's pages pass 64 KiB.)
func (r *Runner) recordIDs(ctx context.Context, tx *Tx, items []*prepared, many bool) ([]*prepared, error) {
	if len(items) == 0 {
		return items, nil
	}
	if many && len(items) > 1 {
		args := r.args[:0]
		for _, it := range items {
			args = append(args, r.nameArg, r.versionArg, nanos(it.e.Time), it.e.ID)
		}
		n, err := tx.ExecRows(ctx, insertIDHead, 4, "", args)
		clear(args)
		r.args = args[:0]
		if err != nil {
			return nil, fmt.Errorf("record applied ids: %w", err)
		}
		if n != int64(len(items)) {
			return nil, errAppliedBefore
		}
		return r.notLegacy(ctx, tx, items)
	}
	fresh := make([]*prepared, 0, len(items))
	for _, it := range items {
		res, err := tx.ExecContext(ctx, insertIDHead+` (?, ?, ?, ?)`, r.nameArg, r.versionArg, nanos(it.e.Time), it.e.ID)
		if err != nil {
			return nil, fmt.Errorf("record applied id: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("record applied id: %w", err)
		}
		if n == 0 {
			r.skippedMsg(ctx, it.msg, it.at, "event applied before")
			continue
		}
		fresh = append(fresh, it)
	}
	return r.notLegacy(ctx, tx, fresh)
}

// notLegacy leaves out of items the events whose ids the legacy table holds,
// for the versions that have one.
func (r *Runner) notLegacy(ctx context.Context, tx *Tx, items []*prepared) ([]*prepared, error) {
	if !r.legacy {
		return items, nil
	}
	kept := items[:0]
	for _, it := range items {
		var before bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+legacyAppliedTable+` WHERE projection = ? AND version = ? AND event_id = ?)`,
			r.nameArg, r.versionArg, it.e.ID).Scan(&before); err != nil {
			return nil, fmt.Errorf("read legacy applied ids: %w", err)
		}
		if before {
			r.skippedMsg(ctx, it.msg, it.at, "event applied before")
			continue
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// applyEvents applies the events of items, in order: through ApplyBatch,
// one call per run of replays or of live events, when the projection
// implements BatchApplier, else through Apply, one by one.
func (r *Runner) applyEvents(ctx context.Context, tx *Tx, items []*prepared) error {
	if r.batch == nil {
		for _, it := range items {
			if err := r.p.Apply(r.eventCtx(ctx, it.e), tx, *it.e); err != nil {
				return &applyError{typ: it.e.Type, err: err}
			}
		}
		return nil
	}
	evs := r.evs[:0]
	defer func() {
		clear(evs[:cap(evs)]) // keep no event alive beyond the transaction
		r.evs = evs[:0]
	}()
	for len(items) > 0 {
		replay := r.replaying(items[0].e)
		evs = evs[:0]
		n := 0
		for n < len(items) && r.replaying(items[n].e) == replay {
			evs = append(evs, *items[n].e)
			n++
		}
		bctx := ctx
		if replay {
			bctx = cloudevents.WithReplay(ctx)
		}
		if err := r.batch.ApplyBatch(bctx, tx, evs); err != nil {
			typ := evs[0].Type
			if len(evs) > 1 {
				typ = fmt.Sprintf("%d events from %s", len(evs), evs[0].Type)
			}
			return &applyError{typ: typ, err: err}
		}
		items = items[n:]
	}
	return nil
}

// replaying reports whether e is below the offset up to which the runner
// marks replays.
func (r *Runner) replaying(e *Event) bool {
	until, ok := r.replayUntil[partitionKey{e.Topic, e.Partition}]
	return ok && e.Offset < until
}

// eventCtx is ctx, marked as a replay when e is one.
func (r *Runner) eventCtx(ctx context.Context, e *Event) context.Context {
	if r.replaying(e) {
		return cloudevents.WithReplay(ctx)
	}
	return ctx
}

// applyError is a failure of Projection.Apply: it may have written before
// failing, so its transaction is never committed, whatever the error wraps.
type applyError struct {
	typ string
	err error
}

func (e *applyError) Error() string { return fmt.Sprintf("apply %s: %v", e.typ, e.err) }
func (e *applyError) Unwrap() error { return e.err }

// skippedMsg logs, at debug level, a message the runner did not apply.
func (r *Runner) skippedMsg(ctx context.Context, msg *message.Message, at Position, why string) {
	if !r.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	r.logger.DebugContext(ctx, "projection skipped message", "reason", why,
		"topic", at.Topic, "partition", at.Partition, "offset", at.Offset,
		"message_id", msg.UUID, "type", msg.Metadata.Get(cloudevents.Type))
}

// Positions reports, per topic and partition, the offset of the last message
// this version handled, ordered by topic and partition.
func (r *Runner) Positions(ctx context.Context) ([]Position, error) {
	return positionsOf(ctx, r.db, r.name, r.version)
}

// Resume returns, for the given partitions of topic, the next offset to read:
// one past the stored position. Partitions without a position are left out.
// It is what a batch consumer asks when partitions are assigned to it, so that
// it starts where the read model is, not where the consumer group committed.
func (r *Runner) Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	positions, err := r.Positions(ctx)
	if err != nil {
		return nil, err
	}
	want := map[int32]bool{}
	for _, p := range partitions {
		want[p] = true
	}
	next := map[int32]int64{}
	for _, p := range positions {
		if p.Topic == topic && want[p.Partition] {
			next[p.Partition] = p.Offset + 1
		}
	}
	return next, nil
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

// nanos is t in Unix nanoseconds; 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// rollback ends a transaction that was not committed. After Commit it is a
// no-op (sql.ErrTxDone); any other failure leaves nothing to undo, as SQLite
// discards an unfinished transaction with its connection.
func rollback(tx *sql.Tx) { _ = tx.Rollback() }

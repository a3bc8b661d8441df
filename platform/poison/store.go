package poison

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/router"
)

// Headers of a message on the poison topic (see the package documentation).
const (
	HeaderEntry        = "x-poison-entry"
	HeaderHandler      = "x-poison-handler"
	HeaderTopic        = "x-poison-topic"
	HeaderPartition    = "x-poison-partition"
	HeaderOffset       = "x-poison-offset"
	HeaderKey          = "x-poison-key"
	HeaderCause        = "x-poison-cause"
	HeaderReason       = "x-poison-reason"
	HeaderAttempts     = "x-poison-attempts"
	HeaderFirstErrorAt = "x-poison-first-error-at"
	HeaderLastErrorAt  = "x-poison-last-error-at"
)

// Marker headers of a requeued message.
const (
	HeaderRequeueHandler    = "x-poison-requeue-handler"
	HeaderRequeueEntry      = "x-poison-requeue-entry"
	HeaderRequeueGeneration = "x-poison-requeue-generation"
)

// maxReasonHeader bounds the reason header; the store keeps it whole.
const maxReasonHeader = 8 << 10

// Config configures a Store.
type Config struct {
	// Publisher publishes to the poison topic and requeues messages to their
	// original topics. Required; the Store does not close it.
	Publisher message.Publisher
	// Topic is the poison topic; router.DefaultPoisonTopic when empty.
	Topic string
	// Logger receives what goes wrong in the background of a requeue.
	// Nothing is logged when nil.
	Logger *slog.Logger
	// Now stamps entries; time.Now when nil.
	Now func() time.Time
}

// Store is the poison queue, kept in SQLite. It implements
// router.PoisonQueue and the operations of the admin API. It is safe for
// concurrent use. It does not own the database or the publisher; Close
// releases what it prepared in the database, before the database is closed.
type Store struct {
	db     *sql.DB
	pub    message.Publisher
	topic  string
	logger *slog.Logger
	now    func() time.Time
	// head finds the head of a key's sequence, when the index says the key
	// is blocked or cannot tell: prepared once, since preparing costs as
	// much as running it.
	head *sql.Stmt
	// blocked answers the common case, a key with no open entry, without
	// a query (index.go).
	blocked *blockedIndex
}

var _ router.PoisonQueue = (*Store)(nil)

const setupSQL = `
CREATE TABLE IF NOT EXISTS poison_entries (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	handler        TEXT    NOT NULL,
	message_id     TEXT    NOT NULL,
	seq_key        TEXT    NOT NULL,
	topic          TEXT    NOT NULL,
	"partition"    INTEGER NOT NULL,
	"offset"       INTEGER NOT NULL,
	type           TEXT    NOT NULL,
	status         TEXT    NOT NULL,
	cause          TEXT    NOT NULL DEFAULT '',
	reason         TEXT    NOT NULL DEFAULT '',
	attempts       INTEGER NOT NULL DEFAULT 0,
	first_error_at TEXT    NOT NULL DEFAULT '',
	last_error_at  TEXT    NOT NULL DEFAULT '',
	blocked_by     INTEGER NOT NULL DEFAULT 0,
	requeues       INTEGER NOT NULL DEFAULT 0,
	requeue_mode   TEXT    NOT NULL DEFAULT '',
	requeued_at    TEXT    NOT NULL DEFAULT '',
	resolved_at    TEXT    NOT NULL DEFAULT '',
	drop_reason    TEXT    NOT NULL DEFAULT '',
	published      INTEGER NOT NULL DEFAULT 0,
	created_at     TEXT    NOT NULL,
	updated_at     TEXT    NOT NULL,
	metadata       TEXT    NOT NULL,
	payload        BLOB,
	UNIQUE (handler, message_id)
);
CREATE INDEX IF NOT EXISTS poison_entries_open
	ON poison_entries (handler, seq_key, id) WHERE status IN ('poisoned', 'parked', 'requeued');
CREATE INDEX IF NOT EXISTS poison_entries_topic ON poison_entries (topic, id);
CREATE TABLE IF NOT EXISTS poison_history (
	entry_id INTEGER NOT NULL REFERENCES poison_entries (id),
	at       TEXT    NOT NULL,
	event    TEXT    NOT NULL,
	detail   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS poison_history_entry ON poison_history (entry_id);`

// openStatuses is the SQL list of open statuses.
const openStatuses = `('poisoned', 'parked', 'requeued')`

// New creates the store's tables in db (opened with platform/sqlite) if
// needed and returns the store.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Store, error) {
	if db == nil || cfg.Publisher == nil {
		return nil, errors.New("create poison store: a database and a publisher are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = router.DefaultPoisonTopic
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if _, err := db.ExecContext(ctx, setupSQL); err != nil {
		return nil, fmt.Errorf("create poison tables: %w", err)
	}
	head, err := db.PrepareContext(ctx, `SELECT id FROM poison_entries
		WHERE handler = ? AND seq_key = ? AND status IN `+openStatuses+` ORDER BY id LIMIT 1`)
	if err != nil {
		return nil, fmt.Errorf("prepare poison queue look-up: %w", err)
	}
	return &Store{db: db, pub: cfg.Publisher, topic: cfg.Topic, logger: cfg.Logger, now: cfg.Now, head: head,
		blocked: newBlockedIndex(db)}, nil
}

// Close releases the statement the store prepared and the connection its
// index of blocked keys holds. Call it before closing the database; the
// store is unusable afterwards.
func (s *Store) Close() error {
	if err := errors.Join(s.head.Close(), s.blocked.close()); err != nil {
		return fmt.Errorf("close poison store: %w", err)
	}
	return nil
}

// Admit implements router.PoisonQueue: it parks a message whose key is
// blocked for handler, and sorts requeued messages as the package
// documentation describes.
func (s *Store) Admit(ctx context.Context, handler string, msg *message.Message) (router.Admission, error) {
	if rq := msg.Metadata.Get(HeaderRequeueHandler); rq != "" {
		if rq != handler {
			return router.Skip, nil
		}
		if id, gen, ok := requeueMarker(msg); ok {
			return s.admitRequeued(ctx, handler, id, gen)
		}
		s.logger.WarnContext(ctx, "requeue marker unreadable; handling the message as a new one",
			"handler", handler, "message_id", msg.UUID)
	}
	key := msg.Metadata.Get(cloudevents.PartitionKey)
	if key == "" {
		return router.Handle, nil
	}
	if blocked, known := s.blocked.lookup(ctx, handler, key); known && !blocked {
		return router.Handle, nil
	}
	var head int64
	err := s.head.QueryRowContext(ctx, handler, key).Scan(&head)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return router.Handle, nil
	case err != nil:
		return 0, fmt.Errorf("look up poison sequence of key %s: %w", key, err)
	}
	return s.park(ctx, handler, key, head, msg)
}

// park stores msg behind head, unless the store has it already (a
// redelivery): then there is nothing to do, except publishing its poisoning
// if that failed before.
func (s *Store) park(ctx context.Context, handler, key string, head int64, msg *message.Message) (router.Admission, error) {
	var republish int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var id int64
		var status Status
		var published bool
		err := tx.QueryRowContext(ctx, `SELECT id, status, published FROM poison_entries WHERE handler = ? AND message_id = ?`,
			handler, msg.UUID).Scan(&id, &status, &published)
		switch {
		case err == nil:
			if status == StatusPoisoned && !published {
				republish = id
			}
			return errAlreadyStored
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up message %s: %w", msg.UUID, err)
		}
		e := s.entryFrom(ctx, handler, msg)
		e.Status = StatusParked
		e.BlockedBy = head
		e.Reason = fmt.Sprintf("parked behind entry %d, the head of key %s", head, key)
		id, err = insertEntry(ctx, tx, e)
		if err != nil {
			return err
		}
		return addHistory(ctx, tx, id, stamp(e.CreatedAt), "parked", e.Reason)
	})
	switch {
	case errors.Is(err, errAlreadyStored):
		if republish != 0 {
			if err := s.publishPoison(ctx, republish); err != nil {
				return 0, err
			}
		}
		return router.Skip, nil
	case err != nil:
		return 0, fmt.Errorf("park message %s of key %s: %w", msg.UUID, key, err)
	}
	return router.Park, nil
}

// errAlreadyStored ends a park transaction that found the message stored.
var errAlreadyStored = errors.New("message already stored")

// admitRequeued decides about a requeued message that names handler.
func (s *Store) admitRequeued(ctx context.Context, handler string, id int64, gen int) (router.Admission, error) {
	adm := router.Skip
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var key, h string
		var status Status
		var requeues int
		err := tx.QueryRowContext(ctx, `SELECT handler, seq_key, status, requeues FROM poison_entries WHERE id = ?`, id).
			Scan(&h, &key, &status, &requeues)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		if h != handler || status != StatusRequeued || requeues != gen {
			return nil // stale: dropped, handled, or requeued again since
		}
		if key != "" {
			var ahead int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM poison_entries
				WHERE handler = ? AND seq_key = ? AND status IN `+openStatuses+` AND id < ? ORDER BY id LIMIT 1`,
				handler, key, id).Scan(&ahead)
			if err == nil {
				now := s.stamp()
				reason := fmt.Sprintf("requeued while entry %d of key %s is still open; parked again behind it", ahead, key)
				if _, err := tx.ExecContext(ctx, `UPDATE poison_entries
					SET status = 'parked', requeue_mode = '', reason = ?, updated_at = ? WHERE id = ?`,
					reason, now, id); err != nil {
					return err
				}
				adm = router.Park
				return addHistory(ctx, tx, id, now, "parked", reason)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		adm = router.Handle
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("admit requeued entry %d: %w", id, err)
	}
	return adm, nil
}

// Poison implements router.PoisonQueue: it records msg as poisoned for
// handler (a new entry, or the message's entry again when it failed after a
// requeue) and publishes it to the poison topic. When publishing fails the
// error is returned and the message is delivered again, which publishes the
// recorded poisoning then.
func (s *Store) Poison(ctx context.Context, handler string, msg *message.Message, f router.Failure) error {
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT id FROM poison_entries WHERE handler = ? AND message_id = ?`,
			handler, msg.UUID).Scan(&id)
		now := s.stamp()
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, `UPDATE poison_entries SET
				status = 'poisoned', cause = ?, reason = ?, attempts = attempts + ?,
				first_error_at = CASE WHEN first_error_at = '' THEN ? ELSE first_error_at END,
				last_error_at = ?, requeue_mode = '', published = 0, updated_at = ?
				WHERE id = ?`,
				f.Cause, f.Reason, f.Attempts, stamp(f.FirstError), stamp(f.LastError), now, id); err != nil {
				return err
			}
			return addHistory(ctx, tx, id, now, "poisoned again", f.Cause+": "+firstLine(f.Reason))
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		e := s.entryFrom(ctx, handler, msg)
		e.Status = StatusPoisoned
		e.Cause, e.Reason, e.Attempts = f.Cause, f.Reason, f.Attempts
		e.FirstErrorAt, e.LastErrorAt = f.FirstError, f.LastError
		if id, err = insertEntry(ctx, tx, e); err != nil {
			return err
		}
		return addHistory(ctx, tx, id, now, "poisoned", f.Cause+": "+firstLine(f.Reason))
	})
	if err != nil {
		return fmt.Errorf("record poisoned message %s: %w", msg.UUID, err)
	}
	return s.publishPoison(ctx, id)
}

// publishPoison publishes entry id to the poison topic and notes that it did.
func (s *Store) publishPoison(ctx context.Context, id int64) error {
	e, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	msg := message.NewMessage(e.MessageID, e.Payload)
	maps.Copy(msg.Metadata, e.Metadata)
	reason := e.Reason
	if len(reason) > maxReasonHeader {
		reason = reason[:maxReasonHeader] + " …(truncated; the full reason is in the poison store)"
	}
	for k, v := range map[string]string{
		HeaderEntry:        strconv.FormatInt(e.ID, 10),
		HeaderHandler:      e.Handler,
		HeaderTopic:        e.Topic,
		HeaderPartition:    strconv.FormatInt(int64(e.Partition), 10),
		HeaderOffset:       strconv.FormatInt(e.Offset, 10),
		HeaderKey:          e.Key,
		HeaderCause:        e.Cause,
		HeaderReason:       reason,
		HeaderAttempts:     strconv.Itoa(e.Attempts),
		HeaderFirstErrorAt: stamp(e.FirstErrorAt),
		HeaderLastErrorAt:  stamp(e.LastErrorAt),
	} {
		msg.Metadata.Set(k, v)
	}
	msg.SetContext(ctx)
	if err := s.pub.Publish(s.topic, msg); err != nil {
		return fmt.Errorf("publish entry %d to %s: %w", id, s.topic, err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE poison_entries SET published = 1 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("note entry %d as published: %w", id, err)
	}
	return nil
}

// Handled implements router.PoisonQueue: a requeued message that its
// handler handled resolves its entry, and in sequence mode requeues the next
// open entry of its sequence. A failure to requeue the next entry is logged
// and leaves it at the head of its sequence, to be requeued again.
func (s *Store) Handled(ctx context.Context, handler string, msg *message.Message) error {
	if msg.Metadata.Get(HeaderRequeueHandler) != handler {
		return nil
	}
	id, gen, ok := requeueMarker(msg)
	if !ok {
		return nil
	}
	var next *requeued
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var key, mode string
		var status Status
		var requeues int
		err := tx.QueryRowContext(ctx, `SELECT seq_key, status, requeues, requeue_mode FROM poison_entries
			WHERE id = ? AND handler = ?`, id, handler).Scan(&key, &status, &requeues, &mode)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		if status != StatusRequeued || requeues != gen {
			return nil
		}
		now := s.stamp()
		if _, err := tx.ExecContext(ctx, `UPDATE poison_entries
			SET status = 'handled', resolved_at = ?, updated_at = ? WHERE id = ?`, now, now, id); err != nil {
			return err
		}
		if err := addHistory(ctx, tx, id, now, "handled", ""); err != nil {
			return err
		}
		if mode != ModeSequence || key == "" {
			return nil
		}
		var nid int64
		var nstatus Status
		err = tx.QueryRowContext(ctx, `SELECT id, status FROM poison_entries
			WHERE handler = ? AND seq_key = ? AND status IN `+openStatuses+` ORDER BY id LIMIT 1`,
			handler, key).Scan(&nid, &nstatus)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil // the sequence is empty: the key flows again
		case err != nil:
			return err
		}
		if nstatus == StatusRequeued {
			return nil // already on its way
		}
		next, err = markRequeued(ctx, tx, nid, nstatus, ModeSequence, now, fmt.Sprintf("next in the sequence of key %s after entry %d", key, id))
		return err
	})
	if err != nil {
		return fmt.Errorf("resolve requeued entry %d: %w", id, err)
	}
	if next != nil {
		if err := s.publishRequeue(ctx, next); err != nil {
			s.logger.ErrorContext(ctx, "requeue of the next entry in a sequence failed; requeue it again",
				"handler", handler, "entry", next.id, "error", err)
		}
	}
	return nil
}

// requeued is an entry marked requeued, to be published.
type requeued struct {
	id   int64
	gen  int
	prev Status
}

// markRequeued marks entry id (now in status prev) requeued in mode.
func markRequeued(ctx context.Context, tx *sql.Tx, id int64, prev Status, mode, now, why string) (*requeued, error) {
	var gen int
	if err := tx.QueryRowContext(ctx, `UPDATE poison_entries
		SET status = 'requeued', requeues = requeues + 1, requeue_mode = ?, requeued_at = ?, updated_at = ?
		WHERE id = ? RETURNING requeues`, mode, now, now, id).Scan(&gen); err != nil {
		return nil, fmt.Errorf("mark entry %d requeued: %w", id, err)
	}
	if err := addHistory(ctx, tx, id, now, "requeued", why); err != nil {
		return nil, err
	}
	return &requeued{id: id, gen: gen, prev: prev}, nil
}

// publishRequeue republishes a requeued entry to its original topic, with
// its original id and the requeue markers. When publishing fails, the entry
// goes back to the status it had.
func (s *Store) publishRequeue(ctx context.Context, r *requeued) error {
	e, err := s.Get(ctx, r.id)
	if err != nil {
		return err
	}
	msg := message.NewMessage(e.MessageID, e.Payload)
	maps.Copy(msg.Metadata, e.Metadata)
	msg.Metadata.Set(HeaderRequeueHandler, e.Handler)
	msg.Metadata.Set(HeaderRequeueEntry, strconv.FormatInt(e.ID, 10))
	msg.Metadata.Set(HeaderRequeueGeneration, strconv.Itoa(r.gen))
	msg.SetContext(ctx)
	perr := s.pub.Publish(e.Topic, msg)
	if perr == nil {
		return nil
	}
	perr = fmt.Errorf("publish entry %d to %s: %w", r.id, e.Topic, perr)
	rerr := s.inTx(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		now := s.stamp()
		res, err := tx.ExecContext(ctx, `UPDATE poison_entries SET status = ?, requeue_mode = '', updated_at = ?
			WHERE id = ? AND status = 'requeued' AND requeues = ?`, r.prev, now, r.id, r.gen)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return addHistory(ctx, tx, r.id, now, "requeue failed", perr.Error())
	})
	if rerr != nil {
		return errors.Join(perr, fmt.Errorf("restore entry %d to %s: %w", r.id, r.prev, rerr))
	}
	return perr
}

// entryFrom builds the entry of msg for handler: where it was consumed
// from, its key, type, metadata (without transport and marker headers) and
// payload.
func (s *Store) entryFrom(ctx context.Context, handler string, msg *message.Message) Entry {
	e := Entry{
		MessageID: msg.UUID,
		Handler:   handler,
		Topic:     msg.Metadata.Get(cloudevents.KafkaTopic),
		Partition: -1,
		Offset:    -1,
		Key:       msg.Metadata.Get(cloudevents.PartitionKey),
		Type:      msg.Metadata.Get(cloudevents.Type),
		Metadata:  make(map[string]string, len(msg.Metadata)),
		Payload:   msg.Payload,
	}
	if e.Topic == "" {
		e.Topic = message.SubscribeTopicFromCtx(ctx)
	}
	if p, err := strconv.ParseInt(msg.Metadata.Get(cloudevents.KafkaPartition), 10, 32); err == nil {
		e.Partition = int32(p)
	}
	if o, err := strconv.ParseInt(msg.Metadata.Get(cloudevents.KafkaOffset), 10, 64); err == nil {
		e.Offset = o
	}
	transport := cloudevents.TransportKeys()
	for k, v := range msg.Metadata {
		if strings.HasPrefix(k, "x-poison-") || slices.Contains(transport, k) {
			continue
		}
		e.Metadata[k] = v
	}
	e.CreatedAt = s.now().UTC()
	e.UpdatedAt = e.CreatedAt
	return e
}

func insertEntry(ctx context.Context, tx *sql.Tx, e Entry) (int64, error) {
	md, err := json.Marshal(e.Metadata)
	if err != nil {
		return 0, fmt.Errorf("encode metadata: %w", err)
	}
	var id int64
	err = tx.QueryRowContext(ctx, `INSERT INTO poison_entries
		(handler, message_id, seq_key, topic, "partition", "offset", type, status, cause, reason, attempts,
		 first_error_at, last_error_at, blocked_by, created_at, updated_at, metadata, payload)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		e.Handler, e.MessageID, e.Key, e.Topic, e.Partition, e.Offset, e.Type, e.Status, e.Cause, e.Reason, e.Attempts,
		stamp(e.FirstErrorAt), stamp(e.LastErrorAt), e.BlockedBy, stamp(e.CreatedAt), stamp(e.UpdatedAt), string(md), e.Payload,
	).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert entry for message %s: %w", e.MessageID, err)
	}
	return id, nil
}

func addHistory(ctx context.Context, tx *sql.Tx, id int64, at, event, detail string) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO poison_history (entry_id, at, event, detail) VALUES (?, ?, ?, ?)`,
		id, at, event, detail); err != nil {
		return fmt.Errorf("record history of entry %d: %w", id, err)
	}
	return nil
}

// inTx runs fn in a write transaction and commits it when fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error of fn is the one worth reporting
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// requeueMarker reads the entry id and generation of a requeued message.
func requeueMarker(msg *message.Message) (id int64, gen int, ok bool) {
	id, err1 := strconv.ParseInt(msg.Metadata.Get(HeaderRequeueEntry), 10, 64)
	gen, err2 := strconv.Atoi(msg.Metadata.Get(HeaderRequeueGeneration))
	return id, gen, err1 == nil && err2 == nil && id > 0 && gen > 0
}

func (s *Store) stamp() string { return stamp(s.now()) }

// stamp formats t for the store; the zero time is the empty string.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseStamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

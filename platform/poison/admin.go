package poison

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors of the admin operations, for errors.Is; the admin API maps them to
// HTTP statuses. The errors returned say what was wrong and what to do.
var (
	// ErrNotFound: no entry (or no open sequence) matches.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the entry's state does not allow the operation.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request itself is wrong.
	ErrInvalid = errors.New("invalid request")
)

// opError is an admin failure of one of the kinds above, worded for the
// user.
type opError struct {
	kind   error
	detail string
}

func (e *opError) Error() string { return e.detail }
func (e *opError) Unwrap() error { return e.kind }

func opErr(kind error, format string, args ...any) error {
	return &opError{kind: kind, detail: fmt.Sprintf(format, args...)}
}

// Filter selects entries to list. Empty fields match everything.
type Filter struct {
	Topic   string
	Handler string
	Key     string
	Status  Status
	// After lists entries with a greater id (paging); Limit caps how many
	// (100 when 0, at most 1000).
	After int64
	Limit int
}

// MaxListLimit is the most entries one List returns.
const MaxListLimit = 1000

// List returns the entries that match f, oldest first, without metadata,
// payload or history.
func (s *Store) List(ctx context.Context, f Filter) ([]Entry, error) {
	if f.Status != "" && !f.Status.valid() {
		return nil, opErr(ErrInvalid, "status %q: want one of %s", f.Status, statusList())
	}
	if f.Limit < 0 || f.Limit > MaxListLimit {
		return nil, opErr(ErrInvalid, "limit %d: want 1 to %d (0 for the default of 100)", f.Limit, MaxListLimit)
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	var where []string
	var args []any
	for _, c := range []struct {
		col string
		val string
	}{{"topic", f.Topic}, {"handler", f.Handler}, {"seq_key", f.Key}, {"status", string(f.Status)}} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	where = append(where, "id > ?")
	args = append(args, f.After, f.Limit)
	rows, err := s.db.QueryContext(ctx, `SELECT `+entryColumns+` FROM poison_entries
		WHERE `+strings.Join(where, " AND ")+` ORDER BY id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("list poison entries: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list poison entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list poison entries: %w", err)
	}
	return out, nil
}

// Get returns entry id with its metadata, payload and history.
func (s *Store) Get(ctx context.Context, id int64) (Entry, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+entryColumns+`, metadata, payload FROM poison_entries WHERE id = ?`, id)
	var md string
	var payload []byte
	e, err := scanEntry(row, &md, &payload)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Entry{}, opErr(ErrNotFound, "poison entry %d not found; list the entries with millrace poison list", id)
	case err != nil:
		return Entry{}, fmt.Errorf("read poison entry %d: %w", id, err)
	}
	if err := json.Unmarshal([]byte(md), &e.Metadata); err != nil {
		return Entry{}, fmt.Errorf("decode metadata of poison entry %d: %w", id, err)
	}
	e.Payload = payload
	rows, err := s.db.QueryContext(ctx, `SELECT at, event, detail FROM poison_history WHERE entry_id = ? ORDER BY rowid`, id)
	if err != nil {
		return Entry{}, fmt.Errorf("read history of poison entry %d: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var at string
		var ev Event
		if err := rows.Scan(&at, &ev.Event, &ev.Detail); err != nil {
			return Entry{}, fmt.Errorf("read history of poison entry %d: %w", id, err)
		}
		ev.At = parseStamp(at)
		e.History = append(e.History, ev)
	}
	if err := rows.Err(); err != nil {
		return Entry{}, fmt.Errorf("read history of poison entry %d: %w", id, err)
	}
	return e, nil
}

// Requeue republishes entry id alone to its original topic. Only the head of
// a sequence (or a keyless entry) can be requeued alone; an entry behind
// another open one is refused with ErrConflict naming the head.
func (s *Store) Requeue(ctx context.Context, id int64) (Entry, error) {
	if err := s.requeue(ctx, id, ModeOne); err != nil {
		return Entry{}, err
	}
	return s.Get(ctx, id)
}

// RequeueResult says what a requeue of sequences started.
type RequeueResult struct {
	// Requeued lists the entries republished now: the head of each sequence,
	// and each keyless entry.
	Requeued []int64 `json:"requeued"`
	// Waiting counts the entries behind those heads, requeued one by one as
	// the entry before them is handled.
	Waiting int `json:"waiting"`
}

// RequeueSequence requeues the sequence of key for handler: its head now,
// then each following entry once the one before it is handled (see the
// package documentation).
func (s *Store) RequeueSequence(ctx context.Context, handler, key string) (RequeueResult, error) {
	if handler == "" || key == "" {
		return RequeueResult{}, opErr(ErrInvalid, "a sequence is named by a handler and a key; both are required")
	}
	var head int64
	var open int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(id), 0), COUNT(*) FROM poison_entries
		WHERE handler = ? AND seq_key = ? AND status IN `+openStatuses, handler, key).Scan(&head, &open)
	if err != nil {
		return RequeueResult{}, fmt.Errorf("find the sequence of key %s for %s: %w", key, handler, err)
	}
	if open == 0 {
		return RequeueResult{}, opErr(ErrNotFound, "handler %s has no open entries for key %s", handler, key)
	}
	if err := s.requeue(ctx, head, ModeSequence); err != nil {
		return RequeueResult{}, err
	}
	return RequeueResult{Requeued: []int64{head}, Waiting: open - 1}, nil
}

// RequeueAll requeues every blocked sequence (as RequeueSequence does) and
// every open keyless entry. It carries on past failures and reports them all.
func (s *Store) RequeueAll(ctx context.Context) (RequeueResult, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT MIN(id), COUNT(*) FROM poison_entries
		WHERE status IN `+openStatuses+` AND seq_key <> '' GROUP BY handler, seq_key
		UNION ALL
		SELECT id, 1 FROM poison_entries WHERE status IN `+openStatuses+` AND seq_key = ''
		ORDER BY 1`)
	if err != nil {
		return RequeueResult{}, fmt.Errorf("find open poison entries: %w", err)
	}
	type head struct {
		id   int64
		open int
	}
	var heads []head
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.id, &h.open); err != nil {
			rows.Close()
			return RequeueResult{}, fmt.Errorf("find open poison entries: %w", err)
		}
		heads = append(heads, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return RequeueResult{}, fmt.Errorf("find open poison entries: %w", err)
	}
	res := RequeueResult{Requeued: []int64{}}
	var errs []error
	for _, h := range heads {
		if err := s.requeue(ctx, h.id, ModeSequence); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Requeued = append(res.Requeued, h.id)
		res.Waiting += h.open - 1
	}
	return res, errors.Join(errs...)
}

// requeue marks entry id requeued in mode and publishes it.
func (s *Store) requeue(ctx context.Context, id int64, mode string) error {
	var r *requeued
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var handler, key string
		var status Status
		err := tx.QueryRowContext(ctx, `SELECT handler, seq_key, status FROM poison_entries WHERE id = ?`, id).
			Scan(&handler, &key, &status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return opErr(ErrNotFound, "poison entry %d not found; list the entries with millrace poison list", id)
		case err != nil:
			return err
		}
		if !status.Open() {
			return opErr(ErrConflict, "entry %d is %s already; there is nothing to requeue", id, status)
		}
		if key != "" {
			var ahead int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM poison_entries
				WHERE handler = ? AND seq_key = ? AND status IN `+openStatuses+` AND id < ? ORDER BY id LIMIT 1`,
				handler, key, id).Scan(&ahead)
			if err == nil {
				return opErr(ErrConflict,
					"entry %d waits behind entry %d of key %s for handler %s; requeue entry %d first, or the whole sequence (handler %s, key %s)",
					id, ahead, key, handler, ahead, handler, key)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		why := "requeued alone"
		if mode == ModeSequence && key != "" {
			why = "requeued with its sequence"
		}
		r, err = markRequeued(ctx, tx, id, status, mode, s.stamp(), why)
		return err
	})
	if err != nil {
		var op *opError
		if errors.As(err, &op) {
			return err
		}
		return fmt.Errorf("requeue poison entry %d: %w", id, err)
	}
	if err := s.publishRequeue(ctx, r); err != nil {
		return fmt.Errorf("requeue poison entry %d: %w", id, err)
	}
	return nil
}

// Drop resolves open entry id without handling it. The reason is required
// and kept; the entry stays listed as dropped.
func (s *Store) Drop(ctx context.Context, id int64, reason string) (Entry, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return Entry{}, opErr(ErrInvalid, "dropping entry %d needs a reason: say why the message may be discarded", id)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var status Status
		err := tx.QueryRowContext(ctx, `SELECT status FROM poison_entries WHERE id = ?`, id).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return opErr(ErrNotFound, "poison entry %d not found; list the entries with millrace poison list", id)
		case err != nil:
			return err
		}
		if !status.Open() {
			return opErr(ErrConflict, "entry %d is %s already; only open entries (poisoned, parked, requeued) can be dropped", id, status)
		}
		now := s.stamp()
		if _, err := tx.ExecContext(ctx, `UPDATE poison_entries
			SET status = 'dropped', drop_reason = ?, requeue_mode = '', resolved_at = ?, updated_at = ? WHERE id = ?`,
			reason, now, now, id); err != nil {
			return err
		}
		return addHistory(ctx, tx, id, now, "dropped", reason)
	})
	if err != nil {
		var op *opError
		if errors.As(err, &op) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("drop poison entry %d: %w", id, err)
	}
	return s.Get(ctx, id)
}

const entryColumns = `id, message_id, handler, topic, "partition", "offset", seq_key, type, status, cause, reason,
	attempts, first_error_at, last_error_at, blocked_by, requeues, requeue_mode, requeued_at, resolved_at,
	drop_reason, published, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

// scanEntry scans the entryColumns of one row, then extra.
func scanEntry(row scanner, extra ...any) (Entry, error) {
	var e Entry
	var firstErr, lastErr, requeuedAt, resolvedAt, created, updated string
	dest := append([]any{&e.ID, &e.MessageID, &e.Handler, &e.Topic, &e.Partition, &e.Offset, &e.Key, &e.Type,
		&e.Status, &e.Cause, &e.Reason, &e.Attempts, &firstErr, &lastErr, &e.BlockedBy, &e.Requeues,
		&e.RequeueMode, &requeuedAt, &resolvedAt, &e.DropReason, &e.Published, &created, &updated}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Entry{}, err
	}
	e.FirstErrorAt, e.LastErrorAt = parseStamp(firstErr), parseStamp(lastErr)
	e.RequeuedAt, e.ResolvedAt = parseStamp(requeuedAt), parseStamp(resolvedAt)
	e.CreatedAt, e.UpdatedAt = parseStamp(created), parseStamp(updated)
	return e, nil
}

func statusList() string {
	var names []string
	for _, s := range Statuses() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

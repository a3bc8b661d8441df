package commandstore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
)

// Relay defaults.
const (
	DefaultBatchSize    = 200
	DefaultPollInterval = 250 * time.Millisecond
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 10 * time.Second
)

// Relay publishes the outbox: rows strictly in the order they were written,
// each deleted only after the publisher accepted it.
//
// Only one Relay may run per database file, in one process: two relays in
// different processes would publish the same rows, possibly out of order.
// Within one process, Run and Flush of any relays on the same Store take
// turns and never publish a row twice.
//
// Publishing is at least once: a crash between the publisher's
// acknowledgement and the deletion publishes the row again, with the same
// message id, and the same cloudevents.OutboxID and cloudevents.Sequence
// (the row's seq), which every row written by this version of the store
// carries. Since rows go out in seq order, and the publisher keeps each
// partition in the order it was given (as millrace's idempotent producers
// do, and as ordering per key needs anyway), a consumer sees the events of
// one outbox in a partition in sequence order, but for re-publishes, whose
// sequence is at or below one seen before (ADR 0007).
type Relay struct {
	store  *Store
	pub    message.Publisher
	logger *slog.Logger

	// The fields below may be changed before Run is called, never after.

	// BatchSize is the most rows read and published per pass.
	BatchSize int
	// PollInterval is how often Run looks for rows written by other
	// processes; rows written through this Store wake it at once.
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before retrying a failed
	// publish; the wait doubles after each consecutive failure.
	MinBackoff, MaxBackoff time.Duration
}

// NewRelay returns a relay that publishes the store's outbox with pub. The
// relay does not close pub. A nil logger discards logs.
func (s *Store) NewRelay(pub message.Publisher, logger *slog.Logger) *Relay {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		store:        s,
		pub:          pub,
		logger:       logger,
		BatchSize:    DefaultBatchSize,
		PollInterval: DefaultPollInterval,
		MinBackoff:   DefaultMinBackoff,
		MaxBackoff:   DefaultMaxBackoff,
	}
}

// Run publishes outbox rows until ctx is cancelled, then returns nil. It
// wakes when Apply commits through the same Store and every PollInterval. A
// failed publish is logged and retried after a capped exponential backoff,
// with the same rows in the same order: rows are never dropped or reordered.
// Call Flush after Run returned to publish what is left at shutdown.
func (r *Relay) Run(ctx context.Context) error {
	if r.pub == nil {
		return fmt.Errorf("run outbox relay: no publisher given")
	}
	poll := time.NewTicker(r.pollInterval())
	defer poll.Stop()
	backoff := time.Duration(0)
	for {
		full, err := r.publishBatch(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = r.nextBackoff(backoff)
			r.logger.WarnContext(ctx, "outbox relay failed, retrying", "retry_in", backoff, "error", err)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		if full {
			continue // there may be more right now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.store.wake:
		case <-poll.C:
		}
	}
}

// Flush publishes every row pending now, in order, and returns the first
// error without retrying. Use it at shutdown, after Run returned.
func (r *Relay) Flush(ctx context.Context) error {
	if r.pub == nil {
		return fmt.Errorf("flush outbox: no publisher given")
	}
	for {
		full, err := r.publishBatch(ctx)
		if err != nil {
			return fmt.Errorf("flush outbox: %w", err)
		}
		if !full {
			return nil
		}
	}
}

type outboxRow struct {
	seq   int64
	topic string
	msg   *message.Message
}

// publishBatch publishes up to BatchSize of the oldest rows, consecutive rows
// of one topic in one Publish call, and deletes each run of rows once it was
// published. It reports whether the batch was full, i.e. whether more rows
// may be waiting.
func (r *Relay) publishBatch(ctx context.Context) (full bool, err error) {
	r.store.publishing.Lock()
	defer r.store.publishing.Unlock()

	size := r.batchSize()
	rows, err := r.read(ctx, size)
	if err != nil {
		return false, err
	}
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].topic == rows[start].topic {
			end++
		}
		run := rows[start:end]
		msgs := make([]*message.Message, len(run))
		for i, row := range run {
			msgs[i] = row.msg
		}
		topic := run[0].topic
		if err := r.pub.Publish(topic, msgs...); err != nil {
			return false, fmt.Errorf("publish %d outbox rows from seq %d (message %s) to %s: %w",
				len(run), run[0].seq, run[0].msg.UUID, topic, err)
		}
		// The rows are out: delete them even if ctx ends now, or they would
		// be published a second time.
		if _, err := r.store.stmts.outboxDelete.ExecContext(context.WithoutCancel(ctx),
			run[0].seq, run[len(run)-1].seq); err != nil {
			return false, fmt.Errorf("delete published outbox rows %d to %d: %w", run[0].seq, run[len(run)-1].seq, err)
		}
		r.logger.DebugContext(ctx, "published outbox rows", "topic", topic, "rows", len(run),
			"message_id", run[0].msg.UUID)
		start = end
	}
	return len(rows) == size, nil
}

// read returns the oldest rows, in seq order, ready to publish.
func (r *Relay) read(ctx context.Context, limit int) ([]outboxRow, error) {
	rs, err := r.store.stmts.outboxRead.QueryContext(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rs.Close()
	var rows []outboxRow
	for rs.Next() {
		var (
			row       outboxRow
			id        string
			metadata  []byte
			payload   []byte
			sequenced bool
		)
		if err := rs.Scan(&row.seq, &row.topic, &id, &metadata, &payload, &sequenced); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		row.msg = message.NewMessage(id, payload)
		if err := json.Unmarshal(metadata, &row.msg.Metadata); err != nil {
			return nil, fmt.Errorf("decode metadata of outbox row %d: %w", row.seq, err)
		}
		if sequenced {
			// The same pair every time the row is published: a consumer
			// takes a sequence at or below the highest it applied for
			// this outbox in the partition for a re-publish (ADR 0007).
			row.msg.Metadata.Set(cloudevents.OutboxID, r.store.id)
			row.msg.Metadata.Set(cloudevents.Sequence, strconv.FormatInt(row.seq, 10))
		}
		rows = append(rows, row)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return rows, nil
}

func (r *Relay) batchSize() int {
	if r.BatchSize <= 0 {
		return DefaultBatchSize
	}
	return r.BatchSize
}

func (r *Relay) pollInterval() time.Duration {
	if r.PollInterval <= 0 {
		return DefaultPollInterval
	}
	return r.PollInterval
}

// nextBackoff doubles the previous wait, starting at MinBackoff and capped at
// MaxBackoff.
func (r *Relay) nextBackoff(prev time.Duration) time.Duration {
	lo, hi := r.MinBackoff, r.MaxBackoff
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi < lo {
		hi = lo
	}
	if prev <= 0 {
		return lo
	}
	return min(prev*2, hi)
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

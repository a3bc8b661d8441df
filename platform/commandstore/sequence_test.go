package commandstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
)

// publishThenFail publishes every message and then reports failure for the
// first failFirst calls: the broker took the messages, but the relay never
// learnt it (a crash or a timeout between the write and the acknowledgement).
type publishThenFail struct {
	next      message.Publisher
	failFirst int
	calls     int
}

func (p *publishThenFail) Publish(topic string, msgs ...*message.Message) error {
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	p.calls++
	if p.calls <= p.failFirst {
		return errBrokerDown
	}
	return nil
}

func (p *publishThenFail) Close() error { return nil }

func TestRelayNumbersEventsOfItsOutbox(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "commands.db")
	db := openDB(t, path)
	s := newStore(t, db)
	counters := newCounters(t, s, eventsTopic)
	applyN(t, counters, "m", 5)

	if _, err := uuid.Parse(s.OutboxID()); err != nil {
		t.Fatalf("outbox id %q is not a UUID: %v", s.OutboxID(), err)
	}
	ps := newPubSub(t)
	msgs := subscribe(t, ps, eventsTopic)
	relay := s.NewRelay(&publishThenFail{next: ps, failFirst: 1}, nil)
	if err := relay.Flush(ctx); !errors.Is(err, errBrokerDown) {
		t.Fatalf("first flush returned %v, want %v", err, errBrokerDown)
	}
	if err := relay.Flush(ctx); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	got := receive(t, msgs, 10)
	first, again := got[:5], got[5:]

	last := int64(0)
	for i, m := range first {
		if id := m.Metadata.Get(cloudevents.OutboxID); id != s.OutboxID() {
			t.Errorf("event %d: %s = %q, want the outbox id %q", i, cloudevents.OutboxID, id, s.OutboxID())
		}
		seq, err := strconv.ParseInt(m.Metadata.Get(cloudevents.Sequence), 10, 64)
		if err != nil || seq <= last {
			t.Errorf("event %d: %s = %q, want a number above %d", i, cloudevents.Sequence, m.Metadata.Get(cloudevents.Sequence), last)
		}
		last = seq
	}
	// The re-publish carries the same id and the same number: what tells
	// a consumer it is not a new event.
	for i := range first {
		for _, k := range []string{cloudevents.OutboxID, cloudevents.Sequence} {
			if a, b := first[i].Metadata.Get(k), again[i].Metadata.Get(k); a != b || first[i].UUID != again[i].UUID {
				t.Errorf("re-published event %d: %s %q (id %s), first published %q (id %s)", i, k, b, again[i].UUID, a, first[i].UUID)
			}
		}
	}

	// The id belongs to the database: the same after reopening, another
	// for another database.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if id := newStore(t, openDB(t, path)).OutboxID(); id != s.OutboxID() {
		t.Errorf("outbox id after reopening = %q, want %q", id, s.OutboxID())
	}
	if id := newStore(t, openDB(t, filepath.Join(t.TempDir(), "other.db"))).OutboxID(); id == s.OutboxID() {
		t.Errorf("a second database has the same outbox id %q", id)
	}
}

// oldOutbox is the outbox table as versions of millrace before sequence
// numbers made it.
const oldOutbox = `
CREATE TABLE outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	topic      TEXT NOT NULL,
	message_id TEXT NOT NULL,
	metadata   TEXT NOT NULL,
	payload    BLOB NOT NULL,
	created_at TEXT NOT NULL
);`

// An outbox written by a version of millrace without sequence numbers may
// hold rows that were published already, without a number: published
// again with one, they would look new to a consumer. They stay unnumbered
// (consumers recognise them by event id); rows written after the upgrade
// are numbered.
func TestOutboxFromBeforeSequencesKeepsOldRowsUnnumbered(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "commands.db"))
	if _, err := db.ExecContext(ctx, oldOutbox+`
INSERT INTO outbox (topic, message_id, metadata, payload, created_at)
VALUES ('counters.events', 'old-1', '{"ce_type":"test.incremented.v1","ce_partitionkey":"c1"}', '{"counter_id":"c1","n":1}', '2026-11-25T10:00:00.000000000Z');`); err != nil {
		t.Fatalf("write an outbox of the old shape: %v", err)
	}
	s := newStore(t, db)
	applyN(t, newCounters(t, s, eventsTopic), "new", 1)

	ps := newPubSub(t)
	msgs := subscribe(t, ps, eventsTopic)
	if err := s.NewRelay(ps, nil).Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got := receive(t, msgs, 2)
	if got[0].UUID != "old-1" {
		t.Fatalf("first published %s, want the old row old-1", got[0].UUID)
	}
	for _, k := range []string{cloudevents.OutboxID, cloudevents.Sequence} {
		if v := got[0].Metadata.Get(k); v != "" {
			t.Errorf("old row published with %s = %q, want none", k, v)
		}
		if v := got[1].Metadata.Get(k); v == "" {
			t.Errorf("new row published without %s", k)
		}
	}
	if seq := got[1].Metadata.Get(cloudevents.Sequence); seq != "2" {
		t.Errorf("new row's %s = %q, want 2 (the outbox's numbering goes on)", cloudevents.Sequence, seq)
	}
}

// Workers sharing a data directory start together after an upgrade: each
// opens the old outbox and migrates it; all of them must start, with one
// outbox id.
func TestStoresOpeningAnOldOutboxTogether(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "commands.db")
	if _, err := openDB(t, path).ExecContext(ctx, oldOutbox); err != nil {
		t.Fatalf("write an outbox of the old shape: %v", err)
	}
	const workers = 4
	dbs := make([]*sql.DB, workers) // a pool each, as processes of their own
	for i := range dbs {
		dbs[i] = openDB(t, path)
	}
	ids := make([]string, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			s, err := commandstore.New(ctx, dbs[i])
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = s.OutboxID()
			errs[i] = s.Close()
		})
	}
	wg.Wait()
	for i := range workers {
		if errs[i] != nil {
			t.Errorf("worker %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("worker %d sees outbox id %q, worker 0 %q", i, ids[i], ids[0])
		}
	}
}

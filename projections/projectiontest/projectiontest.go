// Package projectiontest helps test projections with real parts: it opens
// SQLite files the way millrace opens them in production and builds messages
// the way the Kafka subscriber delivers them (CloudEvents attributes from
// platform/cloudevents.Marshaler plus the x-kafka-* transport metadata).
//
// It is for tests only, like net/http/httptest.
package projectiontest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections"
)

// OpenDB opens a new SQLite file in tb.TempDir() with the settings the
// projection runner expects: WAL, a busy timeout and immediate transactions.
// It is closed when the test ends.
func OpenDB(tb testing.TB) *sql.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "projections.db")
	dsn := "file:" + path + "?_txlock=immediate" +
		"&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close %s: %v", path, err)
		}
	})
	if err := db.Ping(); err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	return db
}

// Option changes how [Message] builds a message.
type Option func(*options)

type options struct {
	id, causation, source string
	time                  time.Time
	outbox                string
	seq                   int64
}

// ID sets the message id (ce_id); a random UUID otherwise.
func ID(id string) Option { return func(o *options) { o.id = id } }

// CausedBy sets ce_causationid, the id of the command that caused an event.
func CausedBy(commandID string) Option { return func(o *options) { o.causation = commandID } }

// At sets ce_time; the current time otherwise.
func At(t time.Time) Option { return func(o *options) { o.time = t } }

// Source sets ce_source; "/millrace/test" otherwise.
func Source(s string) Option { return func(o *options) { o.source = s } }

// Sequence sets ce_outboxid and ce_sequence, as millrace's outbox relay
// does: the event is number seq of outbox outbox.
func Sequence(outbox string, seq int64) Option {
	return func(o *options) { o.outbox, o.seq = outbox, seq }
}

// Message marshals v as a producer would publish it.
func Message(tb testing.TB, v events.Message, opts ...Option) *message.Message {
	tb.Helper()
	o := options{source: "/millrace/test"}
	for _, opt := range opts {
		opt(&o)
	}
	m := cloudevents.Marshaler{Source: o.source}
	if o.id != "" {
		m.NewUUID = func() string { return o.id }
	}
	if !o.time.IsZero() {
		m.Now = func() time.Time { return o.time }
	}
	msg, err := m.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal %s: %v", v.Name(), err)
	}
	if o.causation != "" {
		msg.Metadata.Set(cloudevents.CausationID, o.causation)
	}
	if o.outbox != "" {
		msg.Metadata.Set(cloudevents.OutboxID, o.outbox)
		msg.Metadata.Set(cloudevents.Sequence, strconv.FormatInt(o.seq, 10))
	}
	return msg
}

// Delivered returns a copy of msg as consumed from topic, partition and
// offset. A copy, because a Watermill message is handled once: deliver the
// same message again by calling Delivered again.
func Delivered(msg *message.Message, topic string, partition int32, offset int64) *message.Message {
	c := msg.Copy()
	c.Metadata.Set(cloudevents.KafkaTopic, topic)
	c.Metadata.Set(cloudevents.KafkaPartition, strconv.FormatInt(int64(partition), 10))
	c.Metadata.Set(cloudevents.KafkaOffset, strconv.FormatInt(offset, 10))
	return c
}

// Log hands out consecutive offsets, from 0, per topic partition, as a Kafka
// log does. Its zero value is ready to use. It is not safe for concurrent use.
type Log struct {
	next map[string]map[int32]int64
}

// Append delivers msg at the next offset of the topic partition.
func (l *Log) Append(msg *message.Message, topic string, partition int32) *message.Message {
	if l.next == nil {
		l.next = map[string]map[int32]int64{}
	}
	if l.next[topic] == nil {
		l.next[topic] = map[int32]int64{}
	}
	offset := l.next[topic][partition]
	l.next[topic][partition] = offset + 1
	return Delivered(msg, topic, partition, offset)
}

// Rows returns every row of table, ordered by its first column, each as
// "column=value …" text: what tests compare two read models by.
func Rows(tb testing.TB, db *sql.DB, table string) []string {
	tb.Helper()
	rows, err := db.Query(`SELECT * FROM ` + table + ` ORDER BY 1`)
	if err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			tb.Fatalf("read %s: %v", table, err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = fmt.Sprintf("%s=%v", cols[i], v)
		}
		out = append(out, strings.Join(parts, " "))
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	return out
}

// FirstDiff describes the first row where got and want (from Rows) differ.
func FirstDiff(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("got:  %s\nwant: %s", g, w)
		}
	}
	return "none"
}

// BatchCase is a way of cutting a log into batches for ApplyBatchEqualsApply,
// with the seed of the random log it is tried on.
type BatchCase struct {
	Name    string
	Seed    uint64
	Batches []int // batch sizes, cycled
}

// BatchCases are the cuts every BatchApplier is checked with: the whole log
// at once, small batches, sizes that put an aggregate's events on both
// sides of a cut, and sizes around Tx.ExecRows's statement sizes.
func BatchCases() []BatchCase {
	return []BatchCase{
		{Name: "one batch", Seed: 1, Batches: []int{100000}},
		{Name: "batches of 7", Seed: 2, Batches: []int{7}},
		{Name: "batches of 1, 2, 3 and 50", Seed: 3, Batches: []int{1, 2, 3, 50}},
		{Name: "batches of 64 and 65 (statement sizes)", Seed: 4, Batches: []int{64, 65, 129}},
	}
}

// applyOnly is a projection without its batch form: a runner calls Apply
// once per event.
type applyOnly struct{ projections.Projection }

// ApplyBatchEqualsApply checks a projection's ApplyBatch against its Apply:
// it applies log to one fresh database with Apply, one message per
// transaction, and to another with HandleBatch, in batches of the sizes
// given (cycled), and compares tables (of version 1) row by row. Each table
// must hold rows, or the log tests nothing. newProjection makes the
// projection on a database.
func ApplyBatchEqualsApply(t *testing.T, newProjection func(*sql.DB) projections.Projection, log []*message.Message, batches []int, tables ...string) {
	t.Helper()
	want := OpenDB(t)
	p := newProjection(want)
	if _, ok := p.(projections.BatchApplier); !ok {
		t.Fatalf("projection %s has no ApplyBatch", p.Name())
	}
	one, err := projections.NewRunner(context.Background(), want, applyOnly{p}, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	for _, msg := range log {
		if err := one.Handle(msg.Copy()); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}

	got := OpenDB(t)
	batched, err := projections.NewRunner(context.Background(), got, newProjection(got), nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	for i, b := 0, 0; i < len(log); b++ {
		n := min(batches[b%len(batches)], len(log)-i)
		batch := make([]*message.Message, n)
		for j := range batch {
			batch[j] = log[i+j].Copy()
		}
		if err := batched.HandleBatch(context.Background(), batch); err != nil {
			t.Fatalf("HandleBatch: %v", err)
		}
		i += n
	}

	for _, table := range tables {
		name := projections.Table(p.Name(), 1, table)
		w, g := Rows(t, want, name), Rows(t, got, name)
		if len(w) == 0 {
			t.Fatalf("table %s is empty: the log tests nothing", table)
		}
		if !slices.Equal(g, w) {
			t.Errorf("table %s: batched has %d rows, one by one %d; first difference:\n%s", table, len(g), len(w), FirstDiff(g, w))
		}
	}
}

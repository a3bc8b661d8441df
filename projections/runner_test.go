package projections_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
)

// recorder is a projection that stores every event it is given in a table,
// and fails on demand.
type recorder struct {
	commands bool
	failOn   string // an order id whose events make Apply fail after writing

	mu   sync.Mutex
	seen []projections.Event
}

var errApplyFailed = errors.New("apply failed on purpose")

func (*recorder) Name() string { return "recorder" }
func (*recorder) Version() int { return 1 }
func (*recorder) Topics() []string {
	return []string{events.TopicOrderEvents, events.TopicOrderCommands}
}
func (r *recorder) WantsCommands() bool { return r.commands }

func (*recorder) Setup(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS recorder_events (event_id TEXT NOT NULL, type TEXT NOT NULL)`)
	return err
}

func (r *recorder) Apply(ctx context.Context, tx *sql.Tx, e projections.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO recorder_events (event_id, type) VALUES (?, ?)`, e.ID, e.Type); err != nil {
		return err
	}
	if r.failOn != "" && e.Key == r.failOn {
		return errApplyFailed
	}
	r.mu.Lock()
	r.seen = append(r.seen, e)
	r.mu.Unlock()
	return nil
}

// applied returns the ids of the events in the read model, in insertion order.
func applied(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT event_id FROM recorder_events ORDER BY rowid`)
	if err != nil {
		t.Fatalf("read recorder_events: %v", err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("read recorder_events: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read recorder_events: %v", err)
	}
	return ids
}

func positions(t *testing.T, r *projections.Runner) []projections.Position {
	t.Helper()
	ps, err := r.Positions(context.Background())
	if err != nil {
		t.Fatalf("positions: %v", err)
	}
	return ps
}

func newRunner(t *testing.T, db *sql.DB, p projections.Projection) *projections.Runner {
	t.Helper()
	r, err := projections.NewRunner(context.Background(), db, p, nil)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	return r
}

func placed(orderID string) events.OrderPlaced {
	return events.OrderPlaced{
		OrderID: orderID, UserID: "u-1", Currency: "EUR", TotalCents: 1000,
		Lines:    []events.PricedLine{{SKU: "sku-1", Quantity: 1, UnitPriceCents: 1000, LineTotalCents: 1000}},
		PlacedAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
	}
}

func handle(t *testing.T, r *projections.Runner, msg *message.Message) {
	t.Helper()
	if err := r.Handle(msg); err != nil {
		t.Fatalf("handle %s: %v", msg.UUID, err)
	}
}

func TestRunnerAppliesEventWithItsAttributes(t *testing.T) {
	db := projectiontest.OpenDB(t)
	rec := &recorder{}
	r := newRunner(t, db, rec)

	when := time.Date(2025, 3, 1, 10, 0, 0, 123456789, time.UTC)
	msg := projectiontest.Message(t, placed("o-1"),
		projectiontest.ID("e-1"), projectiontest.CausedBy("c-1"), projectiontest.At(when), projectiontest.Source(events.SourceOrders))
	handle(t, r, projectiontest.Delivered(msg, events.TopicOrderEvents, 2, 41))

	if len(rec.seen) != 1 {
		t.Fatalf("Apply called %d times, want 1", len(rec.seen))
	}
	got := rec.seen[0]
	want := projections.Event{
		ID: "e-1", Type: "orders.order-placed.v1", Key: "o-1", Source: events.SourceOrders, CausationID: "c-1",
		Time: when, Topic: events.TopicOrderEvents, Partition: 2, Offset: 41,
	}
	data := got.Data
	got.Data = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event = %+v, want %+v", got, want)
	}
	p, ok := data.(*events.OrderPlaced)
	if !ok {
		t.Fatalf("Data is %T, want *events.OrderPlaced", data)
	}
	if w := placed("o-1"); !reflect.DeepEqual(*p, w) {
		t.Errorf("Data = %+v, want %+v", *p, w)
	}
	if want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 2, Offset: 41}}; !reflect.DeepEqual(positions(t, r), want) {
		t.Errorf("positions = %+v, want %+v", positions(t, r), want)
	}
}

func TestRunnerSkips(t *testing.T) {
	unknown := projectiontest.Message(t, placed("o-9"), projectiontest.ID("e-unknown"))
	unknown.Metadata.Set(cloudevents.Type, "orders.order-refunded.v9")
	command := projectiontest.Message(t, events.PayOrder{OrderID: "o-1", AmountCents: 1000}, projectiontest.ID("c-1"))

	tests := []struct {
		name string
		// first is delivered at offset 0 and must be applied; second follows.
		second      *message.Message
		secondAt    int64
		wantApplied []string
		wantOffset  int64
	}{
		{
			name:        "redelivery of the same offset applies nothing",
			second:      projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1")),
			secondAt:    0,
			wantApplied: []string{"e-1"},
			wantOffset:  0,
		},
		{
			name:        "an older offset applies nothing",
			second:      projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2")),
			secondAt:    0,
			wantApplied: []string{"e-1"},
			wantOffset:  0,
		},
		{
			name:        "the same event id at a new offset applies nothing but advances",
			second:      projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1")),
			secondAt:    7,
			wantApplied: []string{"e-1"},
			wantOffset:  7,
		},
		{
			name:        "an unknown type advances",
			second:      unknown,
			secondAt:    1,
			wantApplied: []string{"e-1"},
			wantOffset:  1,
		},
		{
			name:        "a command the projection did not ask for advances",
			second:      command,
			secondAt:    1,
			wantApplied: []string{"e-1"},
			wantOffset:  1,
		},
		{
			name:        "a new event at a new offset is applied",
			second:      projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2")),
			secondAt:    1,
			wantApplied: []string{"e-1", "e-2"},
			wantOffset:  1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := projectiontest.OpenDB(t)
			r := newRunner(t, db, &recorder{})
			first := projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1"))
			handle(t, r, projectiontest.Delivered(first, events.TopicOrderEvents, 0, 0))
			handle(t, r, projectiontest.Delivered(tt.second, events.TopicOrderEvents, 0, tt.secondAt))

			if got := applied(t, db); !reflect.DeepEqual(got, tt.wantApplied) {
				t.Errorf("applied = %v, want %v", got, tt.wantApplied)
			}
			want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: tt.wantOffset}}
			if got := positions(t, r); !reflect.DeepEqual(got, want) {
				t.Errorf("positions = %+v, want %+v", got, want)
			}
		})
	}
}

func TestRunnerPassesCommandsToProjectionsThatWantThem(t *testing.T) {
	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{commands: true})
	cmd := projectiontest.Message(t, events.PayOrder{OrderID: "o-1", AmountCents: 1000}, projectiontest.ID("c-1"))
	handle(t, r, projectiontest.Delivered(cmd, events.TopicOrderCommands, 0, 0))
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"c-1"}) {
		t.Errorf("applied = %v, want [c-1]", got)
	}
}

func TestRunnerRefusesMalformedEvents(t *testing.T) {
	badPayload := projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2"))
	badPayload.Payload = []byte(`{"order_id": 42`)
	wrongShape := projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2"))
	wrongShape.Payload = []byte(`{"order_id": 42}`)
	badTime := projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2"))
	badTime.Metadata.Set(cloudevents.Time, "yesterday")
	noID := projectiontest.Message(t, placed("o-2"))
	noID.UUID = ""

	for name, msg := range map[string]*message.Message{
		"truncated JSON":                 badPayload,
		"a field of the wrong type":      wrongShape,
		"a ce_time that is not RFC 3339": badTime,
		"no message id":                  noID,
	} {
		t.Run(name, func(t *testing.T) {
			db := projectiontest.OpenDB(t)
			r := newRunner(t, db, &recorder{})
			handle(t, r, projectiontest.Delivered(projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1")), events.TopicOrderEvents, 0, 0))

			err := r.Handle(projectiontest.Delivered(msg, events.TopicOrderEvents, 0, 1))
			if !errors.Is(err, projections.ErrMalformedEvent) {
				t.Fatalf("Handle = %v, want an error wrapping ErrMalformedEvent", err)
			}
			if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-1"}) {
				t.Errorf("applied = %v, want [e-1]", got)
			}
			want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 0}}
			if got := positions(t, r); !reflect.DeepEqual(got, want) {
				t.Errorf("positions = %+v, want %+v", got, want)
			}
		})
	}
}

func TestRunnerRollsBackFailedApply(t *testing.T) {
	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{failOn: "o-bad"})
	handle(t, r, projectiontest.Delivered(projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1")), events.TopicOrderEvents, 0, 0))

	bad := projectiontest.Message(t, placed("o-bad"), projectiontest.ID("e-bad"))
	err := r.Handle(projectiontest.Delivered(bad, events.TopicOrderEvents, 0, 1))
	if !errors.Is(err, errApplyFailed) {
		t.Fatalf("Handle = %v, want the projection's error", err)
	}
	if errors.Is(err, projections.ErrMalformedEvent) {
		t.Errorf("Handle = %v: a failed Apply is not a malformed event", err)
	}
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-1"}) {
		t.Errorf("applied = %v, want [e-1]: the failed Apply's write must be rolled back", got)
	}
	want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 0}}
	if got := positions(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("positions = %+v, want %+v", got, want)
	}

	// The event id was not recorded either: once Apply succeeds, a redelivery applies it.
	r2 := newRunner(t, db, &recorder{})
	handle(t, r2, projectiontest.Delivered(bad, events.TopicOrderEvents, 0, 1))
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-1", "e-bad"}) {
		t.Errorf("applied after retry = %v, want [e-1 e-bad]", got)
	}
}

func TestRunnerRequiresKafkaPosition(t *testing.T) {
	full := projectiontest.Delivered(projectiontest.Message(t, placed("o-1")), events.TopicOrderEvents, 0, 0)
	for _, key := range cloudevents.TransportKeys() {
		t.Run(key, func(t *testing.T) {
			db := projectiontest.OpenDB(t)
			r := newRunner(t, db, &recorder{})
			msg := full.Copy()
			msg.Metadata.Set(key, "")
			if err := r.Handle(msg); err == nil {
				t.Fatalf("Handle without %s succeeded", key)
			}
			if got := applied(t, db); len(got) != 0 {
				t.Errorf("applied = %v, want nothing", got)
			}
		})
	}
	t.Run("offset not a number", func(t *testing.T) {
		db := projectiontest.OpenDB(t)
		r := newRunner(t, db, &recorder{})
		msg := full.Copy()
		msg.Metadata.Set(cloudevents.KafkaOffset, "latest")
		if err := r.Handle(msg); err == nil {
			t.Fatal("Handle with a non-numeric offset succeeded")
		}
	})
}

func TestRunnerPositionsPerPartition(t *testing.T) {
	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{})
	var log projectiontest.Log
	for i := range 3 {
		handle(t, r, log.Append(projectiontest.Message(t, placed(fmt.Sprintf("a-%d", i))), events.TopicOrderEvents, 1))
	}
	for i := range 5 {
		handle(t, r, log.Append(projectiontest.Message(t, placed(fmt.Sprintf("b-%d", i))), events.TopicOrderEvents, 0))
	}
	handle(t, r, log.Append(projectiontest.Message(t, events.ShipOrder{OrderID: "c-1"}), events.TopicOrderCommands, 3))

	want := []projections.Position{
		{Topic: events.TopicOrderCommands, Partition: 3, Offset: 0},
		{Topic: events.TopicOrderEvents, Partition: 0, Offset: 4},
		{Topic: events.TopicOrderEvents, Partition: 1, Offset: 2},
	}
	if got := positions(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("positions = %+v, want %+v", got, want)
	}
	if got := len(applied(t, db)); got != 8 {
		t.Errorf("applied %d events, want 8", got)
	}
}

func TestRunnerHandlesPartitionsConcurrently(t *testing.T) {
	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{})
	const partitions, perPartition = 4, 25

	msgs := make([][]*message.Message, partitions)
	for p := range partitions {
		for o := range perPartition {
			id := fmt.Sprintf("p%d-o%d", p, o)
			msgs[p] = append(msgs[p], projectiontest.Delivered(
				projectiontest.Message(t, placed(id), projectiontest.ID(id)), events.TopicOrderEvents, int32(p), int64(o)))
		}
	}
	var g errgroup.Group
	for p := range partitions {
		g.Go(func() error {
			for _, msg := range msgs[p] {
				if err := r.Handle(msg); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("handle: %v", err)
	}
	if got := len(applied(t, db)); got != partitions*perPartition {
		t.Errorf("applied %d events, want %d", got, partitions*perPartition)
	}
	got := positions(t, r)
	if len(got) != partitions {
		t.Fatalf("positions = %+v, want one per partition", got)
	}
	for _, p := range got {
		if p.Offset != perPartition-1 {
			t.Errorf("position of partition %d = %d, want %d", p.Partition, p.Offset, perPartition-1)
		}
	}
}

// versioned is a recorder with another name or version.
type versioned struct {
	recorder
	name    string
	version int
}

func (v *versioned) Name() string { return v.name }
func (v *versioned) Version() int { return v.version }

func TestRunnerKeepsPositionsPerProjectionVersion(t *testing.T) {
	db := projectiontest.OpenDB(t)
	v1 := newRunner(t, db, &versioned{name: "recorder", version: 1})
	msg := projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1"))
	handle(t, v1, projectiontest.Delivered(msg, events.TopicOrderEvents, 0, 0))

	v2 := newRunner(t, db, &versioned{name: "recorder", version: 2})
	if got := v2.Group(); got != "projection.recorder.v2" {
		t.Errorf("Group = %q, want projection.recorder.v2", got)
	}
	if got := positions(t, v2); len(got) != 0 {
		t.Errorf("positions of a new version = %+v, want none", got)
	}
	// A rebuild applies the same event again, into the new version.
	handle(t, v2, projectiontest.Delivered(msg, events.TopicOrderEvents, 0, 0))
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-1", "e-1"}) {
		t.Errorf("applied = %v, want e-1 by both versions", got)
	}
}

func TestNewRunner(t *testing.T) {
	db := projectiontest.OpenDB(t)
	tests := []struct {
		name    string
		p       projections.Projection
		wantErr bool
	}{
		{"a valid projection", &recorder{}, false},
		{"setting up twice is harmless", &recorder{}, false},
		{"no name", &versioned{version: 1}, true},
		{"version 0", &versioned{name: "recorder", version: 0}, true},
		{"no projection", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := projections.NewRunner(context.Background(), db, tt.p, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewRunner error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && r.Group() != "projection.recorder.v1" {
				t.Errorf("Group = %q, want projection.recorder.v1", r.Group())
			}
		})
	}
}

func TestRunnerLogsSkippedMessagesAtDebug(t *testing.T) {
	db := projectiontest.OpenDB(t)
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := projections.NewRunner(context.Background(), db, &recorder{}, logger)
	if err != nil {
		t.Fatalf("new runner: %v", err)
	}
	msg := projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1"))
	msg.Metadata.Set(cloudevents.Type, "orders.order-refunded.v9")
	handle(t, r, projectiontest.Delivered(msg, events.TopicOrderEvents, 0, 5))

	var entry map[string]any
	if err := json.Unmarshal(buf.Bytes(), &entry); err != nil {
		t.Fatalf("want one JSON log line, got %q: %v", buf.String(), err)
	}
	for key, want := range map[string]any{
		"level": "DEBUG", "reason": "unknown type", "type": "orders.order-refunded.v9",
		"projection": "recorder", "message_id": "e-1", "offset": float64(5),
	} {
		if entry[key] != want {
			t.Errorf("log %s = %v, want %v (line %s)", key, entry[key], want, buf.String())
		}
	}
}

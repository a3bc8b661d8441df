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
	"slices"
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
func (*recorder) Topics() []string {
	return []string{events.TopicOrderEvents, events.TopicOrderCommands}
}
func (r *recorder) WantsCommands() bool { return r.commands }

func (*recorder) Setup(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tx.Table("events")+` (event_id TEXT NOT NULL, type TEXT NOT NULL)`)
	return err
}

func (r *recorder) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+tx.Table("events")+` (event_id, type) VALUES (?, ?)`, e.ID, e.Type); err != nil {
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

// applied returns the ids of the events in version 1 of the recorder's read
// model, in insertion order.
func applied(t *testing.T, db *sql.DB) []string {
	t.Helper()
	return appliedIn(t, db, "recorder", 1)
}

// appliedIn returns the ids of the events in one version of a recorder's
// read model, in insertion order.
func appliedIn(t *testing.T, db *sql.DB, name string, version int) []string {
	t.Helper()
	rows, err := db.Query(`SELECT event_id FROM ` + projections.Table(name, version, "events") + ` ORDER BY rowid`)
	if err != nil {
		t.Fatalf("read %s v%d events: %v", name, version, err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("read events: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read events: %v", err)
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
	msg.Metadata.Set("ce_someextension", "x")
	handle(t, r, projectiontest.Delivered(msg, events.TopicOrderEvents, 2, 41))

	if len(rec.seen) != 1 {
		t.Fatalf("Apply called %d times, want 1", len(rec.seen))
	}
	got := rec.seen[0]
	// Every header reaches the projection, extensions included.
	if got.Metadata.Get("ce_someextension") != "x" || got.Metadata.Get(cloudevents.CausationID) != "c-1" {
		t.Errorf("event metadata = %v, want every header of the message", got.Metadata)
	}
	got.Metadata = nil
	want := projections.Event{
		ID: "e-1", Type: "orders.order-placed.v2", WireType: "orders.order-placed.v1", Key: "o-1",
		Source: events.SourceOrders, CausationID: "c-1",
		Time: when, Topic: events.TopicOrderEvents, Partition: 2, Offset: 41,
	}
	data := got.Data
	got.Data = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event = %+v, want %+v", got, want)
	}
	// The v1 event reaches the projection upcast to v2.
	p, ok := data.(*events.OrderPlacedV2)
	if !ok {
		t.Fatalf("Data is %T, want *events.OrderPlacedV2", data)
	}
	v1 := placed("o-1")
	if w := (events.OrderPlacedV2{OrderID: v1.OrderID, UserID: v1.UserID, Lines: v1.Lines, ItemCount: 1,
		TotalCents: v1.TotalCents, Currency: v1.Currency, PlacedAt: v1.PlacedAt}); !reflect.DeepEqual(*p, w) {
		t.Errorf("Data = %+v, want %+v", *p, w)
	}
	if want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 2, Offset: 41}}; !reflect.DeepEqual(positions(t, r), want) {
		t.Errorf("positions = %+v, want %+v", positions(t, r), want)
	}
}

func TestRunnerSkips(t *testing.T) {
	firstAt := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
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
			name:        "the same event (id and time) at a new offset applies nothing but advances",
			second:      projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1"), projectiontest.At(firstAt)),
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
			first := projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1"), projectiontest.At(firstAt))
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

// named is a recorder with another name.
type named struct {
	recorder
	name string
}

func (n *named) Name() string { return n.name }

func TestNewRunner(t *testing.T) {
	db := projectiontest.OpenDB(t)
	tests := []struct {
		name    string
		p       projections.Projection
		wantErr bool
	}{
		{"a valid projection", &recorder{}, false},
		{"setting up twice is harmless", &recorder{}, false},
		{"no name", &named{}, true},
		{"an underscore in the name", &named{name: "record_er"}, true},
		{"an upper-case name", &named{name: "Recorder"}, true},
		{"a name starting with a digit", &named{name: "2recorder"}, true},
		{"a stray table", &stray{}, true},
		{"no projection", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := projections.NewRunner(context.Background(), db, tt.p, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewRunner error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (r.Version() != 1 || r.GroupFor(events.TopicOrderEvents) != "projection.recorder.v1.orders.events") {
				t.Errorf("Version, GroupFor = %d, %q; want 1, projection.recorder.v1.orders.events", r.Version(), r.GroupFor(events.TopicOrderEvents))
			}
		})
	}
}

// stray creates a table without its version's prefix, which could never be
// dropped when the version retires.
type stray struct{ recorder }

func (*stray) Name() string { return "stray" }
func (*stray) Setup(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS stray_events (id TEXT)`)
	return err
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

// TestRunnerChecksLegacyAppliedIDs: a database written by an older build
// kept applied event ids in projection_applied, by id only. An event applied
// then must not be applied again by the same version.
func TestRunnerChecksLegacyAppliedIDs(t *testing.T) {
	db := projectiontest.OpenDB(t)
	if _, err := db.Exec(`CREATE TABLE projection_applied (projection TEXT NOT NULL, version INTEGER NOT NULL, event_id TEXT NOT NULL,
		PRIMARY KEY (projection, version, event_id)) WITHOUT ROWID;
		INSERT INTO projection_applied VALUES ('recorder', 1, 'e-old')`); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, db, &recorder{})
	handle(t, r, projectiontest.Delivered(projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-old")), events.TopicOrderEvents, 0, 7))
	handle(t, r, projectiontest.Delivered(projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-new")), events.TopicOrderEvents, 0, 8))
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-new"}) {
		t.Errorf("applied = %v, want only e-new", got)
	}
	if want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 8}}; !reflect.DeepEqual(positions(t, r), want) {
		t.Errorf("positions = %+v, want %+v", positions(t, r), want)
	}
}

// TestHandleBatch applies a batch with redeliveries, a re-published event
// and an unknown type in one transaction, with the outcome of handling them
// one by one.
func TestHandleBatch(t *testing.T) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	msg := func(id string, offset int64) *message.Message {
		return projectiontest.Delivered(projectiontest.Message(t, placed("o-"+id), projectiontest.ID(id), projectiontest.At(at)),
			events.TopicOrderEvents, 0, offset)
	}
	unknown := msg("e-x", 3)
	unknown.Metadata.Set(cloudevents.Type, "orders.order-refunded.v9")
	batch := []*message.Message{msg("e-0", 0), msg("e-1", 1), msg("e-0", 2), unknown, msg("e-4", 4), msg("e-1", 1)}

	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{})
	if err := r.HandleBatch(context.Background(), batch); err != nil {
		t.Fatalf("HandleBatch: %v", err)
	}
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-0", "e-1", "e-4"}) {
		t.Errorf("applied = %v, want e-0 e-1 e-4 once each", got)
	}
	if want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 4}}; !reflect.DeepEqual(positions(t, r), want) {
		t.Errorf("positions = %+v, want %+v", positions(t, r), want)
	}
	// The same batch again: all redelivered.
	if err := r.HandleBatch(context.Background(), batch); err != nil {
		t.Fatalf("HandleBatch again: %v", err)
	}
	if got := len(applied(t, db)); got != 3 {
		t.Errorf("applied %d events after the redelivery, want 3", got)
	}
}

// TestHandleBatchSkipsRepublishedEvents: an outbox relay that crashed
// publishes events again, with their ids and times, at new offsets, possibly
// long after the first copy. Batches record ids many per statement; each
// event must still be applied once, whether its first copy is in an earlier
// batch, earlier in the same batch, or was applied one message per
// transaction.
func TestHandleBatchSkipsRepublishedEvents(t *testing.T) {
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	event := func(i int) *message.Message {
		return projectiontest.Message(t, placed(fmt.Sprintf("o-%d", i)), projectiontest.ID(fmt.Sprintf("e-%d", i)),
			projectiontest.At(start.Add(time.Duration(i)*time.Millisecond)))
	}
	var (
		log  projectiontest.Log
		want []string
	)
	fresh := func(from, to int) []*message.Message {
		var out []*message.Message
		for i := from; i < to; i++ {
			out = append(out, log.Append(event(i), events.TopicOrderEvents, 0))
			want = append(want, fmt.Sprintf("e-%d", i))
		}
		return out
	}
	again := func(i int) *message.Message { return log.Append(event(i), events.TopicOrderEvents, 0) }

	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{})
	steps := []struct {
		name  string
		batch []*message.Message
		total int // events applied after the batch
	}{
		{name: "new events only", batch: fresh(0, 300), total: 300},
		{name: "one re-published among new ones", batch: slices.Concat(fresh(300, 400), []*message.Message{again(17)}, fresh(400, 450)), total: 450},
		{name: "re-published long after, alone", batch: []*message.Message{again(5)}, total: 450},
		{name: "the same event twice in one batch, new before", batch: slices.Concat(fresh(450, 460), []*message.Message{again(455)}), total: 460},
		{name: "a whole batch again", batch: []*message.Message{again(0), again(1), again(299), again(300)}, total: 460},
		{name: "new events after", batch: fresh(460, 600), total: 600},
	}
	for _, st := range steps {
		if err := r.HandleBatch(context.Background(), st.batch); err != nil {
			t.Fatalf("%s: HandleBatch: %v", st.name, err)
		}
		if got := applied(t, db); !reflect.DeepEqual(got, want[:st.total]) {
			t.Fatalf("%s: applied %d events, want %d (each once, in log order)", st.name, len(got), st.total)
		}
	}
	if got, want := positions(t, r), []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 606}}; !reflect.DeepEqual(got, want) {
		t.Errorf("positions = %+v, want %+v", got, want)
	}
	var ids int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_event_ids WHERE projection = 'recorder' AND version = 1`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if ids != 600 {
		t.Errorf("%d event ids recorded, want 600", ids)
	}
}

// TestHandleBatchKeepsWhatPrecedesAFailure: when one message of a batch
// fails, the messages before it are applied and stored, the failing one and
// those after are not.
func TestHandleBatchKeepsWhatPrecedesAFailure(t *testing.T) {
	db := projectiontest.OpenDB(t)
	r := newRunner(t, db, &recorder{failOn: "o-bad"})
	var log projectiontest.Log
	batch := []*message.Message{
		log.Append(projectiontest.Message(t, placed("o-1"), projectiontest.ID("e-1")), events.TopicOrderEvents, 0),
		log.Append(projectiontest.Message(t, placed("o-2"), projectiontest.ID("e-2")), events.TopicOrderEvents, 0),
		log.Append(projectiontest.Message(t, placed("o-bad"), projectiontest.ID("e-bad")), events.TopicOrderEvents, 0),
		log.Append(projectiontest.Message(t, placed("o-3"), projectiontest.ID("e-3")), events.TopicOrderEvents, 0),
	}
	if err := r.HandleBatch(context.Background(), batch); !errors.Is(err, errApplyFailed) {
		t.Fatalf("HandleBatch = %v, want the projection's error", err)
	}
	if got := applied(t, db); !reflect.DeepEqual(got, []string{"e-1", "e-2"}) {
		t.Errorf("applied = %v, want e-1 e-2", got)
	}
	if want := []projections.Position{{Topic: events.TopicOrderEvents, Partition: 0, Offset: 1}}; !reflect.DeepEqual(positions(t, r), want) {
		t.Errorf("positions = %+v, want %+v", positions(t, r), want)
	}
}

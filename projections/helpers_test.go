package projections_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/projectiontest"
)

// broker is an embedded Kafka-protocol broker on a free loopback port, with
// the event topics created.
type broker struct {
	cfg      kafka.Config
	admin    *kafka.Admin
	producer *kgo.Client
}

func startBroker(t *testing.T, partitions int32) *broker {
	t.Helper()
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Partitions: int(partitions)})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	cfg := kafka.Config{Brokers: b.Addrs(), ClientID: "projections-test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var topics []kafka.Topic
	for _, tp := range events.Topics() {
		topics = append(topics, kafka.Topic{Name: tp.Name, Partitions: partitions})
	}
	if err := kafka.EnsureTopics(ctx, cfg, topics...); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	adm, err := kafka.NewAdmin(cfg)
	if err != nil {
		t.Fatalf("new admin: %v", err)
	}
	t.Cleanup(func() { _ = adm.Close() })
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	t.Cleanup(cl.Close)
	return &broker{cfg: cfg, admin: adm, producer: cl}
}

// record turns an event into the Kafka record millrace's publisher writes:
// CloudEvents attributes as headers, the aggregate id as the key.
func record(t testing.TB, m events.Message, opts ...projectiontest.Option) *kgo.Record {
	t.Helper()
	msg := projectiontest.Message(t, m, opts...)
	typ, ok := events.Lookup(m.Name())
	if !ok {
		t.Fatalf("unknown type %s", m.Name())
	}
	topic := typ.Topic
	if _, ok := m.(events.UserRegistered); ok {
		topic = events.TopicUserEvents
	}
	rec := &kgo.Record{Topic: topic, Key: []byte(m.Key()), Value: msg.Payload}
	rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: cloudevents.ID, Value: []byte(msg.UUID)})
	for k, v := range msg.Metadata {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return rec
}

// produce writes records and waits for the broker's acks.
func (b *broker) produce(t testing.TB, records ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(records), err)
	}
}

// orders returns n OrderPlacedV2 events with ids prefix-0 … prefix-(n-1).
func ordersPlaced(prefix string, n int) []events.Message {
	out := make([]events.Message, n)
	for i := range out {
		out[i] = events.OrderPlacedV2{
			OrderID: fmt.Sprintf("%s-%d", prefix, i), UserID: "u-1", Currency: "EUR", TotalCents: 100, ItemCount: 1,
			Lines:    []events.PricedLine{{SKU: "tea", Quantity: 1, UnitPriceCents: 100, LineTotalCents: 100}},
			PlacedAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		}
	}
	return out
}

func recordsOf(t testing.TB, ms []events.Message) []*kgo.Record {
	out := make([]*kgo.Record, len(ms))
	for i, m := range ms {
		out[i] = record(t, m, projectiontest.ID(fmt.Sprintf("e-%s", m.Key())))
	}
	return out
}

// ledger is a projection that records, per version, every event it applies
// and whether it was a replay.
type ledger struct {
	name string

	mu      sync.Mutex
	applied map[int]int // by version: Apply calls
}

func newLedger(name string) *ledger {
	return &ledger{name: name, applied: map[int]int{}}
}

func (l *ledger) calls(version int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied[version]
}

func (l *ledger) Name() string     { return l.name }
func (l *ledger) Topics() []string { return []string{events.TopicOrderEvents} }

func (l *ledger) Setup(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tx.Table("events")+
		` (event_id TEXT NOT NULL, type TEXT NOT NULL, replay INTEGER NOT NULL, item_count INTEGER NOT NULL)`)
	return err
}

func (l *ledger) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	items := 0
	if p, ok := e.Data.(*events.OrderPlacedV2); ok {
		items = p.ItemCount
	}
	replay := 0
	if cloudevents.IsReplaying(ctx) {
		replay = 1
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+tx.Table("events")+` (event_id, type, replay, item_count) VALUES (?, ?, ?, ?)`,
		e.ID, e.Type, replay, items); err != nil {
		return err
	}
	l.mu.Lock()
	l.applied[tx.Version()]++
	l.mu.Unlock()
	return nil
}

// batchLedger is a ledger that applies a batch of events at once, all rows
// in a few statements (projections.BatchApplier).
type batchLedger struct{ *ledger }

func (l batchLedger) ApplyBatch(ctx context.Context, tx *projections.Tx, evs []projections.Event) error {
	replay := 0
	if cloudevents.IsReplaying(ctx) {
		replay = 1
	}
	args := make([]any, 0, 4*len(evs))
	for _, e := range evs {
		items := 0
		if p, ok := e.Data.(*events.OrderPlacedV2); ok {
			items = p.ItemCount
		}
		args = append(args, e.ID, e.Type, replay, items)
	}
	if _, err := tx.ExecRows(ctx, `INSERT INTO `+tx.Table("events")+` (event_id, type, replay, item_count) VALUES`, 4, "", args); err != nil {
		return err
	}
	l.mu.Lock()
	l.applied[tx.Version()] += len(evs)
	l.mu.Unlock()
	return nil
}

// ledgerRow is one row of a ledger's table.
type ledgerRow struct {
	id, typ   string
	replay    bool
	itemCount int
}

func ledgerRows(t *testing.T, db *sql.DB, name string, version int) []ledgerRow {
	t.Helper()
	rows, err := db.Query(`SELECT event_id, type, replay, item_count FROM ` + projections.Table(name, version, "events") + ` ORDER BY rowid`)
	if err != nil {
		t.Fatalf("read %s v%d: %v", name, version, err)
	}
	defer rows.Close()
	var out []ledgerRow
	for rows.Next() {
		var r ledgerRow
		if err := rows.Scan(&r.id, &r.typ, &r.replay, &r.itemCount); err != nil {
			t.Fatalf("read %s v%d: %v", name, version, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read %s v%d: %v", name, version, err)
	}
	return out
}

// gate is a Source that holds the batches of one version's consumer groups
// once a number of messages went through, until released. It holds them
// before the runner sees them, so no transaction stays open.
type gate struct {
	inner   projections.Source
	stem    string // consumer group stem of the version held
	after   int
	reached chan struct{}
	release chan struct{}

	mu      sync.Mutex
	handled int
	once    sync.Once
	closed  sync.Once
}

// hold returns a Source over inner that holds version of projection name
// before the batch that would take it past `after` messages; reached is
// closed when it holds, release lets it go.
func hold(inner projections.Source, name string, version, after int) (src *gate, reached <-chan struct{}, release func()) {
	g := &gate{inner: inner, stem: projections.GroupStem(name, version) + ".", after: after,
		reached: make(chan struct{}), release: make(chan struct{})}
	return g, g.reached, func() { g.closed.Do(func() { close(g.release) }) }
}

func (g *gate) Consume(ctx context.Context, group, topic string,
	resume func(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error),
	handle func(ctx context.Context, batch []*message.Message) error,
) error {
	if !strings.HasPrefix(group, g.stem) {
		return g.inner.Consume(ctx, group, topic, resume, handle)
	}
	return g.inner.Consume(ctx, group, topic, resume, func(ctx context.Context, batch []*message.Message) error {
		g.mu.Lock()
		full := g.handled+len(batch) > g.after
		g.mu.Unlock()
		if full {
			g.once.Do(func() { close(g.reached) })
			select {
			case <-g.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := handle(ctx, batch); err != nil {
			return err
		}
		g.mu.Lock()
		g.handled += len(batch)
		g.mu.Unlock()
		return nil
	})
}

// batchSource is the Source the tests run managers with.
func batchSource(t *testing.T, b *broker) projections.Source {
	t.Helper()
	src, err := kafka.NewBatchConsumer(b.cfg, kafka.BatchOptions{MaxBatch: 200}, nil)
	if err != nil {
		t.Fatalf("new batch consumer: %v", err)
	}
	return src
}

// newManager builds a Manager on db over the broker, with short intervals.
func newManager(t *testing.T, b *broker, db *sql.DB, ps ...projections.Projection) *projections.Manager {
	t.Helper()
	return newManagerWith(t, b, batchSource(t, b), db, ps...)
}

// newManagerWith builds a Manager on db consuming through src.
func newManagerWith(t *testing.T, b *broker, src projections.Source, db *sql.DB, ps ...projections.Projection) *projections.Manager {
	t.Helper()
	m, err := projections.NewManager(context.Background(), projections.Config{
		DB: db, Projections: ps, Source: src, Offsets: b.admin, Groups: b.admin,
		PollInterval: 50 * time.Millisecond, CatchUpLag: 50, SwapTimeout: 20 * time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	return m
}

// run runs m, returns once it started, and keeps it running until the
// returned stop is called (or the test ends); stop waits for Run to return
// and fails the test on its error.
func run(t *testing.T, m *projections.Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-m.Started():
	case err := <-done:
		done <- err // for stop
		t.Fatalf("manager Run returned before it started: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("manager did not start within 60s")
	}
	return stop
}

// waitFor polls cond every 20 ms until it returns nil, failing the test
// with the last error after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %s: %v", what, d, err)
		}
		<-tick.C
	}
}

// status reads a projection's status, failing the test on error.
func status(t *testing.T, m *projections.Manager, name string) projections.Status {
	t.Helper()
	s, err := m.Status(context.Background(), name)
	if err != nil {
		t.Fatalf("status of %s: %v", name, err)
	}
	return s
}

// caughtUp waits until the active version of name has handled everything.
func caughtUp(t *testing.T, m *projections.Manager, name string, version int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%s v%d caught up", name, version), func() error {
		s, err := m.Status(context.Background(), name)
		if err != nil {
			return err
		}
		if s.Version != version || s.Lag != 0 || s.State != projections.StateLive {
			return fmt.Errorf("version %d, lag %d, state %s, rebuild %+v", s.Version, s.Lag, s.State, s.Rebuild)
		}
		return nil
	})
}

// await waits for ch to close, failing the test after d.
func await(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not after %s", what, d)
	}
}

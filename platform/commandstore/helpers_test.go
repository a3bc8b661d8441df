package commandstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/sqlite"
)

// counter is the aggregate state used by these tests.
type counter struct {
	ID string `json:"id"`
	N  int    `json:"n"`
}

// incremented is the event counters emit.
type incremented struct {
	CounterID string `json:"counter_id"`
	N         int    `json:"n"`
}

func (incremented) Name() string  { return "test.incremented.v1" }
func (e incremented) Key() string { return e.CounterID }

const (
	eventsTopic = "counters.events"
	otherTopic  = "other.events"
)

var testNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newStore(t *testing.T, db *sql.DB) *commandstore.Store {
	t.Helper()
	s, err := commandstore.New(context.Background(), db)
	if err != nil {
		t.Fatalf("create store: %v", err)
	}
	return s
}

func newCounters(t *testing.T, s *commandstore.Store, topic string) *commandstore.Aggregate[counter, incremented] {
	t.Helper()
	a, err := commandstore.NewAggregate[counter, incremented](s, commandstore.AggregateConfig{
		Name:    "counter",
		Handler: "counters",
		Topic:   topic,
		Source:  "/test/counters",
		Now:     func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatalf("create aggregate: %v", err)
	}
	return a
}

// storeAt opens a fresh database file in a temporary directory and returns
// its store and counters.
func storeAt(t *testing.T) (*sql.DB, *commandstore.Store, *commandstore.Aggregate[counter, incremented]) {
	t.Helper()
	db := openDB(t, filepath.Join(t.TempDir(), "commands.db"))
	s := newStore(t, db)
	return db, s, newCounters(t, s, eventsTopic)
}

// incoming returns a context carrying an incoming message, as a cqrs handler's does.
func incoming(id string, metadata map[string]string) context.Context {
	msg := message.NewMessage(id, []byte("{}"))
	for k, v := range metadata {
		msg.Metadata.Set(k, v)
	}
	return cqrs.CtxWithOriginalMessage(context.Background(), msg)
}

// increment adds one to the counter and emits the new value.
func increment(cur *counter) (*counter, []incremented, error) {
	next := counter{ID: "c1"}
	if cur != nil {
		next = *cur
	}
	next.N++
	return &next, []incremented{{CounterID: next.ID, N: next.N}}, nil
}

// applyN applies n increments to counter c1, each as a new message.
func applyN(t *testing.T, a *commandstore.Aggregate[counter, incremented], prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := a.Apply(incoming(prefix+"-"+strconv.Itoa(i), nil), "c1", increment); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
}

func newPubSub(t *testing.T) *gochannel.GoChannel {
	t.Helper()
	ps := gochannel.NewGoChannel(gochannel.Config{
		Persistent: true,
		// Deliver in publish order to subscribers that exist already.
		BlockPublishUntilSubscriberAck: true,
	}, watermill.NopLogger{})
	t.Cleanup(func() { ps.Close() })
	return ps
}

// subscribe collects the messages published to topic, acknowledging each.
func subscribe(t *testing.T, ps *gochannel.GoChannel, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	in, err := ps.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	out := make(chan *message.Message, 10000)
	go func() {
		for msg := range in {
			msg.Ack()
			out <- msg
		}
	}()
	return out
}

// receive waits for n messages, failing the test if they do not arrive
// within a generous deadline.
func receive(t *testing.T, msgs <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var got []*message.Message
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, m)
		case <-deadline:
			t.Fatalf("received %d messages, want %d", len(got), n)
		}
	}
	return got
}

// runRelay runs r until the test ends and checks that Run returned nil.
func runRelay(t *testing.T, r *commandstore.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay Run returned %v after cancel, want nil", err)
		}
	})
}

// waitPending polls until the store has want pending rows.
func waitPending(t *testing.T, s *commandstore.Store, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := s.Pending(context.Background())
		if err != nil {
			t.Fatalf("pending: %v", err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// call is one Publish call seen by recordingPublisher.
type call struct {
	topic string
	ids   []string
}

// recordingPublisher passes messages on to a real publisher, records every
// successful Publish call and fails the first failFirst calls.
type recordingPublisher struct {
	next      message.Publisher
	mu        sync.Mutex
	failFirst int
	attempts  int
	calls     []call
}

var errBrokerDown = errors.New("broker down")

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	p.attempts++
	if p.attempts <= p.failFirst {
		p.mu.Unlock()
		return errBrokerDown
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.UUID
	}
	p.calls = append(p.calls, call{topic: topic, ids: ids})
	p.mu.Unlock()
	return p.next.Publish(topic, msgs...)
}

func (p *recordingPublisher) Close() error { return nil }

func (p *recordingPublisher) recorded() (attempts int, calls []call) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts, append([]call(nil), p.calls...)
}

// outboxRows returns the outbox rows in publishing order, one id each.
func outboxRows(t *testing.T, db *sql.DB) []call {
	t.Helper()
	rows, err := db.Query("SELECT topic, message_id FROM outbox ORDER BY seq")
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var out []call
	for rows.Next() {
		var topic, id string
		if err := rows.Scan(&topic, &id); err != nil {
			t.Fatalf("read outbox: %v", err)
		}
		out = append(out, call{topic: topic, ids: []string{id}})
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return out
}

// outboxIDs returns the message ids in the outbox, in publishing order.
func outboxIDs(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT message_id FROM outbox ORDER BY seq")
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("read outbox: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return ids
}

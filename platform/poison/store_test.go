package poison_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// switchPublisher publishes through a real GoChannel, or fails while
// failing is set: the broker being down, which a GoChannel cannot be made
// to be on demand.
type switchPublisher struct {
	message.Publisher
	failing atomic.Bool
}

func (p *switchPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.failing.Load() {
		return errors.New("broker unreachable")
	}
	return p.Publisher.Publish(topic, msgs...)
}

type fixture struct {
	store *poison.Store
	pub   *switchPublisher
	// out receives what the store publishes, by topic.
	out map[string]<-chan *message.Message
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 100}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	f := &fixture{pub: &switchPublisher{Publisher: pubsub}, out: map[string]<-chan *message.Message{}}
	for _, topic := range []string{router.DefaultPoisonTopic, "orders", "users"} {
		ch, err := pubsub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		f.out[topic] = ch
	}
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "poison.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	f.store, err = poison.New(ctx, db, poison.Config{Publisher: f.pub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.store.Close() })
	return f
}

// next returns the next message published to topic.
func (f *fixture) next(t *testing.T, topic string) *message.Message {
	t.Helper()
	select {
	case m := <-f.out[topic]:
		m.Ack()
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing published to %s", topic)
		return nil
	}
}

// consumed returns a message as the Kafka subscriber delivers it: with its
// position as transport metadata.
func consumed(topic, key, payload string, offset int) *message.Message {
	m := message.NewMessage(uuid.NewString(), []byte(payload))
	m.Metadata.Set(cloudevents.Type, "orders.place-order.v1")
	m.Metadata.Set(cloudevents.Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if key != "" {
		m.Metadata.Set(cloudevents.PartitionKey, key)
	}
	m.Metadata.Set(cloudevents.KafkaTopic, topic)
	m.Metadata.Set(cloudevents.KafkaPartition, "2")
	m.Metadata.Set(cloudevents.KafkaOffset, strconv.Itoa(offset))
	return m
}

func failure(reason string) router.Failure {
	now := time.Now()
	return router.Failure{Cause: router.CausePermanent, Reason: reason, Attempts: 1, FirstError: now, LastError: now}
}

// arrive runs msg through the store as the poison middleware does:
// Admit, then Poison when fail is set, else Handled.
func arrive(t *testing.T, s *poison.Store, handler string, msg *message.Message, fail bool) router.Admission {
	t.Helper()
	ctx := context.Background()
	adm, err := s.Admit(ctx, handler, msg)
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	if adm != router.Handle {
		return adm
	}
	if fail {
		err = s.Poison(ctx, handler, msg, failure("dependency refused "+string(msg.Payload)))
	} else {
		err = s.Handled(ctx, handler, msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return adm
}

func get(t *testing.T, s *poison.Store, id int64) poison.Entry {
	t.Helper()
	e, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPoisonRecordsAndPublishes(t *testing.T) {
	f := newFixture(t)
	m := consumed("orders", "o-1", `{"order_id":"o-1"}`, 41)
	if adm := arrive(t, f.store, "orders", m, true); adm != router.Handle {
		t.Fatalf("first message admitted as %v, want Handle", adm)
	}

	got := f.next(t, router.DefaultPoisonTopic)
	if got.UUID != m.UUID || string(got.Payload) != string(m.Payload) {
		t.Errorf("poison record %s %s, want the message's id and payload", got.UUID, got.Payload)
	}
	for k, want := range map[string]string{
		poison.HeaderHandler: "orders", poison.HeaderTopic: "orders", poison.HeaderPartition: "2",
		poison.HeaderOffset: "41", poison.HeaderKey: "o-1", poison.HeaderCause: "permanent",
		poison.HeaderAttempts: "1", poison.HeaderReason: `dependency refused {"order_id":"o-1"}`,
		cloudevents.Type: "orders.place-order.v1", cloudevents.Traceparent: m.Metadata.Get(cloudevents.Traceparent),
	} {
		if v := got.Metadata.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if got.Metadata.Get(cloudevents.KafkaOffset) != "" {
		t.Error("transport metadata must not be stored or published")
	}
	e := get(t, f.store, 1)
	if !e.Published || e.Status != poison.StatusPoisoned || e.Type != "orders.place-order.v1" || len(e.History) != 1 {
		t.Errorf("entry = %+v, want published, poisoned, typed, with one history event", e)
	}
}

func TestRequeueKeepsIDAndSkipsOtherHandlers(t *testing.T) {
	f := newFixture(t)
	m := consumed("orders", "o-1", `{}`, 1)
	arrive(t, f.store, "orders", m, true)
	f.next(t, router.DefaultPoisonTopic)

	e, err := f.store.Requeue(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != poison.StatusRequeued || e.Requeues != 1 || e.RequeueMode != poison.ModeOne {
		t.Errorf("after requeue: %s, %d requeues, mode %s; want requeued, 1, one", e.Status, e.Requeues, e.RequeueMode)
	}
	rq := f.next(t, "orders")
	if rq.UUID != m.UUID {
		t.Errorf("requeued message id %s, want the original %s", rq.UUID, m.UUID)
	}
	for k, want := range map[string]string{
		poison.HeaderRequeueHandler: "orders", poison.HeaderRequeueEntry: "1", poison.HeaderRequeueGeneration: "1",
		cloudevents.PartitionKey: "o-1", poison.HeaderReason: "",
	} {
		if v := rq.Metadata.Get(k); v != want {
			t.Errorf("requeued header %s = %q, want %q", k, v, want)
		}
	}

	if adm := arrive(t, f.store, "projection.orders", rq, false); adm != router.Skip {
		t.Errorf("another handler admits the requeued copy as %v, want Skip", adm)
	}
	if adm := arrive(t, f.store, "orders", rq, false); adm != router.Handle {
		t.Fatalf("its handler admits it as %v, want Handle", adm)
	}
	if e := get(t, f.store, 1); e.Status != poison.StatusHandled || e.ResolvedAt.IsZero() {
		t.Errorf("entry after handling: %s, resolved %v; want handled", e.Status, e.ResolvedAt)
	}
	if adm := arrive(t, f.store, "orders", rq, false); adm != router.Skip {
		t.Errorf("a second delivery of the requeue is admitted as %v, want Skip", adm)
	}
	// The key flows again.
	if adm := arrive(t, f.store, "orders", consumed("orders", "o-1", `{}`, 9), false); adm != router.Handle {
		t.Errorf("a new message of the key is admitted as %v, want Handle", adm)
	}
}

// TestRequeuedHeadFailingAgain: a requeued head that fails again is
// poisoned again (attempts add up) and stays the head; a sequence-mode
// requeue stops there, and the rest stays parked.
func TestRequeuedHeadFailingAgain(t *testing.T) {
	f := newFixture(t)
	head := consumed("orders", "o-1", `1`, 1)
	arrive(t, f.store, "orders", head, true)
	if adm := arrive(t, f.store, "orders", consumed("orders", "o-1", `2`, 2), false); adm != router.Park {
		t.Fatalf("second message of the key admitted as %v, want Park", adm)
	}
	if _, err := f.store.RequeueSequence(context.Background(), "orders", "o-1"); err != nil {
		t.Fatal(err)
	}
	rq := f.next(t, "orders")
	if adm := arrive(t, f.store, "orders", rq, true); adm != router.Handle {
		t.Fatalf("requeued head admitted as %v", adm)
	}
	e := get(t, f.store, 1)
	if e.Status != poison.StatusPoisoned || e.Attempts != 2 || e.RequeueMode != "" {
		t.Errorf("head = %s after %d attempts, mode %q; want poisoned again after 2, no mode", e.Status, e.Attempts, e.RequeueMode)
	}
	if e := get(t, f.store, 2); e.Status != poison.StatusParked {
		t.Errorf("second entry %s, want still parked", e.Status)
	}
	var events []string
	for _, h := range e.History {
		events = append(events, h.Event)
	}
	if got := strings.Join(events, ","); got != "poisoned,requeued,poisoned again" {
		t.Errorf("history = %s", got)
	}
}

func TestDrop(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	arrive(t, f.store, "orders", consumed("orders", "o-1", `1`, 1), true)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `2`, 2), false)

	if _, err := f.store.Drop(ctx, 1, "  "); !errors.Is(err, poison.ErrInvalid) {
		t.Errorf("drop without reason = %v, want ErrInvalid", err)
	}
	e, err := f.store.Drop(ctx, 1, "order cancelled by phone; nothing to replay")
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != poison.StatusDropped || e.DropReason != "order cancelled by phone; nothing to replay" {
		t.Errorf("dropped entry: %s, reason %q", e.Status, e.DropReason)
	}
	if _, err := f.store.Drop(ctx, 1, "again"); !errors.Is(err, poison.ErrConflict) {
		t.Errorf("second drop = %v, want ErrConflict", err)
	}
	if _, err := f.store.Requeue(ctx, 1); !errors.Is(err, poison.ErrConflict) {
		t.Errorf("requeue of a dropped entry = %v, want ErrConflict", err)
	}
	if _, err := f.store.Drop(ctx, 99, "x"); !errors.Is(err, poison.ErrNotFound) {
		t.Errorf("drop of an unknown entry = %v, want ErrNotFound", err)
	}
	dropped, err := f.store.List(ctx, poison.Filter{Status: poison.StatusDropped})
	if err != nil || len(dropped) != 1 || dropped[0].DropReason == "" {
		t.Errorf("dropped entries = %+v, %v; want the one, listed with its reason", dropped, err)
	}
	// The parked entry is now the head: it alone can be requeued.
	if _, err := f.store.Requeue(ctx, 2); err != nil {
		t.Errorf("requeue of the new head: %v", err)
	}
}

func TestList(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	arrive(t, f.store, "orders", consumed("orders", "o-1", `1`, 1), true)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `2`, 2), false)
	arrive(t, f.store, "orders", consumed("orders", "o-2", `3`, 3), true)
	arrive(t, f.store, "users", consumed("users", "u-1", `4`, 4), true)
	arrive(t, f.store, "users", consumed("users", "", `5`, 5), true)

	cases := []struct {
		name string
		f    poison.Filter
		want []int64
	}{
		{"all", poison.Filter{}, []int64{1, 2, 3, 4, 5}},
		{"by handler", poison.Filter{Handler: "users"}, []int64{4, 5}},
		{"by topic", poison.Filter{Topic: "orders"}, []int64{1, 2, 3}},
		{"by key", poison.Filter{Key: "o-1"}, []int64{1, 2}},
		{"by status", poison.Filter{Status: poison.StatusParked}, []int64{2}},
		{"page", poison.Filter{After: 2, Limit: 2}, []int64{3, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.store.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for _, e := range got {
				ids = append(ids, e.ID)
				if e.Payload != nil || e.Metadata != nil {
					t.Errorf("entry %d listed with payload or metadata; only Get returns them", e.ID)
				}
			}
			if strconvInts(ids) != strconvInts(tc.want) {
				t.Errorf("ids = %v, want %v", ids, tc.want)
			}
		})
	}
	if _, err := f.store.List(ctx, poison.Filter{Status: "lost"}); !errors.Is(err, poison.ErrInvalid) ||
		!strings.Contains(err.Error(), "want one of poisoned, parked, requeued, handled, dropped") {
		t.Errorf("unknown status = %v, want ErrInvalid listing the statuses", err)
	}
}

func TestRequeueAll(t *testing.T) {
	f := newFixture(t)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `1`, 1), true)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `2`, 2), false)
	arrive(t, f.store, "orders", consumed("orders", "o-1", `3`, 3), false)
	arrive(t, f.store, "users", consumed("users", "u-1", `4`, 4), true)
	arrive(t, f.store, "users", consumed("users", "", `5`, 5), true)
	arrive(t, f.store, "users", consumed("users", "", `6`, 6), true)

	res, err := f.store.RequeueAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strconvInts(res.Requeued) != "1,4,5,6" || res.Waiting != 2 {
		t.Errorf("requeue all = %+v, want heads 1 and 4, keyless 5 and 6, 2 waiting", res)
	}
}

// TestPublishFailures: when the broker is down, a poisoning is recorded
// and published when the message comes again; a failed requeue puts the
// entry back as it was.
func TestPublishFailures(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	m := consumed("orders", "o-1", `1`, 1)
	f.pub.failing.Store(true)
	if _, err := f.store.Admit(ctx, "orders", m); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Poison(ctx, "orders", m, failure("x")); err == nil {
		t.Fatal("Poison with the broker down = nil, want an error (the message is nacked)")
	}
	if e := get(t, f.store, 1); e.Published || e.Status != poison.StatusPoisoned {
		t.Fatalf("entry published %v, status %s; want recorded, unpublished", e.Published, e.Status)
	}
	if _, err := f.store.Requeue(ctx, 1); err == nil || !strings.Contains(err.Error(), "broker unreachable") {
		t.Errorf("requeue with the broker down = %v, want the publish error", err)
	}
	e := get(t, f.store, 1)
	if e.Status != poison.StatusPoisoned || e.History[len(e.History)-1].Event != "requeue failed" {
		t.Errorf("after a failed requeue: %s, last event %q; want poisoned, requeue failed", e.Status, e.History[len(e.History)-1].Event)
	}

	f.pub.failing.Store(false)
	if adm, err := f.store.Admit(ctx, "orders", m); err != nil || adm != router.Skip {
		t.Fatalf("redelivery admitted as %v, %v; want Skip", adm, err)
	}
	if got := f.next(t, router.DefaultPoisonTopic); got.UUID != m.UUID {
		t.Errorf("published %s on redelivery, want %s", got.UUID, m.UUID)
	}
	if !get(t, f.store, 1).Published {
		t.Error("entry not marked published")
	}
}

func strconvInts(ids []int64) string {
	var s []string
	for _, id := range ids {
		s = append(s, strconv.FormatInt(id, 10))
	}
	return strings.Join(s, ",")
}

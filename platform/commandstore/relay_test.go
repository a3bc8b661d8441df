package commandstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/commandstore"
)

func TestRelayPublishesInOrderGroupingRunsOfOneTopic(t *testing.T) {
	db, s, counters := storeAt(t)
	others := newCounters(t, s, otherTopic)

	// 450 rows in runs of 7 on two topics, so that batches of 200 split runs
	// and a run can continue across a batch boundary.
	for i := range 450 {
		agg := counters
		if (i/7)%3 == 2 {
			agg = others
		}
		if err := agg.Apply(incoming("m"+strconv.Itoa(i), nil), "c1", increment); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	want := expectedCalls(outboxRows(t, db), commandstore.DefaultBatchSize)

	ps := newPubSub(t)
	events, other := subscribe(t, ps, eventsTopic), subscribe(t, ps, otherTopic)
	pub := &recordingPublisher{next: ps}
	if err := s.NewRelay(pub, nil).Flush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}

	_, calls := pub.recorded()
	if !slices.EqualFunc(calls, want, func(a, b call) bool { return a.topic == b.topic && slices.Equal(a.ids, b.ids) }) {
		t.Fatalf("publish calls differ from the outbox in order or grouping:\n got %d calls %v\nwant %d calls %v",
			len(calls), calls, len(want), want)
	}
	if n := pending(t, s); n != 0 {
		t.Errorf("pending = %d after flush, want 0", n)
	}
	// Each topic's subscriber saw its messages in outbox order.
	for topic, msgs := range map[string]<-chan *message.Message{eventsTopic: events, otherTopic: other} {
		wantIDs := idsOf(want, topic)
		if got := uuids(receive(t, msgs, len(wantIDs))); !slices.Equal(got, wantIDs) {
			t.Errorf("subscriber of %s received messages out of outbox order", topic)
		}
	}
}

// expectedCalls splits outbox rows into batches and each batch into runs
// of one topic: the Publish calls the relay should make.
func expectedCalls(rows []call, batch int) []call {
	var calls []call
	for start := 0; start < len(rows); start += batch {
		first := len(calls) // the first call of this batch
		for _, r := range rows[start:min(start+batch, len(rows))] {
			if n := len(calls); n > first && calls[n-1].topic == r.topic {
				calls[n-1].ids = append(calls[n-1].ids, r.ids...)
				continue
			}
			calls = append(calls, call{topic: r.topic, ids: slices.Clone(r.ids)})
		}
	}
	return calls
}

func TestRelayRetriesFailedPublishWithoutLossOrReorder(t *testing.T) {
	db, s, counters := storeAt(t)
	applyN(t, counters, "m", 30)
	want := outboxIDs(t, db)

	ps := newPubSub(t)
	msgs := subscribe(t, ps, eventsTopic)
	pub := &recordingPublisher{next: ps, failFirst: 3}
	relay := s.NewRelay(pub, nil)
	relay.BatchSize = 10
	relay.MinBackoff, relay.MaxBackoff = time.Millisecond, 4*time.Millisecond
	runRelay(t, relay)

	got := receive(t, msgs, len(want))
	if !slices.Equal(uuids(got), want) {
		t.Errorf("received %v, want %v", uuids(got), want)
	}
	waitPending(t, s, 0)
	attempts, calls := pub.recorded()
	if attempts != 3+3 {
		t.Errorf("%d publish attempts, want 3 failed + 3 batches", attempts)
	}
	if len(calls) != 3 {
		t.Errorf("%d successful publish calls, want 3 batches of 10", len(calls))
	}
}

func TestFlushReturnsPublishErrorAndKeepsRows(t *testing.T) {
	db, s, counters := storeAt(t)
	applyN(t, counters, "m", 5)
	want := outboxIDs(t, db)
	pub := &recordingPublisher{next: newPubSub(t), failFirst: 1}
	relay := s.NewRelay(pub, nil)

	if err := relay.Flush(context.Background()); !errors.Is(err, errBrokerDown) {
		t.Fatalf("flush returned %v, want %v", err, errBrokerDown)
	}
	if got := outboxIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("outbox after failed flush = %v, want %v unchanged", got, want)
	}
	if err := relay.Flush(context.Background()); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	_, calls := pub.recorded()
	if len(calls) != 1 || !slices.Equal(calls[0].ids, want) {
		t.Errorf("publish calls %v, want one with %v", calls, want)
	}
}

func TestOutboxSurvivesReopening(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "commands.db")
	db := openDB(t, path)
	counters := newCounters(t, newStore(t, db), eventsTopic)
	applyN(t, counters, "m", 5)
	want := outboxIDs(t, db)
	// The process dies before the relay ran.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	reopened := openDB(t, path)
	s := newStore(t, reopened)
	if n := pending(t, s); n != 5 {
		t.Fatalf("pending after reopening = %d, want 5", n)
	}
	state, version, err := newCounters(t, s, eventsTopic).Load(ctx, "c1")
	if err != nil || state == nil || state.N != 5 || version != 5 {
		t.Fatalf("state after reopening %+v version %d err %v, want N=5 version 5", state, version, err)
	}
	ps := newPubSub(t)
	msgs := subscribe(t, ps, eventsTopic)
	if err := s.NewRelay(ps, nil).Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got := uuids(receive(t, msgs, 5)); !slices.Equal(got, want) {
		t.Errorf("published %v after reopening, want %v", got, want)
	}
}

func TestRelayWakesOnApplyAndPollsForOtherWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commands.db")
	s := newStore(t, openDB(t, path))
	counters := newCounters(t, s, eventsTopic)

	cases := []struct {
		name string
		// poll is the relay's poll interval.
		poll  time.Duration
		write func(t *testing.T)
	}{
		{
			name:  "Apply through the relay's store wakes it",
			poll:  time.Hour,
			write: func(t *testing.T) { applyN(t, counters, "woken", 1) },
		},
		{
			name: "rows written by another process are found by polling",
			poll: 10 * time.Millisecond,
			write: func(t *testing.T) {
				// A second pool and store on the same file stand for another process.
				other := newCounters(t, newStore(t, openDB(t, path)), eventsTopic)
				applyN(t, other, "polled", 1)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPubSub(t)
			msgs := subscribe(t, ps, eventsTopic)
			relay := s.NewRelay(ps, nil)
			relay.PollInterval = tc.poll
			runRelay(t, relay)
			waitPending(t, s, 0) // the relay has done its first pass and waits
			tc.write(t)
			if got := receive(t, msgs, 1); len(got) != 1 {
				t.Fatalf("received %d messages, want 1", len(got))
			}
		})
	}
}

func TestPublishedMessagesCarryEventMetadata(t *testing.T) {
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cases := []struct {
		name            string
		incoming        map[string]string
		wantCorrelation string
		wantTrace       bool
	}{
		{
			name:            "correlation and trace carried over",
			incoming:        map[string]string{cloudevents.CorrelationID: "req-42", cloudevents.Traceparent: traceparent, cloudevents.Tracestate: "vendor=x"},
			wantCorrelation: "req-42",
			wantTrace:       true,
		},
		{
			name:            "command id starts the correlation",
			incoming:        nil,
			wantCorrelation: "cmd-1",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, s, counters := storeAt(t)
			if err := counters.Apply(incoming("cmd-1", tc.incoming), "c1", increment); err != nil {
				t.Fatalf("apply: %v", err)
			}
			ps := newPubSub(t)
			msgs := subscribe(t, ps, eventsTopic)
			if err := s.NewRelay(ps, nil).Flush(context.Background()); err != nil {
				t.Fatalf("flush: %v", err)
			}
			msg := receive(t, msgs, 1)[0]

			want := map[string]string{
				cloudevents.ID:            "",
				cloudevents.Type:          "test.incremented.v1",
				cloudevents.Source:        "/test/counters",
				cloudevents.SpecVersion:   "1.0",
				cloudevents.Time:          "2026-11-25T10:00:00Z",
				cloudevents.Subject:       "c1",
				cloudevents.PartitionKey:  "c1",
				cloudevents.ContentType:   "application/json",
				cloudevents.CausationID:   "cmd-1",
				cloudevents.CorrelationID: tc.wantCorrelation,
				cloudevents.Traceparent:   "",
				cloudevents.Tracestate:    "",
			}
			if tc.wantTrace {
				want[cloudevents.Traceparent] = traceparent
				want[cloudevents.Tracestate] = "vendor=x"
			}
			for k, v := range want {
				if got := msg.Metadata.Get(k); got != v {
					t.Errorf("metadata %s = %q, want %q", k, got, v)
				}
			}
			if msg.UUID == "" || msg.UUID == "cmd-1" {
				t.Errorf("event UUID = %q, want a new id", msg.UUID)
			}
			if string(msg.Payload) != `{"counter_id":"c1","n":1}` {
				t.Errorf("payload = %s", msg.Payload)
			}
		})
	}
}

func uuids(msgs []*message.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.UUID
	}
	return ids
}

func idsOf(calls []call, topic string) []string {
	var ids []string
	for _, c := range calls {
		if c.topic == topic {
			ids = append(ids, c.ids...)
		}
	}
	return ids
}

func countTopic(calls []call, topic string) int { return len(idsOf(calls, topic)) }

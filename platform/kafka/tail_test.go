package kafka_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

func TestTail(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	_, cfg := startBroker(t)
	const topic = "tailed"
	ensureTopic(t, ctx, cfg, topic, 3)

	pub := newPublisher(t, cfg)
	published := make(map[string]*message.Message)
	for _, key := range []string{"k1", "k2", "k3", "k4"} {
		msg := event(key, fmt.Sprintf(`{"key":%q}`, key))
		published[msg.UUID] = msg
		if err := pub.Publish(topic, msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	t.Run("from the beginning with headers", func(t *testing.T) {
		var got []kafka.Record
		err := kafka.Tail(ctx, cfg, topic, kafka.TailOptions{FromBeginning: true, Limit: len(published)}, func(r kafka.Record) error {
			got = append(got, r)
			return nil
		})
		if err != nil {
			t.Fatalf("Tail: %v", err)
		}
		if len(got) != len(published) {
			t.Fatalf("Tail returned %d records, want %d", len(got), len(published))
		}
		for _, r := range got {
			msg, ok := published[r.Headers[cloudevents.ID]]
			if !ok {
				t.Errorf("record %s/%d@%d has ce_id %q, not one published", r.Topic, r.Partition, r.Offset, r.Headers[cloudevents.ID])
				continue
			}
			if r.Topic != topic || string(r.Value) != string(msg.Payload) || string(r.Key) != msg.Metadata.Get(cloudevents.PartitionKey) {
				t.Errorf("record %+v does not match published message %s", r, msg.UUID)
			}
			for _, k := range []string{cloudevents.Type, cloudevents.Source, cloudevents.SpecVersion, cloudevents.Time, cloudevents.ContentType} {
				if r.Headers[k] != msg.Metadata.Get(k) {
					t.Errorf("record header %s = %q, want %q", k, r.Headers[k], msg.Metadata.Get(k))
				}
			}
			if r.Timestamp.IsZero() {
				t.Errorf("record %d has no timestamp", r.Offset)
			}
		}
	})

	t.Run("newest only by default", func(t *testing.T) {
		tailCtx := testContext(t, 20*time.Second)
		done := make(chan error, 1)
		var got kafka.Record
		go func() {
			done <- kafka.Tail(tailCtx, cfg, topic, kafka.TailOptions{Limit: 1}, func(r kafka.Record) error {
				got = r
				return nil
			})
		}()
		// Tail starts at the end once it has looked the end up: keep
		// publishing until it reports a record.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := pub.Publish(topic, event("later", `{"later":true}`)); err != nil {
				t.Fatalf("publish: %v", err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Tail: %v", err)
				}
				if string(got.Key) != "later" {
					t.Errorf("Tail from the newest returned %q (offset %d), want a record published after it started", got.Key, got.Offset)
				}
				return
			case <-tailCtx.Done():
				t.Fatal("Tail returned no record before the deadline")
			case <-tick.C:
			}
		}
	})

	t.Run("returns the callback error", func(t *testing.T) {
		stop := errors.New("stop here")
		err := kafka.Tail(ctx, cfg, topic, kafka.TailOptions{FromBeginning: true}, func(kafka.Record) error { return stop })
		if !errors.Is(err, stop) {
			t.Fatalf("Tail = %v, want the callback's error", err)
		}
	})

	t.Run("ends without error when the context does", func(t *testing.T) {
		short := testContext(t, 300*time.Millisecond)
		var n int
		err := kafka.Tail(short, cfg, topic, kafka.TailOptions{FromBeginning: true}, func(kafka.Record) error { n++; return nil })
		if err != nil {
			t.Fatalf("Tail = %v, want nil when the context ends", err)
		}
		if n == 0 {
			t.Error("Tail read nothing before the context ended")
		}
	})

	t.Run("missing topic", func(t *testing.T) {
		err := kafka.Tail(ctx, cfg, "no-such-topic", kafka.TailOptions{}, func(kafka.Record) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "no-such-topic") || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("Tail of a missing topic = %v, want an error saying it does not exist", err)
		}
	})
}

func TestRecordFormat(t *testing.T) {
	cases := []struct {
		name  string
		value []byte
		want  string
	}{
		{name: "json indented", value: []byte(`{"a":[1,2]}`), want: "    {\n      \"a\": [\n        1,\n        2\n      ]\n    }\n"},
		{name: "text as is", value: []byte("two\nlines"), want: "    two\n    lines\n"},
		{name: "binary quoted", value: []byte{0xff, 0x00}, want: "    \"\\xff\\x00\"\n"},
		{name: "tombstone", value: nil, want: "    (null)\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			r := kafka.Record{Topic: "t", Value: tc.value, Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			if err := r.Format(&b); err != nil {
				t.Fatalf("Format: %v", err)
			}
			_, data, ok := strings.Cut(b.String(), "  data:\n")
			if !ok {
				t.Fatalf("no data section in\n%s", b.String())
			}
			if data != tc.want+"\n" {
				t.Errorf("data section = %q, want %q", data, tc.want+"\n")
			}
			if !strings.Contains(b.String(), "time:    2026-01-02T03:04:05Z") {
				t.Errorf("without ce_time the record timestamp is not shown:\n%s", b.String())
			}
		})
	}
}

func ExampleRecord_Format() {
	r := kafka.Record{
		Topic:     "orders.events",
		Partition: 2,
		Offset:    17,
		Key:       []byte("order-7"),
		Headers: map[string]string{
			"ce_id":     "0b5c2d9e-8f0a-4a57-9c39-4f4a3c1f8e21",
			"ce_type":   "orders.order-placed.v1",
			"ce_source": "/millrace/orders",
			"ce_time":   "2026-01-02T03:04:05Z",
		},
		Value: []byte(`{"orderId":"order-7","total":4200}`),
	}
	if err := r.Format(os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// orders.events/2@17
	//   type:    orders.order-placed.v1
	//   key:     order-7
	//   id:      0b5c2d9e-8f0a-4a57-9c39-4f4a3c1f8e21
	//   source:  /millrace/orders
	//   time:    2026-01-02T03:04:05Z
	//   data:
	//     {
	//       "orderId": "order-7",
	//       "total": 4200
	//     }
}

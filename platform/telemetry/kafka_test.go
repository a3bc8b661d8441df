package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
	"github.com/millrace/millrace/platform/telemetry"
)

// produce writes n messages to topic (partition 0 when it has one).
func produce(t *testing.T, cfg kafka.Config, topic string, n int) {
	t.Helper()
	pub, err := kafka.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for range n {
		if err := pub.Publish(topic, message.NewMessage(uuid.NewString(), []byte(`{}`))); err != nil {
			t.Fatalf("publish to %s: %v", topic, err)
		}
	}
}

// commit sets group's committed offset on topic's partition 0, as a
// consumer that handled the messages before it would.
func commit(t *testing.T, ctx context.Context, cfg kafka.Config, group, topic string, at int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offsets kadm.Offsets
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1})
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, offsets)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit %s at %d for %s: %v", topic, at, group, err)
	}
}

func lagValue(t *testing.T, reg prometheus.Gatherer, group, topic string) (float64, bool) {
	t.Helper()
	m := series(t, reg, "millrace_kafka_consumer_lag", map[string]string{"group": group, "topic": topic, "partition": "0"})
	if m == nil {
		return 0, false
	}
	return m.GetGauge().GetValue(), true
}

func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mf := gather(t, reg, name)
	if mf == nil || len(mf.GetMetric()) != 1 {
		t.Fatalf("no single %s series", name)
	}
	m := mf.GetMetric()[0]
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestLagCollector(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := startBroker(t)
	if err := kafka.EnsureTopics(ctx, cfg, kafka.Topic{Name: "orders.events", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produce(t, cfg, "orders.events", 5)
	commit(t, ctx, cfg, "projection.orders.v1.orders.events", "orders.events", 2)

	t.Run("reports end minus committed, and reuses an inspection within MaxAge", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		c, err := telemetry.NewLagCollector(telemetry.LagConfig{Kafka: cfg, MaxAge: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(c)
		if lag, ok := lagValue(t, reg, "projection.orders.v1.orders.events", "orders.events"); !ok || lag != 3 {
			t.Fatalf("lag %v (found %v), want 3", lag, ok)
		}
		if gaugeValue(t, reg, "millrace_kafka_inspect_success") != 1 {
			t.Error("millrace_kafka_inspect_success is not 1")
		}
		commit(t, ctx, cfg, "projection.orders.v1.orders.events", "orders.events", 5)
		if lag, _ := lagValue(t, reg, "projection.orders.v1.orders.events", "orders.events"); lag != 3 {
			t.Errorf("lag %v on the second scrape within MaxAge, want the reused 3", lag)
		}
		if n := gaugeValue(t, reg, "millrace_kafka_inspections_total"); n != 1 {
			t.Errorf("%v inspections for two scrapes within MaxAge, want 1", n)
		}
	})

	t.Run("inspects again after MaxAge", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		c, err := telemetry.NewLagCollector(telemetry.LagConfig{Kafka: cfg, MaxAge: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(c)
		commit(t, ctx, cfg, "projection.orders.v1.orders.events", "orders.events", 1)
		if lag, _ := lagValue(t, reg, "projection.orders.v1.orders.events", "orders.events"); lag != 4 {
			t.Fatalf("lag %v, want 4", lag)
		}
		commit(t, ctx, cfg, "projection.orders.v1.orders.events", "orders.events", 5)
		if lag, _ := lagValue(t, reg, "projection.orders.v1.orders.events", "orders.events"); lag != 0 {
			t.Errorf("lag %v after the group caught up, want 0", lag)
		}
		// Every scrape inspects: two above, and this one.
		if n := gaugeValue(t, reg, "millrace_kafka_inspections_total"); n != 3 {
			t.Errorf("%v inspections for three scrapes, want 3", n)
		}
	})
}

func TestLagCollectorBrokerDown(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	reg := prometheus.NewRegistry()
	c, err := telemetry.NewLagCollector(telemetry.LagConfig{
		Kafka:   kafka.Config{Brokers: []string{"127.0.0.1:1"}},
		Timeout: 300 * time.Millisecond,
		MaxAge:  time.Nanosecond,
		Logger:  slog.New(slog.NewTextHandler(&lockedBuffer{mu: &mu, b: &logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(c)
	for range 2 {
		if gaugeValue(t, reg, "millrace_kafka_inspect_success") != 0 {
			t.Error("millrace_kafka_inspect_success is not 0 with the broker down")
		}
	}
	if gather(t, reg, "millrace_kafka_consumer_lag") != nil {
		t.Error("lag reported with the broker down")
	}
	if d := gaugeValue(t, reg, "millrace_kafka_inspect_duration_seconds"); d > 5 {
		t.Errorf("inspection took %vs, want it bounded by the 0.3s timeout", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "inspecting kafka failed"); n != 1 {
		t.Errorf("failure logged %d times over several scrapes, want once:\n%s", n, logs.String())
	}
}

func TestNewLagCollectorNeedsBrokers(t *testing.T) {
	if _, err := telemetry.NewLagCollector(telemetry.LagConfig{}); err == nil {
		t.Fatal("NewLagCollector without brokers succeeded")
	}
}

// TestConsumerOverKafka checks what the Kafka adapter adds: the traceparent
// travels as a record header, and the consumer span names the partition
// and offset the message was read from.
func TestConsumerOverKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := startBroker(t)
	if err := kafka.EnsureTopics(ctx, cfg, kafka.Topic{Name: "orders.commands", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	sr, tp := recorder(t)
	inst, consumer, _ := instruments(t, tp)
	kpub, err := kafka.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kpub.Close() })
	pub := inst.Wrap(kpub)
	sub, err := kafka.NewSubscriber(cfg, "orders", watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}

	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	r.AddMiddleware(consumer.Middleware)
	type seen struct {
		header    string
		partition string
		offset    string
	}
	got := make(chan seen, 1)
	r.AddNoPublisherHandler("orders", "orders.commands", sub, func(msg *message.Message) error {
		got <- seen{
			partition: msg.Metadata.Get(cloudevents.KafkaPartition),
			offset:    msg.Metadata.Get(cloudevents.KafkaOffset),
		}
		return nil
	})
	runRouter(t, r)

	reqCtx, request := tp.Tracer("test").Start(ctx, "POST /v1/orders")
	msg := message.NewMessage(uuid.NewString(), []byte(`{}`))
	msg.Metadata.Set(cloudevents.PartitionKey, "order-7")
	msg.SetContext(reqCtx)
	if err := pub.Publish("orders.commands", msg); err != nil {
		t.Fatal(err)
	}
	request.End()
	var s seen
	select {
	case s = <-got:
	case <-ctx.Done():
		t.Fatal("message not consumed")
	}
	eventually(t, 5*time.Second, "consumer span ended", func() bool { _, ok := byName(sr.Ended())["orders"]; return ok })

	spans := byName(sr.Ended())
	producer, consumed := spans["publish orders.commands"], spans["orders"]
	if consumed.Parent().SpanID() != producer.SpanContext().SpanID() || !consumed.Parent().IsRemote() {
		t.Errorf("consumer span parent %s (remote %v), want the producer span %s read from the record header",
			consumed.Parent().SpanID(), consumed.Parent().IsRemote(), producer.SpanContext().SpanID())
	}
	if consumed.SpanContext().TraceID() != request.SpanContext().TraceID() {
		t.Error("the consumer span is not in the request's trace")
	}
	attrs := attrMap(consumed.Attributes())
	for k, want := range map[string]string{
		"messaging.destination.name":         "orders.commands",
		"messaging.destination.partition.id": s.partition,
		"messaging.kafka.message.key":        "order-7",
	} {
		if attrs[k].AsString() != want {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k].AsString(), want)
		}
	}
	if got := attrs["messaging.kafka.offset"].Emit(); got != s.offset {
		t.Errorf("attribute messaging.kafka.offset = %s, want %s", got, s.offset)
	}
	if consumed.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("kind %v, want consumer", consumed.SpanKind())
	}
}

package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/telemetry"
)

// instruments builds the messaging instrumentation on one registry.
func instruments(t *testing.T, tp trace.TracerProvider) (*telemetry.Publisher, *telemetry.Consumer, *prometheus.Registry) {
	t.Helper()
	reg := registry(t)
	pub, err := telemetry.NewPublisher(telemetry.PublisherConfig{TracerProvider: tp, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return pub, telemetry.NewConsumer(telemetry.ConsumerConfig{TracerProvider: tp}), reg
}

// runRouter runs r until the test ends.
func runRouter(t *testing.T, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-r.Running():
	case err := <-done:
		t.Fatalf("router stopped before running: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("router not running after 10s")
	}
}

// TestTraceAcrossHandlers follows one request through two hops the way
// millrace's messages travel: a "gateway" publishes a command with its
// request span in the message context; the command handler stores an event
// whose traceparent it copies from the command's metadata (as the outbox
// does); a "relay" publishes the event with no span in its context; a
// projection handles it. Every span must share the request's trace id, each
// the child of the one before.
func TestTraceAcrossHandlers(t *testing.T) {
	sr, tp := recorder(t)
	inst, consumer, reg := instruments(t, tp)
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = ps.Close() })
	pub := inst.Wrap(ps)

	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	r.AddMiddleware(consumer.Middleware)

	var (
		inHandler     trace.SpanContext
		metaInHandler string
		applied       = make(chan string, 1)
	)
	r.AddNoPublisherHandler("orders", "orders.commands", ps, func(msg *message.Message) error {
		inHandler = trace.SpanContextFromContext(msg.Context())
		metaInHandler = msg.Metadata.Get(cloudevents.Traceparent)
		event := message.NewMessage(uuid.NewString(), []byte(`{}`))
		for _, k := range []string{cloudevents.Traceparent, cloudevents.Tracestate} {
			if v := msg.Metadata.Get(k); v != "" {
				event.Metadata.Set(k, v)
			}
		}
		return pub.Publish("orders.events", event) // no span in the event's context
	})
	r.AddNoPublisherHandler("projection.orders", "orders.events", ps, func(msg *message.Message) error {
		applied <- msg.UUID
		return nil
	})
	runRouter(t, r)

	ctx, request := tp.Tracer("test").Start(context.Background(), "POST /v1/orders", trace.WithSpanKind(trace.SpanKindServer))
	command := message.NewMessage(uuid.NewString(), []byte(`{}`))
	command.SetContext(ctx)
	if err := pub.Publish("orders.commands", command); err != nil {
		t.Fatalf("publish command: %v", err)
	}
	request.End()
	select {
	case <-applied:
	case <-time.After(10 * time.Second):
		t.Fatal("the event did not reach the projection")
	}
	eventually(t, 5*time.Second, "five spans ended", func() bool { return len(sr.Ended()) >= 5 })

	spans := byName(sr.Ended())
	chain := []struct {
		name string
		kind trace.SpanKind
	}{
		{"POST /v1/orders", trace.SpanKindServer},
		{"publish orders.commands", trace.SpanKindProducer},
		{"orders", trace.SpanKindConsumer},
		{"publish orders.events", trace.SpanKindProducer},
		{"projection.orders", trace.SpanKindConsumer},
	}
	traceID := request.SpanContext().TraceID()
	for i, link := range chain {
		s, ok := spans[link.name]
		if !ok {
			t.Fatalf("no span %q among %v", link.name, names(sr.Ended()))
		}
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q has trace id %s, want %s", link.name, s.SpanContext().TraceID(), traceID)
		}
		if s.SpanKind() != link.kind {
			t.Errorf("span %q kind %v, want %v", link.name, s.SpanKind(), link.kind)
		}
		if i > 0 {
			parent := spans[chain[i-1].name]
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("span %q has parent %s, want %q (%s)", link.name, s.Parent().SpanID(), chain[i-1].name, parent.SpanContext().SpanID())
			}
		}
	}

	consumerSpan := spans["orders"].SpanContext()
	if inHandler.SpanID() != consumerSpan.SpanID() {
		t.Errorf("the handler's context holds span %s, want the consumer span %s", inHandler.SpanID(), consumerSpan.SpanID())
	}
	if want := traceparent(consumerSpan); metaInHandler != want {
		t.Errorf("the handler saw traceparent metadata %q, want the consumer span's %q", metaInHandler, want)
	}
	if want := traceparent(spans["publish orders.commands"].SpanContext()); command.Metadata.Get(cloudevents.Traceparent) != want {
		t.Errorf("the published command carries traceparent %q, want the producer span's %q", command.Metadata.Get(cloudevents.Traceparent), want)
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"millrace_publish_messages_total", map[string]string{"topic": "orders.commands", "outcome": "success"}},
		{"millrace_publish_messages_total", map[string]string{"topic": "orders.events", "outcome": "success"}},
	} {
		if m := series(t, reg, c.name, c.labels); m == nil || m.GetCounter().GetValue() != 1 {
			t.Errorf("%s%s is not 1", c.name, labels(c.labels))
		}
	}
	if m := series(t, reg, "millrace_publish_duration_seconds", map[string]string{"topic": "orders.events"}); m == nil || m.GetHistogram().GetSampleCount() != 1 {
		t.Error("millrace_publish_duration_seconds{topic=orders.events} has not 1 sample")
	}
}

func TestConsumerMiddleware(t *testing.T) {
	const (
		producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		producerSpan  = "00f067aa0ba902b7"
		original      = "00-" + producerTrace + "-" + producerSpan + "-01"
	)
	cases := []struct {
		name      string
		metadata  map[string]string
		err       error
		wantTrace string // "" means a new trace
	}{
		{name: "continues the trace in the metadata", metadata: map[string]string{cloudevents.Traceparent: original, cloudevents.Tracestate: "vendor=1"}, wantTrace: producerTrace},
		{name: "records the handler's error", metadata: map[string]string{cloudevents.Traceparent: original}, err: errors.New("store is down"), wantTrace: producerTrace},
		{name: "starts a trace for a message without one", metadata: map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sr, tp := recorder(t)
			var logs bytes.Buffer
			consumer := telemetry.NewConsumer(telemetry.ConsumerConfig{
				TracerProvider: tp,
				Logger:         slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
			})
			msg := message.NewMessage("11111111-1111-1111-1111-111111111111", nil)
			for k, v := range tc.metadata {
				msg.Metadata.Set(k, v)
			}
			msg.Metadata.Set(cloudevents.Type, "orders.place-order.v1")
			msg.Metadata.Set(cloudevents.PartitionKey, "order-1")
			before := msg.Context()

			var during trace.SpanContext
			var duringMeta string
			_, err := consumer.Middleware(func(m *message.Message) ([]*message.Message, error) {
				during = trace.SpanContextFromContext(m.Context())
				duringMeta = m.Metadata.Get(cloudevents.Traceparent)
				return nil, tc.err
			})(msg)
			if !errors.Is(err, tc.err) {
				t.Fatalf("middleware returned %v, want %v", err, tc.err)
			}

			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			span := spans[0]
			if span.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("kind %v, want consumer", span.SpanKind())
			}
			if during.SpanID() != span.SpanContext().SpanID() {
				t.Errorf("handler context holds span %s, want %s", during.SpanID(), span.SpanContext().SpanID())
			}
			if duringMeta != traceparent(span.SpanContext()) {
				t.Errorf("handler saw traceparent %q, want the consumer span's %q", duringMeta, traceparent(span.SpanContext()))
			}
			if tc.wantTrace != "" {
				if span.SpanContext().TraceID().String() != tc.wantTrace || span.Parent().SpanID().String() != producerSpan {
					t.Errorf("span %s parent %s, want trace %s parent %s", span.SpanContext().TraceID(), span.Parent().SpanID(), tc.wantTrace, producerSpan)
				}
			} else if span.Parent().IsValid() {
				t.Errorf("span has a parent %s, want a new trace", span.Parent().SpanID())
			}
			if gotErr := span.Status().Code == codes.Error; gotErr != (tc.err != nil) {
				t.Errorf("span status %v, want error %v", span.Status(), tc.err != nil)
			}
			if tc.err != nil && len(span.Events()) == 0 {
				t.Error("the error was not recorded as an event")
			}
			attrs := attrMap(span.Attributes())
			for k, want := range map[string]string{
				"messaging.system":            "kafka",
				"messaging.message.id":        msg.UUID,
				"messaging.kafka.message.key": "order-1",
				"cloudevents.event_type":      "orders.place-order.v1",
			} {
				if got := attrs[k].AsString(); got != want {
					t.Errorf("attribute %s = %q, want %q", k, got, want)
				}
			}

			// One debug record, at the edge, with the fixed keys.
			var rec map[string]any
			if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
				t.Fatalf("decode the log record %q: %v", logs.String(), err)
			}
			wantLog := map[string]any{"msg": "message handled", "handler": "handle", "message_id": msg.UUID,
				"type": "orders.place-order.v1", "trace_id": span.SpanContext().TraceID().String(), "span_id": span.SpanContext().SpanID().String()}
			if tc.err != nil {
				wantLog["error"] = tc.err.Error()
			}
			for k, want := range wantLog {
				if rec[k] != want {
					t.Errorf("log %s = %v, want %v", k, rec[k], want)
				}
			}

			// The message is left as it was found.
			for _, k := range []string{cloudevents.Traceparent, cloudevents.Tracestate} {
				got, ok := msg.Metadata[k]
				want, wantOK := tc.metadata[k]
				if got != want || ok != wantOK {
					t.Errorf("after the handler, metadata %s = %q (present %v), want %q (present %v)", k, got, ok, want, wantOK)
				}
			}
			if msg.Context() != before {
				t.Error("the message context was not restored")
			}
		})
	}
}

func TestPublisherRecordsError(t *testing.T) {
	sr, tp := recorder(t)
	inst, _, reg := instruments(t, tp)
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	pub := inst.Wrap(ps)
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	err := pub.Publish("orders.commands", message.NewMessage(uuid.NewString(), nil), message.NewMessage(uuid.NewString(), nil))
	if err == nil {
		t.Fatal("publishing on a closed publisher succeeded")
	}
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want one per message", len(spans))
	}
	for _, s := range spans {
		if s.Status().Code != codes.Error || s.SpanKind() != trace.SpanKindProducer {
			t.Errorf("span %q: status %v kind %v, want an error producer span", s.Name(), s.Status(), s.SpanKind())
		}
	}
	want := map[string]string{"topic": "orders.commands", "outcome": "error"}
	if m := series(t, reg, "millrace_publish_messages_total", want); m == nil || m.GetCounter().GetValue() != 2 {
		t.Errorf("millrace_publish_messages_total%s is not 2", labels(want))
	}
}

func byName(spans []sdktrace.ReadOnlySpan) map[string]sdktrace.ReadOnlySpan {
	m := make(map[string]sdktrace.ReadOnlySpan, len(spans))
	for _, s := range spans {
		m[s.Name()] = s
	}
	return m
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}

// traceparent formats sc as a W3C traceparent header.
func traceparent(sc trace.SpanContext) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
	return carrier.Get("traceparent")
}

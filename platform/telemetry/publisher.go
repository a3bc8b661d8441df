package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/millrace/millrace/platform/cloudevents"
)

// PublisherConfig configures NewPublisher.
type PublisherConfig struct {
	// TracerProvider creates the producer spans. Default: no spans.
	TracerProvider trace.TracerProvider
	// Registerer receives the publish metrics. Required.
	Registerer prometheus.Registerer
	// Propagator writes the trace context into message metadata. Default
	// [Propagator].
	Propagator propagation.TextMapPropagator
}

// Publisher instruments Watermill publishers: a producer span per message
// and publish metrics per topic.
//
// Metrics:
//
//	millrace_publish_messages_total{topic,outcome}  counter (outcome: success, error)
//	millrace_publish_duration_seconds{topic}        histogram, per Publish call
//
// It is safe for concurrent use.
type Publisher struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	messages   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewPublisher registers the publish metrics with cfg.Registerer.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Registerer == nil {
		return nil, errors.New("create publisher instrumentation: no prometheus registerer given")
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = Propagator()
	}
	p := &Publisher{
		tracer:     cfg.TracerProvider.Tracer(instrumentation),
		propagator: cfg.Propagator,
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_publish_messages_total",
			Help: "Messages handed to the broker, by topic and outcome (success or error).",
		}, []string{"topic", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millrace_publish_duration_seconds",
			Help:    "Time one Publish call took until the broker acknowledged its messages, by topic.",
			Buckets: prometheus.DefBuckets,
		}, []string{"topic"}),
	}
	if err := register(cfg.Registerer, p.messages, p.duration); err != nil {
		return nil, fmt.Errorf("create publisher instrumentation: %w", err)
	}
	return p, nil
}

// Wrap returns pub instrumented. Closing the result closes pub.
func (p *Publisher) Wrap(pub message.Publisher) message.Publisher {
	return &tracedPublisher{next: pub, p: p}
}

type tracedPublisher struct {
	next message.Publisher
	p    *Publisher
}

// Publish starts a producer span "publish <topic>" per message and writes
// its context as the message's traceparent (and tracestate), so that the
// consumer continues the trace from it. The span's parent is the span in
// msg.Context() (a gateway request, a handler) or, when there is none, the
// trace context already in the metadata (an outbox row, a requeued message).
// The spans end when the wrapped publisher returned; its error is recorded on
// each of them.
func (t *tracedPublisher) Publish(topic string, msgs ...*message.Message) error {
	spans := make([]trace.Span, 0, len(msgs))
	for _, msg := range msgs {
		parent := msg.Context()
		if !trace.SpanContextFromContext(parent).IsValid() {
			parent = t.p.propagator.Extract(parent, propagation.MapCarrier(msg.Metadata))
		}
		ctx, span := t.p.tracer.Start(parent, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer))
		if span.IsRecording() {
			span.SetAttributes(producerAttributes(topic, msg)...)
		}
		setTraceMetadata(t.p.propagator, ctx, msg.Metadata)
		spans = append(spans, span)
	}

	start := time.Now()
	err := t.next.Publish(topic, msgs...)
	t.p.duration.WithLabelValues(topic).Observe(time.Since(start).Seconds())

	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	t.p.messages.WithLabelValues(topic, outcome).Add(float64(len(msgs)))
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return err
}

// Close closes the wrapped publisher.
func (t *tracedPublisher) Close() error { return t.next.Close() }

func producerAttributes(topic string, msg *message.Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingMessageID(msg.UUID),
	}
	if key := msg.Metadata.Get(cloudevents.PartitionKey); key != "" {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(key))
	}
	return append(attrs, eventAttributes(msg)...)
}

// setTraceMetadata writes the trace context of ctx into md as traceparent
// and tracestate, replacing what was there, and returns a function that puts
// the previous values back.
func setTraceMetadata(propagator propagation.TextMapPropagator, ctx context.Context, md message.Metadata) (restore func()) {
	type prev struct {
		value string
		ok    bool
	}
	keys := []string{cloudevents.Traceparent, cloudevents.Tracestate}
	saved := make([]prev, len(keys))
	for i, k := range keys {
		v, ok := md[k]
		saved[i] = prev{v, ok}
		delete(md, k)
	}
	propagator.Inject(ctx, propagation.MapCarrier(md))
	return func() {
		for i, k := range keys {
			if saved[i].ok {
				md[k] = saved[i].value
			} else {
				delete(md, k)
			}
		}
	}
}

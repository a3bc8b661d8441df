package telemetry

import (
	"context"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/kafka"
)

// CloudEvents span attributes (semantic conventions, cloudevents.*).
const (
	attrEventID      = attribute.Key("cloudevents.event_id")
	attrEventType    = attribute.Key("cloudevents.event_type")
	attrEventSource  = attribute.Key("cloudevents.event_source")
	attrEventSubject = attribute.Key("cloudevents.event_subject")
)

// ConsumerConfig configures NewConsumer. The zero value is usable.
type ConsumerConfig struct {
	// TracerProvider creates the consumer spans. Default: no spans.
	TracerProvider trace.TracerProvider
	// Propagator reads and writes trace context in message metadata.
	// Default [Propagator].
	Propagator propagation.TextMapPropagator
	// Logger receives one debug record per handled message, with the
	// handler, topic, partition, offset, message id, type, duration and
	// error (and, through [LogHandler], the trace and span ids). Default:
	// discard.
	Logger *slog.Logger
}

// Consumer is a Watermill router middleware that traces every handled
// message. It is safe for concurrent use.
type Consumer struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	logger     *slog.Logger
}

// NewConsumer returns the consumer tracing middleware.
func NewConsumer(cfg ConsumerConfig) *Consumer {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = Propagator()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Consumer{tracer: cfg.TracerProvider.Tracer(instrumentation), propagator: cfg.Propagator, logger: cfg.Logger}
}

// Middleware starts a consumer span per message, named after the router
// handler (message.HandlerNameFromCtx), as the child of the trace context in
// the message's traceparent and tracestate metadata. It carries the topic,
// partition and offset the message was read from, its id and its CloudEvents
// attributes; a handler error is recorded on it.
//
// While the handler runs:
//   - msg.Context() holds the span, so that handlers, projections and the
//     publishers they call continue the trace, and middleware further in can
//     add events to it (trace.SpanFromContext(msg.Context()));
//   - the message's traceparent and tracestate metadata name the span, so
//     that what copies trace context from the incoming message's metadata
//     (the command store's outbox) makes the span the parent of what follows.
//
// The metadata is restored when the handler returns. Add the middleware
// first (outermost), so that one span covers every retry of a message and
// the events that retrying and poisoning add to it.
func (c *Consumer) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		in := msg.Context()
		handler := message.HandlerNameFromCtx(in)
		if handler == "" {
			handler = "handle"
		}
		parent := c.propagator.Extract(in, propagation.MapCarrier(msg.Metadata))
		start := time.Now()
		ctx, span := c.tracer.Start(parent, handler, trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		if span.IsRecording() {
			span.SetAttributes(consumerAttributes(msg)...)
		}

		restore := setTraceMetadata(c.propagator, ctx, msg.Metadata)
		msg.SetContext(ctx)
		defer func() {
			restore()
			msg.SetContext(in)
		}()

		out, err := h(msg)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		c.log(ctx, handler, msg, time.Since(start), err)
		return out, err
	}
}

// log writes the debug record of one handled message.
func (c *Consumer) log(ctx context.Context, handler string, msg *message.Message, took time.Duration, err error) {
	if !c.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{slog.String("handler", handler)}
	if topic, partition, offset, ok := kafka.Position(msg); ok {
		attrs = append(attrs, slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Int64("offset", offset))
	}
	attrs = append(attrs,
		slog.String("message_id", msg.UUID),
		slog.String("type", msg.Metadata.Get(cloudevents.Type)),
		slog.Duration("duration", took))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	c.logger.LogAttrs(ctx, slog.LevelDebug, "message handled", attrs...)
}

// consumerAttributes describes a consumed message.
func consumerAttributes(msg *message.Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingMessageID(msg.UUID),
	}
	if topic, partition, offset, ok := kafka.Position(msg); ok {
		attrs = append(attrs,
			semconv.MessagingDestinationName(topic),
			semconv.MessagingDestinationPartitionID(itoa(int64(partition))),
			semconv.MessagingKafkaOffset(int(offset)),
		)
	} else if topic := message.SubscribeTopicFromCtx(msg.Context()); topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
	}
	if key := msg.Metadata.Get(cloudevents.PartitionKey); key != "" {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(key))
	}
	return append(attrs, eventAttributes(msg)...)
}

// eventAttributes are the CloudEvents attributes of msg that it has.
func eventAttributes(msg *message.Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attrEventID.String(msg.UUID)}
	for _, a := range []struct {
		key  attribute.Key
		meta string
	}{
		{attrEventType, cloudevents.Type},
		{attrEventSource, cloudevents.Source},
		{attrEventSubject, cloudevents.Subject},
	} {
		if v := msg.Metadata.Get(a.meta); v != "" {
			attrs = append(attrs, a.key.String(v))
		}
	}
	return attrs
}
